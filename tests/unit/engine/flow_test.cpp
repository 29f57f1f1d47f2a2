// SPDX-License-Identifier: Apache-2.0
// Flow core end to end, in memory: two cores through FakeNet with a fake clock and scripted
// loss. Every transfer is a seekable pattern stream checked byte for byte at its offset, so a
// lost, duplicated or reordered byte fails at the exact place.
#include "fake_net.hpp"
#include "flow_transfer.hpp"

#include <rendr/engine/errors.hpp>
#include <rendr/engine/core/flow.hpp>
#include <rendr/engine/core/frame_cache.hpp>

#include "support/pattern.hpp"

#include <catch2/catch.hpp>

#include <set>

using namespace rendr;
using namespace rendr::engine;
using namespace rendr::engine::test;
using namespace std::chrono_literals;


TEST_CASE("engine flow: handshake, then a byte stream arrives intact both ways",
          "[engine][flow]") {
  FakeNet net(small_frame_config(), small_frame_config());
  net.add_link({});
  REQUIRE(net.client.state() == FlowState::handshaking);
  REQUIRE(net.run_until([&] { return net.client.state() == FlowState::active; }, 1s));
  REQUIRE(net.server.has_value());
  CHECK(net.server->flow_id() == net.client.flow_id());
  CHECK(net.server->state() == FlowState::active);
  CHECK(count_events<EvHandshakeDone>(net.client_events) == 1);

  Transfer up(3'000'000, 1);
  Transfer down(2'000'000, 2);
  net.app = [&](FakeNet& n) {
    up.write_some(n.client, n.now);
    up.read_some(*n.server, n.now);
    down.write_some(*n.server, n.now);
    down.read_some(n.client, n.now);
  };
  REQUIRE(net.run_until([&] { return up.complete() && down.complete(); }, 60s));
  CHECK(up.mismatch_at == -1);
  CHECK(down.mismatch_at == -1);
  const auto cs = net.client.stats();
  CHECK(cs.recv_dups == 0);
  CHECK(cs.migration_count == 0);
  // Everything written was acknowledged and released from the ledger.
  REQUIRE(net.run_until([&] { return net.client.stats().ledger_frames == 0; }, 1s));
  CHECK(net.client.stats().ledger_bytes_high_water <= small_frame_config().ledger_max_bytes);
  CHECK(net.client.stats().paths.at(0).has_rtt);
}

