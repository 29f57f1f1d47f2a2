// SPDX-License-Identifier: Apache-2.0
// Half-close (docs/wire.md "Half-close"): SHUTDOWN_WRITE (control 0x41, caps bit 13) on the
// I/O-free flow core, step by step through FakeNet (fake clock): the peer reads EOF after the
// last byte while the other direction keeps flowing, the half-close is a ledger entry replayed
// across a path death between the last data and itself, it is refused (nothing closed) when
// not negotiated, and a peer that breaks its rules ends the flow with peer_protocol.
#include "fake_net.hpp"

#include <rendr/engine/errors.hpp>
#include <rendr/engine/core/flow.hpp>
#include <rendr/engine/core/wire.hpp>

#include "support/pattern.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

using namespace rendr;
using namespace rendr::engine;
using namespace rendr::engine::test;
using namespace std::chrono_literals;

namespace {

std::vector<std::byte> framed(const Frame& f) {
  std::vector<std::byte> frame;
  REQUIRE(encode_frame(f, frame).ok());
  std::vector<std::byte> out;
  append_stream_prefix(frame.size(), out);
  out.insert(out.end(), frame.begin(), frame.end());
  return out;
}

// Reader: reads everything |c| has, checks it against a pattern at its offset, notes EOF.
struct Reader {
  explicit Reader(std::uint32_t seed) : pattern(seed) {}
  rendr::test::Pattern pattern;
  std::uint64_t got = 0;
  bool eof = false;
  bool intact = true;
  void poll(FlowCore& c, TimePoint now) {
    std::vector<std::byte> buf(32 * 1024);
    while (!eof) {
      auto r = c.read(buf, now);
      REQUIRE(r.ok());
      if (r->eof) {
        eof = true;
        return;
      }
      if (r->bytes == 0) {
        return;
      }
      intact = intact && pattern.mismatch(got, std::span(buf).first(r->bytes)) < 0;
      got += r->bytes;
    }
  }
};

// Writer: writes |total| pattern bytes as the window allows.
struct Writer {
  Writer(std::uint32_t seed, std::uint64_t n) : pattern(seed), total(n) {}
  rendr::test::Pattern pattern;
  std::uint64_t total;
  std::uint64_t sent = 0;
  void poll(FlowCore& c, TimePoint now) {
    std::vector<std::byte> buf(32 * 1024);
    while (sent < total) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), total - sent));
      pattern.fill(sent, std::span(buf).first(n));
      auto r = c.write(std::span(buf).first(n), now);
      REQUIRE(r.ok());
      if (*r == 0) {
        return;
      }
      sent += *r;
    }
  }
  [[nodiscard]] bool done() const { return sent == total; }
};

bool handshake_done(FakeNet& net) {
  return net.server.has_value() && net.client.state() == FlowState::active;
}

}  // namespace

TEST_CASE("engine half-close: SHUTDOWN_WRITE is control 0x41, sequenced, empty",
          "[engine][halfclose][wire]") {
  std::vector<std::byte> w;
  REQUIRE(encode_frame(ShutdownWrite{5}, w).ok());
  REQUIRE(w.size() == kHeaderSize);
  CHECK(static_cast<int>(w[0]) == 0x20);
  CHECK(static_cast<int>(w[1]) == 0x41);
  CHECK(static_cast<int>(w[3]) == 5);
  auto f = decode_frame(w);
  REQUIRE(f.ok());
  REQUIRE(std::holds_alternative<ShutdownWrite>(*f));
  CHECK(std::get<ShutdownWrite>(*f).seq == 5);
  CHECK(std::string(frame_name(*f)) == "shutdown_write");
  auto oob = w;
  oob[3] = std::byte{0};
  CHECK_FALSE(decode_frame(oob).ok());
  auto longer = w;
  longer.push_back(std::byte{1});
  auto bad = decode_frame(longer);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == make_error_code(errc::malformed_frame));
}

