// SPDX-License-Identifier: Apache-2.0
// The quic carrier over real loopback sockets (port 0, 127.0.0.1 only), stream mode: a 64 MiB
// flow over two quic paths migrated mid-transfer, a mixed tcp + quic flow, refusals at dial
// (wrong CA, client certificate from another CA) within the handshake timeout, either side's
// close and the listener's idle timeout failing the path at once (named), and junk datagrams
// at the listener dropped and counted.
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

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

using namespace rendr;
using namespace std::chrono_literals;
using namespace rendr::test::api;
using rendr::test::Pattern;
using rendr::test::QuicCerts;

namespace {

QuicTls server_tls(const QuicCerts& k) {
  QuicTls t;
  t.ca = k.ca();
  t.cert = k.cert("server");
  t.key = k.key("server");
  return t;
}

PathSpec quic_path(const QuicCerts& k, const std::string& address, std::string name = {},
                   const std::string& ca = "a", const std::string& cert_ca = "a") {
  PathSpec p;
  p.transport = "quic";
  p.address = address;
  p.name = std::move(name);
  p.opts = {{"ca", k.ca(ca)},
            {"cert", k.cert("client", cert_ca)},
            {"key", k.key("client", cert_ca)},
            {"server_name", "server"}};
  return p;
}

// read_all reads |total| bytes into one buffer, calling |at| with the offset after each read.
std::vector<std::byte> read_all(Conn& c, std::uint64_t total,
                                const std::function<void(std::uint64_t)>& at = {}) {
  std::vector<std::byte> out(total);
  std::uint64_t off = 0;
  while (off < total) {
    auto r = c.read_some(std::span<std::byte>(out.data() + off, total - off), deadline_in(30s));
    if (!r) {
      INFO("reader at " << off << ": " << engine::flow_stats_json(c.stats()));
      REQUIRE_OK(r);
    }
    REQUIRE(*r > 0);
    off += *r;
    if (at) {
      at(off);
    }
  }
  return out;
}

}  // namespace

TEST_CASE("engine quic: 64 MiB over two quic paths, migrated mid-transfer, SHA-equal",
          "[engine][quic][net]") {
  QuicCerts k;
  ListenOptions lo = listen_opts();
  lo.flow.probe_interval = 100ms;
  lo.flow.fresh_min = 1s;
  auto l = listen_quic("127.0.0.1:0", server_tls(k), lo);
  REQUIRE_OK(l);
  auto o = dial_opts({quic_path(k, (*l)->local_address(), "q1"),
                      quic_path(k, (*l)->local_address(), "q2")});
  o.ledger_max_bytes = 8U << 20;
  // The migration is explicit: no need for a freshness window a loaded 2-core machine misses.
  o.probe_interval = 100ms;
  o.fresh_min = 1s;
  auto [d, c, s] = dial_pair(**l, o);
  auto st = (*c)->stats();
  REQUIRE(st.paths.size() == 2);
  CHECK(st.paths[0].transport == "quic");
  CHECK(st.paths[1].state == engine::PathState::ready);
  const PathId first = (*c)->active_path();
  const PathId other = st.paths[0].id == first ? st.paths[1].id : st.paths[0].id;

  constexpr std::uint64_t kTotal = 64ULL << 20;
  Writer up(**c, kTotal, 7);
  bool migrated = false;
  const auto t0 = std::chrono::steady_clock::now();
  const auto got = read_all(**s, kTotal, [&](std::uint64_t off) {
    if (!migrated && off >= kTotal / 2) {
      migrated = true;
      REQUIRE_OK((*c)->migrate(other));
    }
  });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  up.t.join();
  CHECK(up.error.empty());
  WARN("64 MiB over quic in " << secs << " s (" << (64.0 / secs) << " MiB/s)");
  CHECK(rendr::test::sha256_hex(got) == Pattern(7).sha256_hex(kTotal));
  CHECK((*c)->active_path() == other);
  CHECK((*c)->migration_count() == 1);
  REQUIRE_OK((*c)->close());
  std::byte b[16];
  auto r = (*s)->read_some(b, deadline_in(5s));
  REQUIRE_OK(r);
  CHECK(*r == 0);  // a clean close over quic is EOF, nothing lost
}