TEST_CASE("engine flow: two-step writes and lent reads carry a stream intact",
          "[engine][flow]") {
  FakeNet net(small_frame_config(), small_frame_config());
  net.add_link({});
  REQUIRE(net.run_until([&] { return net.client.state() == FlowState::active; }, 1s));
  REQUIRE(net.server.has_value());
  constexpr std::uint64_t kTotal = 3'000'000;
  rendr::test::Pattern pattern(11);
  std::uint64_t written = 0;
  std::uint64_t got = 0;
  long long mismatch = -1;
  std::size_t partial_reads = 0;
  std::vector<BufferLoan> wl;
  std::vector<BufferLoan> rl;
  std::vector<std::byte> src(100'000);
  // 20 000 bytes does not divide the 16 KiB frames: reads end with a copied partial piece.
  std::vector<std::byte> dst(20'000);
  net.app = [&](FakeNet& n) {
    while (written < kTotal) {
      const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(src.size(), kTotal - written));
      auto r = n.client.reserve_write(want, wl);
      REQUIRE(r.ok());
      if (*r == 0) {
        CHECK(wl.empty());
        break;
      }
      pattern.fill(written, std::span(src).first(*r));
      std::size_t off = 0;
      for (auto& l : wl) {
        l.buf.insert(l.buf.end(), src.begin() + static_cast<std::ptrdiff_t>(off),
                     src.begin() + static_cast<std::ptrdiff_t>(off + l.payload));
        off += l.payload;
      }
      auto c = n.client.commit_write(wl, n.now);
      REQUIRE(c.ok());
      CHECK(*c == *r);
      CHECK(wl.empty());
      written += *c;
    }
    for (;;) {
      auto r = n.server->read_loan(dst, rl, n.now);
      REQUIRE(r.ok());
      if (r->bytes == 0) {
        break;
      }
      std::size_t off = 0;
      for (const auto& l : rl) {
        const auto b = l.bytes();
        std::copy(b.begin(), b.end(), dst.begin() + static_cast<std::ptrdiff_t>(off));
        off += b.size();
      }
      partial_reads += off < r->bytes ? 1 : 0;
      n.server->recycle(rl);
      const long long m = pattern.mismatch(got, std::span(dst).first(r->bytes));
      if (m >= 0 && mismatch < 0) {
        mismatch = static_cast<long long>(got) + m;
      }
      got += r->bytes;
    }
  };
  // Everything read, and acknowledged: the ledger empties.
  REQUIRE(net.run_until([&] { return got == kTotal && net.client.stats().ledger_bytes == 0; }, 60s));
  CHECK(mismatch == -1);
  CHECK(partial_reads > 0);
  // An unfilled loan is a caller bug: refused, nothing published.
  auto u = net.client.reserve_write(100, wl);
  REQUIRE(u.ok());
  REQUIRE(*u == 100);
  auto uc = net.client.commit_write(wl, net.now);
  REQUIRE_FALSE(uc.ok());
  CHECK(wl.empty());
  CHECK(net.client.stats().ledger_frames == 0);
  // A reservation outlived by close is refused at commit, and its buffers are taken back.
  auto r = net.client.reserve_write(1000, wl);
  REQUIRE(r.ok());
  REQUIRE(*r == 1000);
  net.client.close(net.now);
  wl.front().buf.resize(kHeaderSize + 1000);
  auto c = net.client.commit_write(wl, net.now);
  REQUIRE_FALSE(c.ok());
  CHECK(wl.empty());
}

TEST_CASE("engine flow: silent death of the active path fails over and replays, no byte lost",
          "[engine][flow][failover]") {
  FakeNet net(small_frame_config(), small_frame_config());
  const int a = net.add_link({Framing::stream, 5ms});
  const int b = net.add_link({Framing::stream, 8ms});
  Transfer t(6'000'000);
  wire_transfer(net, t);
  REQUIRE(net.run_until([&] { return t.read > 2'000'000; }, 30s));
  REQUIRE(net.client.active_path() == net.client_path(a));
  const TimePoint cut = net.now;
  net.blackhole(a);  // nftables DROP: no error, no FIN, nothing
  REQUIRE(net.run_until([&] { return net.client.active_path() == net.client_path(b); }, 5s));
  const Duration failover = net.now - cut;
  CHECK(failover <= 1s);  // freshness window is clamped to <= 1 s in fast_config
  REQUIRE(net.run_until([&] { return t.complete(); }, 60s));
  CHECK(t.mismatch_at == -1);
  CHECK(t.read == t.total);
  const auto cs = net.client.stats();
  CHECK(cs.migration_count >= 1);
  CHECK(cs.replayed_frames > 0);
  CHECK(count_events<EvPathDown>(net.client_events) == 1);
  CHECK(net.client.state() == FlowState::active);
  // The server noticed on its own (its probes went unanswered too) and moved its side.
  REQUIRE(net.run_until([&] { return net.server->active_path() == *net.server_path(b); }, 5s));
  CHECK(net.dropped(a) > 0);
}

TEST_CASE("engine flow: a loud carrier failure fails over at once", "[engine][flow][failover]") {
  FakeNet net(small_frame_config(), small_frame_config());
  const int a = net.add_link({});
  const int b = net.add_link({});
  Transfer t(4'000'000);
  wire_transfer(net, t);
  REQUIRE(net.run_until([&] { return t.read > 1'000'000; }, 30s));
  net.fail_link(a);
  CHECK(net.client.active_path() == net.client_path(b));
  CHECK(net.server->active_path() == *net.server_path(b));
  REQUIRE(net.run_until([&] { return t.complete(); }, 60s));
  CHECK(t.mismatch_at == -1);
}

TEST_CASE("engine flow: planned migrate replays on the new path first, receiver dedups",
          "[engine][flow][migrate]") {
  FakeNet net(small_frame_config(), small_frame_config());
  const int a = net.add_link({Framing::stream, 2ms});
  const int b = net.add_link({Framing::stream, 30ms});
  REQUIRE(all_ready(net, 2));
  Transfer t(5'000'000);
  wire_transfer(net, t);
  REQUIRE(net.run_until([&] { return t.read > 1'000'000; }, 30s));
  auto mig = net.client.migrate(net.client_path(b), net.now);
  INFO((mig.ok() ? std::string("-") : mig.error().message()));
  REQUIRE(mig.ok());
  CHECK(net.client.active_path() == net.client_path(b));
  REQUIRE(net.run_until([&] { return t.read > 3'000'000; }, 30s));
  REQUIRE(net.client.migrate(net.client_path(a), net.now).ok());
  REQUIRE(net.run_until([&] { return t.complete(); }, 60s));
  CHECK(t.mismatch_at == -1);
  CHECK(net.client.stats().migration_count == 2);
  // Frames in flight on the old path also arrived via the replay: dropped as duplicates.
  CHECK(net.server->stats().recv_dups > 0);
  bool saw_explicit = false;
  for (const auto& e : net.client_events) {
    if (const auto* m = std::get_if<EvMigrated>(&e)) {
      saw_explicit = saw_explicit || m->cause == MigrateCause::explicit_request;
    }
  }
  CHECK(saw_explicit);
  // migrate to a path that does not exist is refused.
  auto bad = net.client.migrate(99, net.now);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == make_error_code(errc::unknown_path));
}

