// SPDX-License-Identifier: Apache-2.0
// What a flow puts on a stream carrier, frame by frame, between two cores in memory (fake clock,
// no FakeNet): when ACKs leave (coalesced, at once, or riding with other frames) and when a
// path's first probe leaves. Each transmit is decoded into the names of its frames.
#include "fake_net.hpp"

#include <rendr/engine/errors.hpp>
#include <rendr/engine/core/flow.hpp>
#include <rendr/engine/core/wire.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

using namespace rendr;
using namespace rendr::engine;
using namespace rendr::engine::test;
using namespace std::chrono_literals;

namespace {

// frames_of: the names (frame_name) of the frames one stream transmit |wire| carried.
std::vector<std::string> frames_of(std::span<const std::byte> wire) {
  std::vector<std::string> names;
  StreamDeframer d;
  d.feed(wire);
  while (auto fr = d.next()) {
    if (!fr->has_value()) {
      break;
    }
    auto dec = decode_frame(**fr);
    REQUIRE(dec.ok());
    names.emplace_back(frame_name(*dec));
  }
  return names;
}

long count(const std::vector<std::string>& names, const char* name) {
  return std::count(names.begin(), names.end(), name);
}

// StreamPair: a client core whose HELLO made a server core over one stream path each, the
// server's HELLO_ACK not sent yet. The clock moves only when a test moves |now|.
struct StreamPair {
  explicit StreamPair(const FlowConfig& cfg)
      : client(make_client(cfg)),
        cp(*client.add_path({}, now)),
        server(server_from_hello(cfg, transmit(client, cp, 1 << 20), now)),
        sp(server.path_ids().front()) {}

  static FlowCore make_client(const FlowConfig& cfg) {
    auto c = FlowCore::client(cfg, make_id(1), make_id(2));
    REQUIRE(c.ok());
    return std::move(*c);
  }
  // transmit: everything |from| sends on |path| now (up to |max| bytes per poll).
  std::vector<std::byte> transmit(FlowCore& from, PathId path, std::size_t max) {
    std::vector<std::byte> out;
    while (from.poll_transmit(path, out, max, now) > 0) {
    }
    return out;
  }
  // to_server / to_client: one transmit delivered; the names of the frames it carried.
  std::vector<std::string> to_server(std::size_t max = 1 << 22) {
    const auto w = transmit(client, cp, max);
    if (!w.empty()) {
      REQUIRE(server.on_receive(sp, w, now).ok());
    }
    return frames_of(w);
  }
  std::vector<std::string> to_client(std::size_t max = 1 << 20) {
    const auto w = transmit(server, sp, max);
    if (!w.empty()) {
      REQUIRE(client.on_receive(cp, w, now).ok());
    }
    return frames_of(w);
  }

  TimePoint now = TimePoint{} + 1h;
  FlowCore client;
  PathId cp;
  FlowCore server;
  PathId sp;
};

}  // namespace

TEST_CASE("engine flow: stream ACKs coalesce - a MiB or 5 ms of DATA per ACK - a BYE is ACKed at once",
          "[engine][flow][ack]") {
  FlowConfig cfg;  // 16 MiB ledger: one ACK per MiB of in-order DATA
  StreamPair f(cfg);
  f.to_client();  // HELLO_ACK
  REQUIRE(f.client.state() == FlowState::active);
  // The first probes and their replies: after these neither side has anything of its own to
  // send (an owed ACK rides with anything a path sends; see the next test).
  f.to_server();
  f.to_client();
  f.to_server();
  std::vector<std::byte> dst(4U << 20);

  // 256 KiB: delivered, but not acknowledged yet; the ACK is due within 5 ms.
  std::vector<std::byte> src(256 * 1024, std::byte{0x11});
  REQUIRE(*f.client.write(src, f.now) == src.size());
  f.to_server();
  f.to_client();
  CHECK(f.client.stats().ledger_frames == src.size() / kMaxPayload);
  REQUIRE(f.server.next_deadline().has_value());
  CHECK(*f.server.next_deadline() <= f.now + 5ms);
  f.now += 5ms;
  f.server.on_timeout(f.now);
  f.to_client();
  CHECK(f.client.stats().ledger_frames == 0);
  CHECK(f.server.read(dst, f.now)->bytes == src.size());

  // 2 MiB at once: past a MiB the ACK goes out without waiting, covering all of it.
  src.assign(2U << 20, std::byte{0x22});
  REQUIRE(*f.client.write(src, f.now) == src.size());
  f.to_server();
  f.to_client();
  CHECK(f.client.stats().ledger_frames == 0);
  CHECK(f.server.read(dst, f.now)->bytes == src.size());

  // A little more DATA, then the BYE: acknowledged at once (the close ends cleanly without
  // the clock moving).
  src.assign(1000, std::byte{0x33});
  REQUIRE(*f.client.write(src, f.now) == src.size());
  f.client.close(f.now);
  f.to_server();
  f.to_client();
  CHECK(f.client.state() == FlowState::dead);
  CHECK_FALSE(f.client.close_error().has_value());
  CHECK(f.server.read(dst, f.now)->bytes == src.size());
}