TEST_CASE("engine half-close: the peer reads EOF while the other direction keeps flowing",
          "[engine][halfclose][flow]") {
  FakeNet net(fast_probe_config(), fast_probe_config());
  net.add_link({});
  REQUIRE(net.run_until([&] { return handshake_done(net); }, 1s));
  CHECK((net.client.stats().peer_caps & kCapsHalfClose) != 0);
  Writer up(1, 300 * 1024);
  Reader at_server(1);
  Writer down(2, 200 * 1024);
  Reader at_client(2);
  bool shut = false;
  net.app = [&](FakeNet& n) {
    up.poll(n.client, n.now);
    if (up.done() && !shut) {
      REQUIRE(n.client.shutdown_write(n.now).ok());
      shut = true;
    }
    at_server.poll(*n.server, n.now);
    if (at_server.eof) {
      down.poll(*n.server, n.now);  // the answer after the request's EOF
    }
    at_client.poll(n.client, n.now);
  };
  REQUIRE(net.run_until([&] { return at_client.got == down.total; }, 10s));
  CHECK(at_server.eof);
  CHECK(at_server.got == up.total);
  CHECK(at_server.intact);
  CHECK(at_client.intact);
  CHECK_FALSE(at_client.eof);
  CHECK(net.client.state() == FlowState::active);
  CHECK(net.server->state() == FlowState::active);
  CHECK(net.client.stats().write_shut);
  CHECK(net.server->stats().peer_write_shut);
  // The half-closed side may not write; a second shutdown_write is a no-op.
  auto w = net.client.write(std::vector<std::byte>(3), net.now);
  REQUIRE_FALSE(w.ok());
  CHECK(w.error().code == make_error_code(errc::closed));
  CHECK(net.client.writable() == 0);
  CHECK(net.client.shutdown_write(net.now).ok());
  // Then the server closes: the client reads EOF, both flows end cleanly.
  net.app = [&](FakeNet& n) { at_client.poll(n.client, n.now); };
  net.server->close(net.now);
  REQUIRE(net.run_until(
      [&] {
        return at_client.eof && net.client.state() == FlowState::dead &&
               net.server->state() == FlowState::dead;
      },
      5s));
  // The client's end is the peer's BYE(normal): recorded as closed ("peer closed the flow").
  REQUIRE(net.client.close_error().has_value());
  CHECK(net.client.close_error()->code == make_error_code(errc::closed));
  CHECK_FALSE(net.server->close_error().has_value());
}

TEST_CASE("engine half-close: a path death between the last data and the half-close loses nothing",
          "[engine][halfclose][flow]") {
  FakeNet net(fast_probe_config(), fast_probe_config());
  const int first = net.add_link({});
  REQUIRE(net.run_until([&] { return handshake_done(net); }, 1s));
  Writer up(3, 64 * 1024);
  Reader at_server(3);
  // Step 1: the data goes out and is read on path 1.
  up.poll(net.client, net.now);
  REQUIRE(up.done());
  net.app = [&](FakeNet& n) { at_server.poll(*n.server, n.now); };
  REQUIRE(net.run_until([&] { return at_server.got == up.total; }, 2s));
  CHECK_FALSE(at_server.eof);
  // Step 2: path 1 dies silently; the half-close is committed to it, and lost there.
  net.blackhole(first);
  REQUIRE(net.client.shutdown_write(net.now).ok());
  for (int i = 0; i < 3; ++i) {
    REQUIRE(net.step());
  }
  CHECK_FALSE(at_server.eof);
  // Step 3: a new path (a re-dial): once path 1 is declared dead, the half-close is replayed.
  const auto replayed_before = net.client.stats().replayed_frames;
  net.add_link({});
  REQUIRE(net.run_until([&] { return at_server.eof; }, 5s));
  CHECK(at_server.got == up.total);
  CHECK(at_server.intact);
  CHECK(net.client.stats().replayed_frames > replayed_before);
  CHECK(net.server->state() == FlowState::active);
  // Step 4: the other direction still flows, on the new path.
  Writer down(4, 100 * 1024);
  Reader at_client(4);
  net.app = [&](FakeNet& n) {
    down.poll(*n.server, n.now);
    at_client.poll(n.client, n.now);
  };
  REQUIRE(net.run_until([&] { return at_client.got == down.total; }, 5s));
  CHECK(at_client.intact);
  CHECK_FALSE(at_client.eof);
}

TEST_CASE("engine half-close: data and half-close in flight when the path dies are replayed in order",
          "[engine][halfclose][flow]") {
  FakeNet net(fast_probe_config(), fast_probe_config());
  const int first = net.add_link({.delay = 20ms});
  REQUIRE(net.run_until([&] { return handshake_done(net); }, 1s));
  net.add_link({.delay = 5ms});
  REQUIRE(net.run_until([&] { return net.client.stats().paths.size() == 2 &&
                                      net.client.stats().paths[1].state == PathState::ready; },
                        1s));
  Writer up(5, 128 * 1024);
  Reader at_server(5);
  up.poll(net.client, net.now);
  REQUIRE(up.done());
  REQUIRE(net.client.shutdown_write(net.now).ok());
  REQUIRE(net.step());  // committed to the active path...
  net.fail_link(first);  // ...which dies loudly before anything arrived
  net.app = [&](FakeNet& n) { at_server.poll(*n.server, n.now); };
  REQUIRE(net.run_until([&] { return at_server.eof; }, 5s));
  CHECK(at_server.got == up.total);
  CHECK(at_server.intact);
  CHECK(net.server->state() == FlowState::active);
}