TEST_CASE("engine flow: all paths dead -> migrating, a new path within the budget resumes",
          "[engine][flow][budget]") {
  FakeNet net(small_frame_config(), small_frame_config());
  const int a = net.add_link({});
  Transfer t(3'000'000);
  wire_transfer(net, t);
  REQUIRE(net.run_until([&] { return t.read > 1'000'000; }, 30s));
  net.fail_link(a);
  CHECK(net.client.state() == FlowState::migrating);
  CHECK(net.client.active_path() == 0);
  REQUIRE(net.run_until([&] { return false; }, 5s) == false);  // 5 s without any path
  CHECK(net.client.state() == FlowState::migrating);
  // Writes still go into the window while migrating (no error surfaces).
  net.add_link({});
  REQUIRE(net.run_until([&] { return t.complete(); }, 60s));
  CHECK(t.mismatch_at == -1);
  CHECK(net.client.state() == FlowState::active);
  CHECK(net.server->state() == FlowState::active);
  CHECK_FALSE(t.read_error.has_value());
}

TEST_CASE("engine flow: migration budget exhausted is an error, never EOF",
          "[engine][flow][budget]") {
  FlowConfig c = small_frame_config();
  c.migration_budget = 3s;
  FakeNet net(c, c);
  const int a = net.add_link({});
  Transfer t(1'000'000);
  wire_transfer(net, t);
  REQUIRE(net.run_until([&] { return t.read > 100'000; }, 30s));
  net.blackhole(a);
  REQUIRE(net.run_until([&] { return net.client.state() == FlowState::dead; }, 10s));
  REQUIRE(net.client.close_error().has_value());
  CHECK(net.client.close_error()->code == make_error_code(errc::migration_budget_exceeded));
  auto w = net.client.write(std::vector<std::byte>(10), net.now);
  REQUIRE_FALSE(w.ok());
  CHECK(w.error().code == make_error_code(errc::migration_budget_exceeded));
  // The server side ends the same way; its reader sees the error after the buffered bytes,
  // never a clean EOF.
  REQUIRE(net.run_until([&] { return net.server->state() == FlowState::dead; }, 10s));
  t.read_some(*net.server, net.now);
  CHECK_FALSE(t.eof);
  REQUIRE(t.read_error.has_value());
  CHECK(t.read_error->code == make_error_code(errc::migration_budget_exceeded));
}

TEST_CASE("engine flow: clean close delivers everything then EOF", "[engine][flow][close]") {
  FakeNet net(small_frame_config(), small_frame_config());
  net.add_link({});
  REQUIRE(all_ready(net, 1));
  Transfer t(500'000);
  wire_transfer(net, t);
  REQUIRE(net.run_until([&] { return t.written == t.total; }, 30s));
  INFO((net.client.close_error() ? net.client.close_error()->message() : std::string("-")));
  REQUIRE(net.client.state() == FlowState::active);
  net.client.close(net.now);
  CHECK(net.client.state() == FlowState::closing);
  auto w = net.client.write(std::vector<std::byte>(1), net.now);
  REQUIRE_FALSE(w.ok());
  CHECK(w.error().code == make_error_code(errc::closed));
  REQUIRE(net.run_until([&] { return t.eof && net.client.state() == FlowState::dead; }, 10s));
  CHECK(t.complete());
  CHECK_FALSE(net.client.close_error().has_value());  // our BYE was acknowledged: clean
  bool clean = false;
  for (const auto& e : net.client_events) {
    if (const auto* c = std::get_if<EvClosed>(&e)) {
      clean = !c->error.has_value();
    }
  }
  CHECK(clean);
}

TEST_CASE("engine flow: a reader that stops reading stops the writer (end-to-end backpressure)",
          "[engine][flow][backpressure]") {
  FlowConfig c = small_frame_config();
  c.ledger_max_frames = 64;
  c.ledger_max_bytes = 512 * 1024;
  FlowConfig s = small_frame_config();
  s.recv_window_bytes = 256 * 1024;
  FakeNet net(c, s);
  net.add_link({});
  Transfer t(8'000'000);
  t.read_enabled = false;
  wire_transfer(net, t);
  net.run_until([&] { return false; }, 5s);
  const auto cs = net.client.stats();
  const auto ss = net.server->stats();
  // The writer is stuck at (receiver window + sender window), nowhere near the 8 MB.
  CHECK(t.written <= s.recv_window_bytes + c.ledger_max_bytes + c.max_payload);
  CHECK(t.written >= s.recv_window_bytes);
  CHECK(net.client.writable() == 0);
  CHECK(cs.backpressure_events > 0);
  CHECK(cs.ledger_bytes_high_water <= c.ledger_max_bytes);
  CHECK(cs.ledger_frames_high_water <= c.ledger_max_frames);
  CHECK(ss.delivered_unread <= s.recv_window_bytes);
  // Reading resumes: the transfer completes intact.
  t.read_enabled = true;
  REQUIRE(net.run_until([&] { return t.complete(); }, 60s));
  CHECK(t.mismatch_at == -1);
}

TEST_CASE("engine flow: writes stop at unsent_max_bytes while no carrier takes frames",
          "[engine][flow][backpressure]") {
  FlowConfig c = small_frame_config();
  c.ledger_max_bytes = 1U << 20;
  c.unsent_max_bytes = 128 * 1024;
  FakeNet net(c, small_frame_config());
  net.add_link({});
  REQUIRE(net.run_until([&] { return net.client.state() == FlowState::active; }, 1s));
  // Nothing is transmitted between these writes (no run): all of it is unsent.
  std::vector<std::byte> chunk(64 * 1024, std::byte{7});
  std::size_t taken = 0;
  for (int i = 0; i < 32; ++i) {
    auto r = net.client.write(chunk, net.now);
    REQUIRE(r.ok());
    taken += *r;
  }
  CHECK(taken <= c.unsent_max_bytes);
  CHECK(taken >= c.unsent_max_bytes - 2 * (c.max_payload + 64));
  CHECK(net.client.stats().ledger_bytes <= c.unsent_max_bytes);
  CHECK(net.client.stats().backpressure_events > 0);
  // Once the carrier took them, writing goes on (in flight may use the whole ledger).
  net.run_until([&] { return false; }, 50ms);
  auto r = net.client.write(chunk, net.now);
  REQUIRE(r.ok());
  CHECK(*r > 0);
}

TEST_CASE("engine flow: an idle flow gives its pooled buffers back",
          "[engine][flow][memory]") {
  FakeNet net(small_frame_config(), small_frame_config());
  net.add_link({});
  Transfer t(2'000'000);
  wire_transfer(net, t);
  REQUIRE(net.run_until([&] { return t.complete(); }, 60s));
  REQUIRE(net.run_until([&] { return net.client.stats().ledger_frames == 0; }, 1s));
  // The sender's frame buffers come back through the pool. (The receiver's payloads are views
  // of its receive chunks, which go back to the process-wide cache, not to its pool.)
  const auto busy_client = net.client.stats().pooled_buffers;
  CHECK(busy_client > 4);  // the transfer left buffers to recycle
  net.run_until([&] { return false; }, 3s);  // idle for longer than the 2 s trim age
  CHECK(net.client.stats().pooled_buffers <= 4);
  CHECK(net.server->stats().pooled_buffers <= 4);
}

TEST_CASE("engine flow: datagram carrier with random loss recovers by retransmission",
          "[engine][flow][loss]") {
  FlowConfig c = small_frame_config();
  c.max_payload = 1200;
  FakeNet net(c, c, 42);
  const int a = net.add_link({Framing::datagram, 5ms, 0.0});
  Transfer t(4'000'000);
  wire_transfer(net, t);
  REQUIRE(net.run_until([&] { return net.client.state() == FlowState::active; }, 1s));
  net.set_loss(a, 0.05);
  REQUIRE(net.run_until([&] { return t.complete(); }, 120s));
  CHECK(t.mismatch_at == -1);
  CHECK(net.dropped(a) > 0);
  const auto cs = net.client.stats();
  CHECK(cs.retransmits > 0);
  // Retransmissions track losses (no go-back-N burst): at most ~2 per dropped datagram.
  CHECK(cs.retransmits <= 2 * net.dropped(a));
}

TEST_CASE("engine flow: next_deadline_why names the deadline next_deadline returns",
          "[engine][flow][timers]") {
  // The shell counts deadlines that were already past when it armed its timer by kind; on a
  // lossy datagram path the ledger head's RTO is one (a cumulative ACK makes a frame sent
  // long ago the head, its timeout already run out).
  FlowConfig c = small_frame_config();
  c.max_payload = 1200;
  FakeNet net(c, c, 7);
  const int a = net.add_link({Framing::datagram, 5ms, 0.0});
  Transfer t(1'000'000);
  wire_transfer(net, t);
  REQUIRE(net.run_until([&] { return net.client.state() == FlowState::active; }, 1s));
  net.set_loss(a, 0.05);
  std::set<DeadlineKind> seen;
  std::size_t disagree = 0;
  REQUIRE(net.run_until(
      [&] {
        const auto d = net.client.next_deadline();
        const auto why = net.client.next_deadline_why();
        if (d.has_value() != why.has_value() || (d && *d != why->at)) {
          ++disagree;
        }
        if (why) {
          seen.insert(why->kind);
        }
        return t.complete();
      },
      60s));
  CHECK(disagree == 0);
  CHECK(seen.count(DeadlineKind::rto) == 1);
  CHECK(seen.count(DeadlineKind::probe) == 1);
  CHECK(to_string(DeadlineKind::rto) == "rto");
  CHECK(to_string(DeadlineKind::probe_expiry) == "probe_expiry");
}

TEST_CASE("engine flow: race over two lossy datagram paths, duplicates dropped by SEQ",
          "[engine][flow][race]") {
  FlowConfig c = small_frame_config();
  c.max_payload = 1200;
  c.mode = Mode::race;
  FakeNet net(c, c, 7);
  const int a = net.add_link({Framing::datagram, 5ms});
  const int b = net.add_link({Framing::datagram, 9ms});
  Transfer t(1'000'000);
  wire_transfer(net, t);
  REQUIRE(all_ready(net, 2));
  net.set_loss(a, 0.10);
  net.set_loss(b, 0.10);
  REQUIRE(net.run_until([&] { return t.complete(); }, 120s));
  CHECK(t.mismatch_at == -1);
  const auto ss = net.server->stats();
  CHECK(ss.recv_dups > 0);  // the second copy of most frames
  CHECK(ss.recv_queue_hwm > 0);
  CHECK(net.dropped(a) > 0);
  CHECK(net.dropped(b) > 0);
}

TEST_CASE("engine flow: a path added later joins via BRIDGE_TAG, remove_path fails over first",
          "[engine][flow][paths]") {
  FakeNet net(small_frame_config(), small_frame_config());
  const int a = net.add_link({});
  Transfer t(3'000'000);
  wire_transfer(net, t);
  REQUIRE(net.run_until([&] { return t.read > 500'000; }, 30s));
  auto last = net.client.remove_path(net.client_path(a), net.now);
  REQUIRE_FALSE(last.ok());
  CHECK(last.error().code == make_error_code(errc::last_path));
  const int b = net.add_link({});
  REQUIRE(all_ready(net, 2));
  REQUIRE(net.server_path(b).has_value());
  REQUIRE(net.client.remove_path(net.client_path(a), net.now).ok());
  CHECK(net.client.active_path() == net.client_path(b));
  REQUIRE(net.run_until([&] { return t.complete(); }, 60s));
  CHECK(t.mismatch_at == -1);
}

TEST_CASE("engine flow: mode switches prime<->race and prime<->bond only",
          "[engine][flow][mode]") {
  auto c = FlowCore::client(small_frame_config(), make_id(1), make_id(2));
  REQUIRE(c.ok());
  REQUIRE(c->set_mode(Mode::race).ok());
  auto bad = c->set_mode(Mode::bond);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == make_error_code(errc::mode_switch_illegal));
  REQUIRE(c->set_mode(Mode::prime).ok());
  REQUIRE(c->set_mode(Mode::bond).ok());
  CHECK_FALSE(c->set_mode(Mode::race).ok());
  CHECK(c->mode() == Mode::bond);
}

TEST_CASE("engine flow: config limits are enforced", "[engine][flow][config]") {
  FlowConfig c;
  c.migration_budget = 91s;
  auto r = FlowCore::client(c, make_id(1), make_id(2));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == make_error_code(errc::invalid_config));
  CHECK_THAT(r.error().message(), Catch::Contains("90 s"));
  FlowConfig d;
  d.max_payload = kMaxPayload + 1;
  CHECK_FALSE(FlowCore::client(d, make_id(1), make_id(2)).ok());
  auto ok = FlowCore::client(FlowConfig{}, make_id(1), make_id(2));
  REQUIRE(ok.ok());
  auto w = ok->write(std::vector<std::byte>(1), TimePoint{});
  REQUIRE_FALSE(w.ok());
  CHECK(w.error().code == make_error_code(errc::not_ready));
}

TEST_CASE("engine flow: close right after writing, before the handshake, still delivers",
          "[engine][flow][close]") {
  FakeNet net(small_frame_config(), small_frame_config());
  net.add_link({Framing::stream, 20ms});
  Transfer t(200'000);
  t.write_some(net.client, net.now);
  REQUIRE(t.written == t.total);  // buffered in the window during the handshake
  net.client.close(net.now);
  net.app = [&t](FakeNet& n) {
    if (n.server) {
      t.read_some(*n.server, n.now);
    }
  };
  REQUIRE(net.run_until([&] { return t.eof; }, 10s));
  CHECK(t.complete());
  REQUIRE(net.run_until([&] { return net.client.state() == FlowState::dead; }, 5s));
  CHECK_FALSE(net.client.close_error().has_value());
}

TEST_CASE("engine flow: packet mode keeps boundaries, delivers each packet once, out of order "
          "under loss",
          "[engine][flow][packet]") {
  FlowConfig c = small_frame_config();
  c.caps = kCapsPacketMode;
  c.max_payload = 1200;
  FakeNet net(c, c, 99);
  const int a = net.add_link({Framing::datagram, 5ms});
  const int b = net.add_link({Framing::datagram, 12ms});
  REQUIRE(all_ready(net, 2));
  CHECK(net.client.packet_mode());
  CHECK(net.server->packet_mode());
  CHECK((net.client.stats().peer_caps & kCapsPacketMode) != 0);
  net.set_loss(a, 0.05);
  net.set_loss(b, 0.05);
  // Stream calls are refused on a packet flow, and oversize packets are never split.
  auto w = net.client.write(std::vector<std::byte>(10), net.now);
  REQUIRE_FALSE(w.ok());
  CHECK(w.error().code == make_error_code(errc::wrong_mode));
  auto big = net.client.write_packet(std::vector<std::byte>(1201), net.now);
  REQUIRE_FALSE(big.ok());
  CHECK(big.error().code == make_error_code(errc::packet_too_large));

  constexpr std::uint32_t kPackets = 3000;
  std::uint32_t sent = 0;
  std::vector<int> seen(kPackets, 0);
  bool sizes_ok = true;
  bool any_out_of_order = false;
  std::uint32_t last = 0;
  std::uint32_t received = 0;
  net.app = [&](FakeNet& n) {
    while (sent < kPackets) {
      // Packet i: 4-byte index then (i % 1000) bytes, so boundaries are checkable.
      std::vector<std::byte> pkt(4 + sent % 1000, std::byte{0x77});
      for (int i = 0; i < 4; ++i) {
        pkt[static_cast<std::size_t>(i)] = static_cast<std::byte>(sent >> (8 * i));
      }
      auto r = n.client.write_packet(pkt, n.now);
      REQUIRE(r.ok());
      if (!*r) {
        break;
      }
      ++sent;
    }
    std::vector<std::byte> pkt;
    while (n.server->packet_ready()) {
      auto r = n.server->read_packet(pkt, n.now);
      REQUIRE(r.ok());
      REQUIRE(pkt.size() >= 4);
      std::uint32_t idx = 0;
      for (int i = 0; i < 4; ++i) {
        idx |= static_cast<std::uint32_t>(pkt[static_cast<std::size_t>(i)]) << (8 * i);
      }
      REQUIRE(idx < kPackets);
      sizes_ok = sizes_ok && pkt.size() == 4 + idx % 1000;
      seen[idx] += 1;
      any_out_of_order = any_out_of_order || (received > 0 && idx < last);
      last = idx;
      ++received;
    }
  };
  REQUIRE(net.run_until([&] { return received == kPackets; }, 120s));
  CHECK(sizes_ok);
  CHECK(std::all_of(seen.begin(), seen.end(), [](int k) { return k == 1; }));
  CHECK(any_out_of_order);  // a lost packet did not hold back the ones behind it
  CHECK(net.client.stats().retransmits > 0);
}

TEST_CASE("engine flow: read_packet asks for output only when it admitted held-back frames",
          "[engine][flow][packet]") {
  FlowConfig c = small_frame_config();
  c.caps = kCapsPacketMode;
  c.max_payload = 1200;
  c.recv_window_bytes = 3000;  // three 1 000-byte packets; the rest wait in the reorder buffer
  FakeNet net(c, c, 5);
  net.add_link({Framing::datagram, 5ms});
  REQUIRE(all_ready(net, 1));
  constexpr int kPackets = 6;
  for (int i = 0; i < kPackets; ++i) {
    auto r = net.client.write_packet(std::vector<std::byte>(1000, std::byte{0x42}), net.now);
    REQUIRE(r.ok());
    REQUIRE(*r);
  }
  // Nobody reads: three packets are delivered, three are held back by the window.
  REQUIRE(net.run_until([&] { return net.server->readable() == 3000; }, 2s));
  // 50 ms more: the window holds, nothing beyond 3 000 bytes is delivered.
  REQUIRE_FALSE(net.run_until([&] { return net.server->readable() > 3000; }, 50ms));
  std::vector<std::byte> pkt;
  int admitting = 0;
  int quiet = 0;
  for (int i = 0; i < kPackets; ++i) {
    REQUIRE(net.server->packet_ready());
    auto r = net.server->read_packet(pkt, net.now);
    REQUIRE(r.ok());
    CHECK(r->bytes == 1000);
    (r->output ? admitting : quiet) += 1;
  }
  // Each of the first three reads made room for one held-back packet; the last three admitted
  // nothing and need no flush (no io-thread wake-up per packet read).
  CHECK(admitting == 3);
  CHECK(quiet == 3);
  CHECK_FALSE(net.server->packet_ready());
}

TEST_CASE("engine flow: a packet client refuses a stream server (HELLO_ACK bit mismatch)",
          "[engine][flow][packet]") {
  FlowConfig c = small_frame_config();
  c.caps = kCapsPacketMode;
  FakeNet net(c, small_frame_config());
  net.add_link({});
  REQUIRE(net.run_until([&] { return net.client.state() == FlowState::dead; }, 2s));
  REQUIRE(net.client.close_error().has_value());
  CHECK(net.client.close_error()->code == make_error_code(errc::peer_protocol));
}

TEST_CASE("engine flow: a closing flow whose path died takes a new one and still ends cleanly",
          "[engine][flow][close]") {
  FakeNet net(small_frame_config(), small_frame_config());
  const int a = net.add_link({});
  REQUIRE(all_ready(net, 1));
  Transfer t(300'000);
  wire_transfer(net, t);
  REQUIRE(net.run_until([&] { return t.read > 100'000; }, 10s));
  net.client.close(net.now);
  net.fail_link(a);  // the BYE is stuck in the ledger with no path
  REQUIRE(net.client.state() == FlowState::closing);
  net.add_link({});
  REQUIRE(net.run_until([&] { return t.eof && net.client.state() == FlowState::dead; }, 5s));
  CHECK(t.complete());
  CHECK_FALSE(net.client.close_error().has_value());
}

TEST_CASE("engine flow: gathered writes pin ledger frames until transmit_done, even when ACKed",
          "[engine][flow][memory]") {
  // The pool refills from the process-wide frame cache: start it empty whatever ran before in
  // this process, so the pool counts below mean the same alone and after other tests.
  detail::FrameCache::instance().set_limit(0);
  detail::FrameCache::instance().set_limit(detail::FrameCache::kDefaultLimit);
  FlowConfig cfg;
  auto c = FlowCore::client(cfg, make_id(1), make_id(2));
  REQUIRE(c.ok());
  FlowCore& client = *c;
  TimePoint now = TimePoint{} + 1h;
  const PathId cp = *client.add_path({}, now);
  TxGather g;
  REQUIRE(client.poll_transmit_gather(cp, g, 1 << 20, now) > 0);  // HELLO, owned bytes
  std::vector<std::byte> wire;
  for (auto piece : g.pieces) {
    wire.insert(wire.end(), piece.begin(), piece.end());
  }
  CHECK(wire.size() == g.bytes);
  client.transmit_done(cp);
  FlowCore server = server_from_hello(cfg, wire, now);
  const PathId sp = server.path_ids().front();
  const auto server_to_client = [&] {
    std::vector<std::byte> back;
    while (server.poll_transmit(sp, back, 1 << 20, now) > 0) {
    }
    REQUIRE(client.on_receive(cp, back, now).ok());
  };
  server_to_client();  // HELLO_ACK
  REQUIRE(client.state() == FlowState::active);

  // 256 KiB of DATA, gathered: the pieces point into the ledger (no copy of the payload).
  rendr::test::Pattern pattern(7);
  std::vector<std::byte> src(256 * 1024);
  pattern.fill(0, src);
  REQUIRE(*client.write(src, now) == src.size());
  REQUIRE(client.poll_transmit_gather(cp, g, 1 << 20, now) > src.size());
  std::vector<std::byte> sent;
  std::size_t big_pieces = 0;
  for (auto piece : g.pieces) {
    sent.insert(sent.end(), piece.begin(), piece.end());
    const bool in_owned = piece.data() >= g.owned.data() &&
                          piece.data() < g.owned.data() + g.owned.size();
    big_pieces += !in_owned && piece.size() > kMaxPayload ? 1 : 0;
  }
  CHECK(big_pieces == src.size() / kMaxPayload);
  // The peer gets it all and acknowledges: the ledger releases every frame while the "carrier
  // write" is still in flight.
  REQUIRE(server.on_receive(sp, sent, now).ok());
  now += 10ms;  // 256 KiB is less than a coalesced ACK's worth: it goes out after the delay
  server.on_timeout(now);
  server_to_client();
  REQUIRE(client.stats().ledger_frames == 0);
  const auto pooled_before = client.stats().pooled_buffers;
  // New writes take frame buffers from the pool: the pinned ones must not be among them.
  std::vector<std::byte> other(256 * 1024, std::byte{0xEE});
  REQUIRE(*client.write(other, now) == other.size());
  std::vector<std::byte> still;
  for (auto piece : g.pieces) {
    still.insert(still.end(), piece.begin(), piece.end());
  }
  CHECK(still == sent);  // what the carrier is writing did not change under it
  client.transmit_done(cp);
  CHECK(client.stats().pooled_buffers >= pooled_before + src.size() / kMaxPayload);
  // And the server read exactly the pattern.
  std::vector<std::byte> dst(src.size());
  auto r = server.read(dst, now);
  REQUIRE(r.ok());
  REQUIRE(r->bytes == src.size());
  CHECK(pattern.mismatch(0, dst) == -1);
}