TEST_CASE("engine flow: an owed ACK rides with the next frames a stream path sends - a "
          "response, a SHUTDOWN_WRITE with BYE",
          "[engine][flow][ack]") {
  FlowConfig cfg;
  StreamPair f(cfg);
  const auto to_server = [&] { return f.to_server(1 << 20); };
  (void)f.to_client();  // HELLO_ACK
  REQUIRE(f.client.state() == FlowState::active);
  (void)to_server();  // probes and replies
  (void)f.to_client();
  (void)to_server();
  REQUIRE(f.to_client().empty());  // nothing left on either side

  // A request: the server owes its ACK (coalesced, not sent at once)...
  std::vector<std::byte> req(100, std::byte{0x41});
  REQUIRE(*f.client.write(req, f.now) == req.size());
  (void)to_server();
  std::vector<std::byte> dst(4096);
  REQUIRE(f.server.read(dst, f.now)->bytes == req.size());
  CHECK(f.client.stats().ledger_frames == 1);
  // ... and its response carries it, without the clock moving.
  std::vector<std::byte> resp(200, std::byte{0x42});
  REQUIRE(*f.server.write(resp, f.now) == resp.size());
  const auto with_response = f.to_client();
  CHECK(count(with_response, "ack") == 1);
  CHECK(count(with_response, "data") == 1);
  CHECK(f.client.stats().ledger_frames == 0);
  REQUIRE(f.client.read(dst, f.now)->bytes == resp.size());

  // The client's half-close: not acknowledged on its own (the server has nothing to send)...
  REQUIRE(f.client.shutdown_write(f.now).ok());
  const auto shut = to_server();
  CHECK(count(shut, "ack") == 1);  // the client's owed ACK of the response rode with it
  CHECK(count(shut, "shutdown_write") == 1);
  CHECK(f.server.stats().ledger_frames == 0);
  CHECK(f.to_client().empty());
  CHECK(f.server.read(dst, f.now)->eof);
  // ... the server's own SHUTDOWN_WRITE and BYE carry it; the client ACKs the BYE at once and
  // both ends finish cleanly, the clock never moved (the client's close after the peer's BYE
  // sends nothing more).
  REQUIRE(f.server.shutdown_write(f.now).ok());
  f.server.close(f.now);
  const auto answer = f.to_client();
  CHECK(count(answer, "ack") == 1);
  CHECK(count(answer, "shutdown_write") == 1);
  CHECK(count(answer, "bye") == 1);
  CHECK(f.client.read(dst, f.now)->eof);
  f.client.close(f.now);
  (void)to_server();
  (void)f.to_client();
  CHECK(f.client.state() == FlowState::dead);
  CHECK(f.server.state() == FlowState::dead);
  REQUIRE(f.client.close_error().has_value());  // the peer's clean close
  CHECK(f.client.close_error()->code == make_error_code(errc::closed));
  CHECK_FALSE(f.server.close_error().has_value());  // its BYE was acknowledged
}

TEST_CASE("engine flow: a path's first probe leaves with what the path sends when it is ready",
          "[engine][flow][probe]") {
  // No timer turn in between (on_timeout is never called here): the server's first transmit
  // carries its HELLO_ACK and its first probe, the client's first transmit after the
  // HELLO_ACK its own first probe. Before, each probe waited for a timer and left alone.
  FlowConfig cfg;
  StreamPair f(cfg);
  std::vector<std::byte> back;
  REQUIRE(f.server.poll_transmit(f.sp, back, 1 << 20, f.now) > 0);
  const auto s = frames_of(back);
  CHECK(count(s, "hello_ack") == 1);
  CHECK(count(s, "probe") == 1);
  REQUIRE(f.client.on_receive(f.cp, back, f.now).ok());
  REQUIRE(f.client.state() == FlowState::active);
  std::vector<std::byte> out;
  REQUIRE(f.client.poll_transmit(f.cp, out, 1 << 20, f.now) > 0);
  CHECK(count(frames_of(out), "probe") == 1);
}