TEST_CASE("engine half-close: the server side may half-close too", "[engine][halfclose][flow]") {
  FakeNet net(fast_probe_config(), fast_probe_config());
  net.add_link({});
  REQUIRE(net.run_until([&] { return handshake_done(net); }, 1s));
  Writer down(6, 50 * 1024);
  Reader at_client(6);
  Writer up(7, 50 * 1024);
  Reader at_server(7);
  bool shut = false;
  net.app = [&](FakeNet& n) {
    down.poll(*n.server, n.now);
    if (down.done() && !shut) {
      REQUIRE(n.server->shutdown_write(n.now).ok());
      shut = true;
    }
    at_client.poll(n.client, n.now);
    up.poll(n.client, n.now);
    at_server.poll(*n.server, n.now);
  };
  REQUIRE(net.run_until([&] { return at_client.eof && at_server.got == up.total; }, 5s));
  CHECK(at_client.got == down.total);
  CHECK(at_client.intact);
  CHECK(at_server.intact);
  CHECK_FALSE(at_server.eof);
}

TEST_CASE("engine half-close: without the peer's caps bit 13 nothing is closed",
          "[engine][halfclose][flow]") {
  const TimePoint t0 = TimePoint{} + 1h;
  // A server whose client did not ask (an older peer): refused, the flow stays open both ways.
  Hello h;
  h.flow_id = make_id(1);
  h.instance_id = make_id(2);
  h.caps = 0;
  FlowCore s = server_from_hello(fast_probe_config(), framed(h), t0);
  auto st = s.shutdown_write(t0);
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().code == make_error_code(errc::peer_unsupported));
  CHECK(s.state() == FlowState::active);
  auto w = s.write(std::vector<std::byte>(10), t0);
  REQUIRE(w.ok());
  CHECK(*w == 10);
  CHECK_FALSE(s.stats().write_shut);
  // A client whose server did not echo it (an older listener): the same.
  auto c = FlowCore::client(fast_probe_config(), make_id(1), make_id(2));
  REQUIRE(c.ok());
  auto p = c->add_path(PathOptions{}, t0);
  REQUIRE(p.ok());
  CHECK(c->shutdown_write(t0).error().code == make_error_code(errc::not_ready));
  HelloAck ack;
  ack.flow_id = make_id(1);
  ack.instance_id = make_id(3);
  ack.caps = 0;
  REQUIRE(c->on_receive(*p, framed(ack), t0).ok());
  REQUIRE(c->state() == FlowState::active);
  auto cs = c->shutdown_write(t0);
  REQUIRE_FALSE(cs.ok());
  CHECK(cs.error().code == make_error_code(errc::peer_unsupported));
  CHECK(c->state() == FlowState::active);
  CHECK(c->write(std::vector<std::byte>(10), t0).ok());
  // And after close() it is refused as closed.
  c->close(t0);
  CHECK(c->shutdown_write(t0).error().code == make_error_code(errc::closed));
}

TEST_CASE("engine half-close: a peer that breaks the half-close rules ends the flow",
          "[engine][halfclose][hostile]") {
  const TimePoint t0 = TimePoint{} + 1h;
  const std::string text = "x";
  const auto payload = std::as_bytes(std::span(text));
  struct Case {
    std::string name;
    std::uint32_t caps;
    std::vector<Frame> frames;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"not negotiated", 0, {ShutdownWrite{1}}, "without negotiating"},
      {"data after it", kCapsHalfClose, {Data{1, payload, false}, ShutdownWrite{2}, Data{3, payload, false}},
       "data after the SHUTDOWN_WRITE"},
      {"twice", kCapsHalfClose, {ShutdownWrite{1}, ShutdownWrite{2}}, "a second SHUTDOWN_WRITE"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    Hello h;
    h.flow_id = make_id(1);
    h.instance_id = make_id(2);
    h.caps = c.caps;
    FlowCore s = server_from_hello(fast_probe_config(), framed(h), t0);
    const PathId p = s.path_ids().front();
    for (const auto& f : c.frames) {
      REQUIRE(s.on_receive(p, framed(f), t0).ok());
    }
    CHECK(s.state() == FlowState::dead);
    REQUIRE(s.close_error());
    INFO(s.close_error()->message());
    CHECK(s.close_error()->code == make_error_code(errc::peer_protocol));
    CHECK(s.close_error()->message().find(c.says) != std::string::npos);
  }
  // A BYE after the half-close is the normal end of the flow.
  Hello h;
  h.flow_id = make_id(1);
  h.instance_id = make_id(2);
  h.caps = kCapsHalfClose;
  FlowCore s = server_from_hello(fast_probe_config(), framed(h), t0);
  const PathId p = s.path_ids().front();
  REQUIRE(s.on_receive(p, framed(Data{1, payload, false}), t0).ok());
  REQUIRE(s.on_receive(p, framed(ShutdownWrite{2}), t0).ok());
  REQUIRE(s.on_receive(p, framed(Bye{3, ByeReason::normal}), t0).ok());
  CHECK(s.state() == FlowState::dead);
  CHECK(s.close_error()->code == make_error_code(errc::closed));  // "peer closed the flow"
  std::vector<std::byte> buf(8);
  auto r = s.read(buf, t0);
  REQUIRE(r.ok());
  CHECK(r->bytes == 1);
  r = s.read(buf, t0);
  REQUIRE(r.ok());
  CHECK(r->eof);
}
