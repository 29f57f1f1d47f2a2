// SPDX-License-Identifier: Apache-2.0
// The quic carrier over real loopback sockets (port 0, 127.0.0.1 only), datagram mode and
// in-place rebinds: 200 000 x 1 KiB packets over one DATAGRAM path (the exact set arrives), a
// stream flow over a DATAGRAM path, the frame-size refusal when a DATAGRAM path joins a flow
// with larger frames, and 10 rebinds of one path under a packet flow and under a stream flow
// (no engine migration, nothing missing or repeated).
#include <rendr/engine/conn.hpp>
#include <rendr/engine/dialer.hpp>
#include <rendr/engine/errors.hpp>
#include <rendr/engine/listener.hpp>
#include <rendr/engine/stats_json.hpp>

#include "support/pattern.hpp"
#include "support/require_result.hpp"
#include "api_helpers.hpp"
#include "quic_certs.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cstring>
#include <thread>

using namespace rendr;
using namespace std::chrono_literals;
using namespace rendr::test::api;
using rendr::test::QuicCerts;

namespace {

QuicTls server_tls(const QuicCerts& k) {
  QuicTls t;
  t.initial_rtt = std::chrono::milliseconds(5);  // after each rebind (see quic_path)
  t.ca = k.ca();
  t.cert = k.cert("server");
  t.key = k.key("server");
  return t;
}

PathSpec quic_path(const QuicCerts& k, const std::string& address, const std::string& mode) {
  PathSpec p;
  p.transport = "quic";
  p.address = address;
  p.opts = {{"ca", k.ca()},
            {"cert", k.cert("client")},
            {"key", k.key("client")},
            {"server_name", "server"},
            {"mode", mode},
            // QUIC's RTT after each rebind: ngtcp2 resets it to 333 ms, and a packet lost then
            // waits a 1 s PTO - past these tests' 200 ms freshness window.
            {"initial_rtt_ms", "5"}};
  return p;
}

}  // namespace

TEST_CASE("engine quic datagram: 200 000 x 1 KiB packets over one DATAGRAM path, exact set",
          "[engine][quic][datagram][net]") {
  QuicCerts k;
  auto l = listen_quic("127.0.0.1:0", server_tls(k), listen_opts());
  REQUIRE_OK(l);
  auto o = dial_opts({quic_path(k, (*l)->local_address(), "datagram")});
  o.ledger_max_bytes = 4U << 20;
  auto [d, c, s] = dial_pair<PacketConnPtr>(**l, o);
  const auto st = (*c)->stats();
  REQUIRE(st.paths.size() == 1);
  CHECK(st.paths[0].transport == "quic");
  CHECK((*c)->max_packet() == kQuicMaxDatagramFrame - engine::kHeaderSize);
  CHECK((*s)->max_packet() == kQuicMaxDatagramFrame - engine::kHeaderSize);
  std::vector<std::byte> big((*c)->max_packet() + 1);
  REQUIRE_ERROR((*c)->write(big), engine::errc::packet_too_large, "");
  constexpr int kCount = 200'000;
  PacketRun run(**c, kCount, 1024);
  run.read_all(**s, 1024);
  run.t.join();
  CHECK(run.error.empty());
  CHECK(run.missing() == 0);
  CHECK(run.dups() == 0);
  // The server's direction over the same path.
  const std::byte pong[] = {std::byte{7}, std::byte{8}};
  REQUIRE_OK((*s)->write(pong));
  std::vector<std::byte> in;
  auto r = (*c)->read(in, deadline_in(5s));
  REQUIRE_OK(r);
  CHECK(in.size() == 2);
  const auto cs = (*c)->stats();
  INFO(engine::flow_stats_json(cs));
  CHECK(cs.migration_count == 0);
  CHECK(cs.paths_lost == 0);
  REQUIRE_OK((*c)->close());
  r = (*s)->read(in, deadline_in(5s));
  REQUIRE_OK(r);
  CHECK_FALSE(*r);  // EOF after everything
}

TEST_CASE("engine quic datagram: a stream flow over a DATAGRAM path is byte-exact",
          "[engine][quic][datagram][net]") {
  QuicCerts k;
  auto l = listen_quic("127.0.0.1:0", server_tls(k), listen_opts());
  REQUIRE_OK(l);
  auto [d, c, s] = dial_pair(**l, dial_opts({quic_path(k, (*l)->local_address(), "datagram")}));
  constexpr std::uint64_t kTotal = 8U << 20;
  Writer up(**c, kTotal, 21);
  Writer down(**s, kTotal, 22);
  read_verify(**s, kTotal, 21);
  read_verify(**c, kTotal, 22);
  up.t.join();
  down.t.join();
  CHECK(up.error.empty());
  CHECK(down.error.empty());
}