TEST_CASE("engine quic: one flow with a tcp and a quic path migrates both ways, nothing lost",
          "[engine][quic][net]") {
  QuicCerts k;
  // Explicit migrations: a freshness window a loaded 2-core machine does not miss (200 ms did,
  // once in a dozen runs, for the idle path).
  ListenOptions lo = listen_opts();
  lo.flow.probe_interval = 100ms;
  lo.flow.fresh_min = 1s;
  auto l = listen_tcp("127.0.0.1:0", lo);
  REQUIRE_OK(l);
  auto qaddr = (*l)->add_quic("127.0.0.1:0", server_tls(k));
  REQUIRE_OK(qaddr);
  REQUIRE_ERROR((*l)->add_quic("127.0.0.1:0", server_tls(k)), std::errc::invalid_argument,
                "one already");
  auto o = dial_opts({tcp_path(**l, "t"), quic_path(k, *qaddr, "q")});
  o.probe_interval = 100ms;
  o.fresh_min = 1s;
  auto [d, c, s] = dial_pair(**l, o);
  auto st = (*c)->stats();
  REQUIRE(st.paths.size() == 2);
  PathId tcp_id = 0;
  PathId quic_id = 0;
  for (const auto& p : st.paths) {
    CHECK(p.state == engine::PathState::ready);
    (p.transport == "quic" ? quic_id : tcp_id) = p.id;
  }
  REQUIRE(quic_id != 0);
  REQUIRE(tcp_id != 0);
  constexpr std::uint64_t kTotal = 16ULL << 20;
  Writer up(**c, kTotal, 11);
  Writer down(**s, kTotal, 12);
  int step = 0;
  read_verify(**s, kTotal, 11, [&](std::uint64_t off) {
    INFO("client: " << engine::flow_stats_json((*c)->stats()));
    INFO("server: " << engine::flow_stats_json((*s)->stats()));
    if (step == 0 && off >= kTotal / 3) {
      step = 1;
      REQUIRE_OK((*c)->migrate((*c)->active_path() == quic_id ? tcp_id : quic_id));
    } else if (step == 1 && off >= 2 * kTotal / 3) {
      step = 2;
      REQUIRE_OK((*c)->migrate((*c)->active_path() == quic_id ? tcp_id : quic_id));
    }
  });
  read_verify(**c, kTotal, 12);
  up.t.join();
  down.t.join();
  CHECK(up.error.empty());
  CHECK(down.error.empty());
  CHECK((*c)->migration_count() == 2);
}

TEST_CASE("engine quic: wrong CA and a client certificate from another CA refused at dial",
          "[engine][quic][net]") {
  QuicCerts k;
  QuicTls tls = server_tls(k);
  tls.handshake_timeout = 3s;
  auto l = listen_quic("127.0.0.1:0", tls, listen_opts());
  REQUIRE_OK(l);
  const auto addr = (*l)->local_address();
  SECTION("the client does not trust the server's CA") {
    auto d = Dialer::create(dial_opts({quic_path(k, addr, "", "b", "a")}));
    REQUIRE_OK(d);
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE_ERROR((*d)->dial(deadline_in(10s)), std::errc::permission_denied,
                  "certificate failed verification");
    CHECK(std::chrono::steady_clock::now() - t0 < 3s);
  }
  SECTION("the server does not trust the client's certificate") {
    auto d = Dialer::create(dial_opts({quic_path(k, addr, "", "a", "b")}));
    REQUIRE_OK(d);
    const auto t0 = std::chrono::steady_clock::now();
    REQUIRE_ERROR((*d)->dial(deadline_in(10s)), std::errc::permission_denied,
                  "refused the TLS handshake");
    CHECK(std::chrono::steady_clock::now() - t0 < 3s);
    for (int i = 0; i < 100 && (*l)->listener_stats().quic_handshake_failures == 0; ++i) {
      std::this_thread::sleep_for(10ms);  // the listener forgets it on its io thread
    }
    CHECK((*l)->listener_stats().quic_handshake_failures == 1);
  }
  SECTION("no common ALPN") {
    auto p = quic_path(k, addr);
    p.opts["alpn"] = "h3";
    auto d = Dialer::create(dial_opts({p}));
    REQUIRE_OK(d);
    REQUIRE_ERROR((*d)->dial(deadline_in(10s)), std::errc::permission_denied, "ALPN");
  }
  SECTION("unreadable PEM files are named") {
    auto p = quic_path(k, addr);
    p.opts["ca"] = k.root + "/missing.pem";
    auto d = Dialer::create(dial_opts({p}));
    REQUIRE_OK(d);
    REQUIRE_ERROR((*d)->dial(deadline_in(10s)), std::errc::invalid_argument, "missing.pem");
  }
  // Nothing was accepted.
  CHECK_FALSE((*l)->accept(deadline_in(10ms)).ok());
}