TEST_CASE("engine quic datagram: a DATAGRAM path joining a flow of larger frames is refused",
          "[engine][quic][datagram][net]") {
  QuicCerts k;
  auto l = listen_quic("127.0.0.1:0", server_tls(k), listen_opts());
  REQUIRE_OK(l);
  auto [d, c, s] = dial_pair(**l, dial_opts({quic_path(k, (*l)->local_address(), "stream")}));
  auto p = (*c)->add_path(quic_path(k, (*l)->local_address(), "datagram"), deadline_in(10s));
  REQUIRE_ERROR(p, engine::errc::invalid_config, "max_frame 1150");
  // An unknown mode is refused before anything is sent.
  auto bad = (*c)->add_path(quic_path(k, (*l)->local_address(), "dgram"), deadline_in(10s));
  REQUIRE_ERROR(bad, std::errc::invalid_argument, "stream or datagram");
}

TEST_CASE("engine quic rebind: 10 rebinds of one DATAGRAM path under a packet flow",
          "[engine][quic][rebind][net]") {
  QuicCerts k;
  auto l = listen_quic("127.0.0.1:0", server_tls(k), listen_opts());
  REQUIRE_OK(l);
  auto [d, c, s] = dial_pair<PacketConnPtr>(
      **l, dial_opts({quic_path(k, (*l)->local_address(), "datagram")}));
  const PathId path = (*c)->active_path();
  // Not a quic path / not the dialing side / no such path: refused, named.
  REQUIRE_ERROR((*s)->rebind_path((*s)->active_path(), "127.0.0.1:0"), std::errc::invalid_argument,
                "dialing side");
  REQUIRE_ERROR((*c)->rebind_path(path + 100, "127.0.0.1:0"), engine::errc::unknown_path, "");
  constexpr int kCount = 50'000;
  PacketRun run(**c, kCount, 1000);
  std::vector<std::string> locals{(*c)->stats().paths[0].local};
  int rebinds = 0;
  run.read_all(**s, 1000, [&](int n) {
    if (rebinds < 10 && n >= (rebinds + 1) * (kCount / 12)) {
      Status st = (*c)->rebind_path(path, "127.0.0.1:0");
      for (int i = 0; i < 200 && !st &&
                      st.error().code ==
                          std::make_error_code(std::errc::resource_unavailable_try_again);
           ++i) {
        std::this_thread::sleep_for(1ms);  // the peer's next connection id is a round trip away
        st = (*c)->rebind_path(path, "127.0.0.1:0");
      }
      REQUIRE_OK(st);
      ++rebinds;
      locals.push_back((*c)->stats().paths[0].local);
    }
  });
  run.t.join();
  CHECK(rebinds == 10);
  CHECK(run.error.empty());
  CHECK(run.missing() == 0);
  CHECK(run.dups() == 0);
  const auto cs = (*c)->stats();
  INFO(engine::flow_stats_json(cs));
  CHECK(cs.migration_count == 0);
  CHECK(cs.paths_lost == 0);
  CHECK(cs.replayed_frames == 0);
  REQUIRE(cs.paths.size() == 1);
  CHECK(cs.paths[0].id == path);
  // The accepting side names the client's current address (it followed the last rebind).
  const auto ss = (*s)->stats();
  REQUIRE(ss.paths.size() == 1);
  CHECK(ss.paths[0].remote == cs.paths[0].local);
  CHECK(ss.paths[0].remote == locals.back());
  // Every rebind moved to a new local port.
  std::sort(locals.begin(), locals.end());
  CHECK(std::unique(locals.begin(), locals.end()) == locals.end());
}

TEST_CASE("engine quic rebind: 10 rebinds of one stream path under a stream flow, byte-exact",
          "[engine][quic][rebind][net]") {
  QuicCerts k;
  auto l = listen_quic("127.0.0.1:0", server_tls(k), listen_opts());
  REQUIRE_OK(l);
  auto [d, c, s] = dial_pair(**l, dial_opts({quic_path(k, (*l)->local_address(), "stream")}));
  const PathId path = (*c)->active_path();
  constexpr std::uint64_t kTotal = 16U << 20;
  Writer up(**c, kTotal, 31);
  int rebinds = 0;
  read_verify(**s, kTotal, 31, [&](std::uint64_t off) {
    if (rebinds < 10 && off >= (rebinds + 1) * (kTotal / 12)) {
      Status st = (*c)->rebind_path(path, "127.0.0.1:0");
      for (int i = 0; i < 200 && !st &&
                      st.error().code ==
                          std::make_error_code(std::errc::resource_unavailable_try_again);
           ++i) {
        std::this_thread::sleep_for(1ms);
        st = (*c)->rebind_path(path, "127.0.0.1:0");
      }
      REQUIRE_OK(st);
      ++rebinds;
    }
  });
  up.t.join();
  CHECK(up.error.empty());
  CHECK(rebinds == 10);
  const auto cs = (*c)->stats();
  INFO(engine::flow_stats_json(cs));
  CHECK(cs.migration_count == 0);
  CHECK(cs.paths_lost == 0);
  CHECK(cs.replayed_frames == 0);
}