TEST_CASE("engine quic: the peer closing a quic path fails it at once on the other side",
          "[engine][quic][net]") {
  QuicCerts k;
  // Slow probing and a long freshness window: only the carrier can report the death quickly.
  ListenOptions lo = listen_opts();
  lo.flow.probe_interval = 1s;
  lo.flow.fresh_min = 10s;
  auto l = listen_quic("127.0.0.1:0", server_tls(k), lo);
  REQUIRE_OK(l);
  auto o = dial_opts({quic_path(k, (*l)->local_address(), "q1"),
                      quic_path(k, (*l)->local_address(), "q2")});
  o.probe_interval = 1s;
  o.fresh_min = 10s;
  auto [d, c, s] = dial_pair(**l, o);
  REQUIRE((*s)->stats().paths.size() == 2);
  const auto t0 = std::chrono::steady_clock::now();
  (*c)->kill_path_for_test((*c)->active_path());
  while ((*s)->stats().paths.size() == 2 && std::chrono::steady_clock::now() - t0 < 5s) {
    std::this_thread::sleep_for(5ms);
  }
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK((*s)->stats().paths.size() == 1);
  CHECK(took < 500ms);
  // The reason names QUIC's own verdict: the peer's CONNECTION_CLOSE and its code.
  CHECK_THAT((*s)->stats().last_path_down, Catch::Contains("quic: peer closed (code 0"));
  // The flow goes on over the other path.
  const std::string msg = "still here";
  REQUIRE_OK((*c)->write(std::as_bytes(std::span(msg.data(), msg.size())), deadline_in(5s)));
  std::vector<std::byte> in(msg.size());
  REQUIRE_OK((*s)->read(in, deadline_in(5s)));
  CHECK(std::memcmp(in.data(), msg.data(), msg.size()) == 0);
}

TEST_CASE("engine quic: the listener closing a quic path fails it at once on the dialer, named",
          "[engine][quic][net]") {
  QuicCerts k;
  ListenOptions lo = listen_opts();
  lo.flow.probe_interval = 1s;
  lo.flow.fresh_min = 10s;
  auto l = listen_quic("127.0.0.1:0", server_tls(k), lo);
  REQUIRE_OK(l);
  auto o = dial_opts({quic_path(k, (*l)->local_address(), "q1"),
                      quic_path(k, (*l)->local_address(), "q2")});
  o.probe_interval = 1s;
  o.fresh_min = 10s;
  auto [d, c, s] = dial_pair(**l, o);
  REQUIRE((*c)->stats().paths.size() == 2);
  const auto t0 = std::chrono::steady_clock::now();
  (*s)->kill_path_for_test((*s)->active_path());
  while ((*c)->stats().paths.size() == 2 && std::chrono::steady_clock::now() - t0 < 5s) {
    std::this_thread::sleep_for(5ms);
  }
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK((*c)->stats().paths.size() == 1);
  CHECK(took < 500ms);
  CHECK_THAT((*c)->stats().last_path_down, Catch::Contains("quic: peer closed (code 0"));
  const std::string msg = "still here";
  REQUIRE_OK((*s)->write(std::as_bytes(std::span(msg.data(), msg.size())), deadline_in(5s)));
  std::vector<std::byte> in(msg.size());
  REQUIRE_OK((*c)->read(in, deadline_in(5s)));
  CHECK(std::memcmp(in.data(), msg.data(), msg.size()) == 0);
}

TEST_CASE("engine quic: the listener's idle timeout fails the path at once on both sides, named",
          "[engine][quic][net]") {
  QuicCerts k;
  // The listener allows 300 ms without a packet; the engine probes every 5 s with a 20 s
  // freshness window, so nothing but QUIC's idle timeout can end the path within the test.
  QuicTls tls = server_tls(k);
  tls.idle_timeout = 300ms;
  ListenOptions lo = listen_opts();
  lo.flow.probe_interval = 5s;
  lo.flow.fresh_min = 20s;
  lo.flow.fresh_max = 30s;
  auto l = listen_quic("127.0.0.1:0", tls, lo);
  REQUIRE_OK(l);
  auto o = dial_opts({quic_path(k, (*l)->local_address(), "q1")});
  o.probe_interval = 5s;
  o.fresh_min = 20s;
  o.fresh_max = 30s;
  auto [d, c, s] = dial_pair(**l, o);
  const auto t0 = std::chrono::steady_clock::now();
  const auto down = [](Conn& x) { return x.stats().paths_lost > 0; };
  while ((!down(**s) || !down(**c)) && std::chrono::steady_clock::now() - t0 < 10s) {
    std::this_thread::sleep_for(5ms);
  }
  const auto took = std::chrono::steady_clock::now() - t0;
  const auto ss = (*s)->stats();
  const auto cs = (*c)->stats();
  INFO("server: " << engine::flow_stats_json(ss));
  INFO("client: " << engine::flow_stats_json(cs));
  // QUIC's verdict, named on both ends (the dialer took the listener's shorter timeout), well
  // before any engine timer (the first probe is 5 s away).
  CHECK_THAT(ss.last_path_down, Catch::Contains("quic: idle timeout"));
  CHECK_THAT(cs.last_path_down, Catch::Contains("quic: idle timeout"));
  CHECK(took < 3s);
}

TEST_CASE("engine quic: junk datagrams at the listener are dropped, counted and bounded",
          "[engine][quic][net][hostile]") {
  QuicCerts k;
  ListenOptions lo = listen_opts();
  lo.max_pending_carriers = 64;
  lo.max_pending_per_source = 64;
  auto l = listen_quic("127.0.0.1:0", server_tls(k), lo);
  REQUIRE_OK(l);
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  to.sin_port = htons((*l)->port());
  std::vector<std::uint8_t> buf(1300);
  constexpr int kJunk = 5000;
  constexpr int kInitials = 500;
  for (int i = 0; i < kJunk + kInitials; ++i) {
    (void)::getrandom(buf.data(), buf.size(), 0);
    std::size_t len = 1 + buf[0] % 64;  // short junk
    if (i >= kJunk) {
      // Looks like a client Initial (long header, version 1, 8-byte ids, 1200 bytes) whose
      // protection does not decrypt: a connection is made for it, within the pending bound.
      len = 1200;
      buf[0] = 0xc3;
      buf[1] = 0;
      buf[2] = 0;
      buf[3] = 0;
      buf[4] = 1;
      buf[5] = 8;
      buf[14] = 8;
      buf[23] = 0;  // token length
    } else if (i % 2 == 0) {
      buf[0] = 0x40;  // short header for an id nobody has
      len = 100;
    }
    (void)::sendto(fd, buf.data(), len, 0, reinterpret_cast<sockaddr*>(&to), sizeof to);
    if (i % 64 == 0) {
      std::this_thread::sleep_for(1ms);  // leave room in the socket buffer
      CHECK((*l)->listener_stats().pending_carriers <= lo.max_pending_carriers);
    }
  }
  ::close(fd);
  // Every junk datagram is counted as dropped, before any state was made for it.
  ListenerStats ls;
  for (int i = 0; i < 300; ++i) {
    ls = (*l)->listener_stats();
    if (ls.quic_dropped + ls.quic_handshake_failures + ls.carriers_dropped >=
        static_cast<std::uint64_t>(kJunk)) {
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  INFO("dropped " << ls.quic_dropped << " failed " << ls.quic_handshake_failures << " pushed out "
                  << ls.carriers_dropped << " pending " << ls.pending_carriers);
  CHECK(ls.quic_dropped >= static_cast<std::uint64_t>(kJunk));
  CHECK(ls.pending_carriers <= lo.max_pending_carriers);
  CHECK(ls.flows == 0);
  // A real client still gets in.
  auto [d, c, s] = dial_pair(**l, dial_opts({quic_path(k, (*l)->local_address())}));
  const std::string msg = "hello";
  REQUIRE_OK((*c)->write(std::as_bytes(std::span(msg.data(), msg.size())), deadline_in(5s)));
  std::vector<std::byte> in(msg.size());
  REQUIRE_OK((*s)->read(in, deadline_in(5s)));
}

TEST_CASE("engine quic: a graceful close gets its BYE_ACK over quic, every time",
          "[engine][quic][net]") {
  // The listener's carrier closes right after it queued the BYE_ACK: a quic carrier must send
  // what was written before its CONNECTION_CLOSE, as a TCP close does.
  QuicCerts k;
  auto l = listen_quic("127.0.0.1:0", server_tls(k), listen_opts());
  REQUIRE_OK(l);
  for (int i = 0; i < 20; ++i) {
    auto [d, c, s] = dial_pair(**l, dial_opts({quic_path(k, (*l)->local_address())}));
    std::vector<std::byte> big(256 * 1024, std::byte{7});
    REQUIRE_OK((*s)->write(big, deadline_in(5s)));
    std::vector<std::byte> in(big.size());
    REQUIRE_OK((*c)->read(in, deadline_in(5s)));
    INFO("round " << i);
    REQUIRE_OK((*c)->close());
  }
}
