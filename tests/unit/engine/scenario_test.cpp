// SPDX-License-Identifier: Apache-2.0
// Longer-running scenarios in fake time: quality switches, zombie protection, handshake retry,
// race without stalls, path re-add (G5 shape) and an echo across a silent path death (G4 shape).
#include "fake_net.hpp"
#include "flow_transfer.hpp"

#include <rendr/engine/errors.hpp>
#include <rendr/engine/core/flow.hpp>

#include <catch2/catch.hpp>

#include "support/pattern.hpp"

#include <map>

using namespace rendr;
using namespace rendr::engine;
using namespace rendr::engine::test;
using namespace std::chrono_literals;

namespace {

// Echo: the client sends a numbered 64-byte message every |period|; the server echoes each
// message back; the client records each round-trip latency. Messages are verified in order.
struct Echo {
  Duration period = 10ms;
  TimePoint next_send{};
  std::uint32_t sent = 0;
  std::uint32_t echoed_back = 0;
  std::map<std::uint32_t, TimePoint> sent_at;
  std::vector<Duration> rtts;
  std::vector<std::byte> server_buf;
  std::vector<std::byte> client_buf;
  bool order_ok = true;
  std::uint32_t server_seen = 0;

  static std::vector<std::byte> message(std::uint32_t n) {
    std::vector<std::byte> m(64, std::byte{0});
    for (int i = 0; i < 4; ++i) {
      m[static_cast<std::size_t>(i)] = static_cast<std::byte>(n >> (8 * i));
    }
    return m;
  }
  static std::uint32_t number(std::span<const std::byte> m) {
    std::uint32_t n = 0;
    for (int i = 0; i < 4; ++i) {
      n |= static_cast<std::uint32_t>(m[static_cast<std::size_t>(i)]) << (8 * i);
    }
    return n;
  }

  void run(FakeNet& net, std::uint32_t limit) {
    if (net.client.state() == FlowState::active && sent < limit && net.now >= next_send) {
      auto w = net.client.write(message(sent), net.now);
      REQUIRE(w.ok());
      REQUIRE(*w == 64);
      sent_at[sent] = net.now;
      ++sent;
      next_send = net.now + period;
    }
    std::vector<std::byte> buf(4096);
    if (net.server) {
      while (true) {
        auto r = net.server->read(buf, net.now);
        REQUIRE(r.ok());
        if (r->bytes == 0) {
          break;
        }
        server_buf.insert(server_buf.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(r->bytes));
      }
      while (server_buf.size() >= 64) {
        const auto n = number(server_buf);
        order_ok = order_ok && n == server_seen;
        ++server_seen;
        auto w = net.server->write(std::span(server_buf).first(64), net.now);
        REQUIRE(w.ok());
        REQUIRE(*w == 64);
        server_buf.erase(server_buf.begin(), server_buf.begin() + 64);
      }
    }
    while (true) {
      auto r = net.client.read(buf, net.now);
      REQUIRE(r.ok());
      if (r->bytes == 0) {
        break;
      }
      client_buf.insert(client_buf.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(r->bytes));
    }
    while (client_buf.size() >= 64) {
      const auto n = number(client_buf);
      order_ok = order_ok && n == echoed_back;
      rtts.push_back(net.now - sent_at.at(n));
      ++echoed_back;
      client_buf.erase(client_buf.begin(), client_buf.begin() + 64);
    }
  }
  [[nodiscard]] Duration worst() const {
    return rtts.empty() ? Duration{0} : *std::max_element(rtts.begin(), rtts.end());
  }
};

}  // namespace

TEST_CASE("engine scenario: prime switches to a clearly better path after the dwell, once per "
          "cooldown, without loss",
          "[engine][scenario][prime]") {
  FlowConfig c = fast_probe_config();
  c.dwell = 1s;
  c.cooldown = 10s;
  FakeNet net(c, c);
  const int a = net.add_link({Framing::stream, 5ms});
  const int b = net.add_link({Framing::stream, 5ms});
  REQUIRE(all_ready(net, 2));
  Echo echo;
  net.app = [&echo](FakeNet& n) { echo.run(n, 1000000); };
  REQUIRE(net.run_until([&] { return echo.echoed_back > 20; }, 5s));
  REQUIRE(net.client.active_path() == net.client_path(a));
  net.set_delay(a, 60ms);  // a turns slow: score ~120 ms vs ~10 ms
  const TimePoint slow = net.now;
  REQUIRE(net.run_until([&] { return net.client.active_path() == net.client_path(b); }, 10s));
  CHECK(net.now - slow >= 1s);  // not before the dwell
  CHECK(net.now - slow < 4s);
  bool quality = false;
  for (const auto& e : net.client_events) {
    if (const auto* m = std::get_if<EvMigrated>(&e)) {
      quality = quality || m->cause == MigrateCause::quality;
    }
  }
  CHECK(quality);
  // a recovers and becomes much better than b: the cooldown holds the next switch back.
  net.set_delay(a, 1ms);
  net.set_delay(b, 40ms);
  const TimePoint better = net.now;
  REQUIRE(net.run_until([&] { return net.client.active_path() == net.client_path(a); }, 20s));
  CHECK(net.now - better >= 5s);  // cooldown (10 s since the first switch) dominates the dwell
  const std::uint32_t target = echo.sent + 50;
  net.app = [&echo, target](FakeNet& n) { echo.run(n, target); };
  REQUIRE(net.run_until([&] { return echo.echoed_back == target; }, 10s));
  CHECK(echo.order_ok);
  CHECK(net.client.stats().migration_count == 2);
}

TEST_CASE("engine scenario: death migrations with no payload flowing end as zombie",
          "[engine][scenario][zombie]") {
  FakeNet net(fast_probe_config(), fast_probe_config());
  const int a = net.add_link({});
  const int b = net.add_link({});
  net.add_link({});
  REQUIRE(all_ready(net, 3));
  net.fail_link(a);
  CHECK(net.client.state() == FlowState::active);
  net.fail_link(b);
  CHECK(net.client.state() == FlowState::dead);
  REQUIRE(net.client.close_error().has_value());
  CHECK(net.client.close_error()->code == make_error_code(errc::zombie));
  // The BYE(zombie) reaches the server over the last path.
  REQUIRE(net.run_until([&] { return net.server->state() == FlowState::dead; }, 2s));
  CHECK(net.server->close_error()->code == make_error_code(errc::zombie));
}

TEST_CASE("engine scenario: payload between path deaths keeps the flow alive",
          "[engine][scenario][zombie]") {
  FakeNet net(fast_probe_config(), fast_probe_config());
  const int a = net.add_link({});
  const int b = net.add_link({});
  const int c = net.add_link({});
  net.add_link({});
  REQUIRE(all_ready(net, 4));
  Echo echo;
  net.app = [&echo](FakeNet& n) { echo.run(n, 1000000); };
  for (const int l : {a, b, c}) {
    const auto before = echo.echoed_back;
    REQUIRE(net.run_until([&] { return echo.echoed_back > before + 3; }, 5s));
    net.fail_link(l);
    REQUIRE(net.client.state() == FlowState::active);
  }
  REQUIRE(net.run_until([&] { return echo.echoed_back > 100; }, 10s));
  CHECK(echo.order_ok);
  CHECK(net.client.stats().migration_count == 3);
}

TEST_CASE("engine scenario: the HELLO carrier dies before HELLO_ACK, HELLO goes on the next",
          "[engine][scenario][handshake]") {
  FakeNet net(fast_probe_config(), fast_probe_config());
  const int a = net.add_link({Framing::stream, 20ms});
  const int b = net.add_link({Framing::stream, 20ms});
  net.fail_link(a);  // before anything was delivered
  REQUIRE(net.run_until([&] { return net.client.state() == FlowState::active; }, 2s));
  CHECK(net.client.active_path() == net.client_path(b));
  REQUIRE(net.server.has_value());
  CHECK(net.server->flow_id() == net.client.flow_id());
}

TEST_CASE("engine scenario: race keeps delivering without a stall when one path goes silent",
          "[engine][scenario][race]") {
  FlowConfig c = fast_probe_config();
  c.mode = Mode::race;
  FakeNet net(c, c);
  const int a = net.add_link({Framing::stream, 5ms});
  net.add_link({Framing::stream, 7ms});
  REQUIRE(all_ready(net, 2));
  Echo echo;
  echo.period = 5ms;
  net.app = [&echo](FakeNet& n) { echo.run(n, 1000000); };
  REQUIRE(net.run_until([&] { return echo.echoed_back > 50; }, 5s));
  const auto before = echo.rtts.size();
  net.blackhole(a);
  REQUIRE(net.run_until([&] { return echo.echoed_back > 400; }, 10s));
  CHECK(echo.order_ok);
  Duration worst_after{0};
  for (std::size_t i = before; i < echo.rtts.size(); ++i) {
    worst_after = std::max(worst_after, echo.rtts[i]);
  }
  // The surviving path's RTT is 14 ms; race adds no failover stall.
  CHECK(worst_after <= 20ms);
  CHECK(net.client.stats().paths.size() == 1);  // the silent path was eventually dropped
}

TEST_CASE("engine scenario: G4 shape - echo across a silent drop of the active path (prime)",
          "[engine][scenario][failover]") {
  FakeNet net(fast_probe_config(), fast_probe_config());
  const int a = net.add_link({Framing::stream, 5ms});
  const int b = net.add_link({Framing::stream, 5ms});
  REQUIRE(all_ready(net, 2));
  Echo echo;
  net.app = [&echo](FakeNet& n) { echo.run(n, 1000000); };
  REQUIRE(net.run_until([&] { return echo.echoed_back > 50; }, 5s));
  net.blackhole(a);
  REQUIRE(net.run_until([&] { return echo.echoed_back > 300; }, 10s));
  CHECK(echo.order_ok);
  CHECK(net.client.active_path() == net.client_path(b));
  CHECK(net.server->active_path() == *net.server_path(b));
  // Worst echo = detection (freshness window: 100 ms floor here) + replay, well under 500 ms.
  CHECK(echo.worst() <= 500ms);
  CHECK(echo.worst() >= 100ms);  // it did have to wait for detection
}

TEST_CASE("engine scenario: G5 shape - a re-added path rejoins without spurious reordering",
          "[engine][scenario][paths]") {
  FakeNet net(fast_probe_config(), fast_probe_config());
  const int a = net.add_link({Framing::stream, 5ms});
  net.add_link({Framing::stream, 6ms});
  REQUIRE(all_ready(net, 2));
  Echo echo;
  net.app = [&echo](FakeNet& n) { echo.run(n, 1000000); };
  REQUIRE(net.run_until([&] { return echo.echoed_back > 50; }, 5s));
  net.blackhole(a);
  REQUIRE(net.run_until([&] { return net.client.stats().paths.size() == 1; }, 5s));
  REQUIRE(net.run_until([&] { return echo.echoed_back > 150; }, 5s));
  const auto hwm_before = net.server->stats().recv_queue_hwm;
  const auto dups_before = net.server->stats().recv_dups + net.client.stats().recv_dups;
  const int c = net.add_link({Framing::stream, 5ms});  // the operator's add_path
  REQUIRE(all_ready(net, 2));
  REQUIRE(net.server_path(c).has_value());
  REQUIRE(net.run_until([&] { return echo.echoed_back > 400; }, 10s));
  CHECK(echo.order_ok);
  CHECK(net.server->stats().recv_dups + net.client.stats().recv_dups == dups_before);
  CHECK(net.server->stats().recv_queue_hwm == hwm_before);
  CHECK(hwm_before <= 2);
}

namespace {

struct G1Run {
  Duration elapsed{0};
  Duration worst_gap{0};
  bool intact = false;
  std::uint64_t migrations = 0;
};

// run_g1 moves |total| bytes over two rate-limited stream paths; at each fraction in |at| the
// client migrates to the other path. Fake-time duration and the longest reader stall are kept.
G1Run run_g1(std::uint64_t total, const std::vector<double>& at) {
  FlowConfig c = fast_probe_config();
  c.ledger_max_bytes = 4U << 20;
  c.ledger_max_frames = 1024;
  c.reorder_max_frames = 2048;
  c.recv_window_bytes = 4U << 20;
  FakeNet net(c, c);
  const LinkSpec spec{Framing::stream, 10ms, 0.0, 512 * 1024, 10'000};  // 10 MB/s, 10 ms
  const int a = net.add_link(spec);
  const int b = net.add_link(spec);
  REQUIRE(all_ready(net, 2));
  rendr::test::Pattern pattern(11);
  std::uint64_t written = 0;
  std::uint64_t read = 0;
  bool ok = true;
  TimePoint last_progress = net.now;
  Duration worst{0};
  std::vector<std::byte> buf(64 * 1024);
  net.app = [&](FakeNet& n) {
    while (written < total) {
      const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), total - written));
      pattern.fill(written, std::span(buf).first(k));
      auto w = n.client.write(std::span(buf).first(k), n.now);
      REQUIRE(w.ok());
      if (*w == 0) {
        break;
      }
      written += *w;
    }
    while (true) {
      auto r = n.server->read(buf, n.now);
      REQUIRE(r.ok());
      if (r->bytes == 0) {
        break;
      }
      ok = ok && pattern.mismatch(read, std::span(buf).first(r->bytes)) < 0;
      read += r->bytes;
      worst = std::max(worst, n.now - last_progress);
      last_progress = n.now;
    }
  };
  const TimePoint start = net.now;
  std::size_t next = 0;
  int target = b;
  REQUIRE(net.run_until(
      [&] {
        if (next < at.size() && static_cast<double>(read) >= at[next] * static_cast<double>(total)) {
          REQUIRE(net.client.migrate(net.client_path(target), net.now).ok());
          target = target == b ? a : b;
          ++next;
        }
        return read == total;
      },
      120s));
  G1Run r;
  r.elapsed = net.now - start;
  r.worst_gap = worst;
  r.intact = ok && read == total;
  r.migrations = net.client.stats().migration_count;
  return r;
}

}  // namespace

TEST_CASE("engine scenario: G1 shape - forced migrations at 30/50/70 % cost <= 10 % time and "
          "never stall 500 ms",
          "[engine][scenario][g1]") {
  constexpr std::uint64_t kTotal = 40'000'000;
  const G1Run base = run_g1(kTotal, {});
  const G1Run mig = run_g1(kTotal, {0.3, 0.5, 0.7});
  INFO("baseline " << std::chrono::duration_cast<std::chrono::milliseconds>(base.elapsed).count()
                   << " ms, with migrations "
                   << std::chrono::duration_cast<std::chrono::milliseconds>(mig.elapsed).count()
                   << " ms, worst gap "
                   << std::chrono::duration_cast<std::chrono::milliseconds>(mig.worst_gap).count()
                   << " ms");
  REQUIRE(base.intact);
  REQUIRE(mig.intact);
  CHECK(mig.migrations == 3);
  CHECK(base.elapsed >= 3s);  // 40 MB at 10 MB/s: the rate limit really applied
  CHECK(static_cast<double>(mig.elapsed.count()) <= 1.10 * static_cast<double>(base.elapsed.count()));
  CHECK(mig.worst_gap < 500ms);
}

TEST_CASE("engine scenario: a carrier that never answers the HELLO times out, the next one "
          "carries it",
          "[engine][scenario][handshake]") {
  FlowConfig c = fast_probe_config();
  c.handshake_timeout = 3s;
  FakeNet net(c, c);
  const int a = net.add_link({});
  net.blackhole(a);  // a middlebox eats everything: no error, no answer
  const int b = net.add_link({});
  REQUIRE(net.run_until([&] { return net.client.state() == FlowState::active; }, 10s));
  CHECK(net.client.active_path() == net.client_path(b));
  CHECK(net.now - (TimePoint{} + 1h) >= 3s);
  bool timed_out = false;
  for (const auto& e : net.client_events) {
    if (const auto* d = std::get_if<EvPathDown>(&e)) {
      timed_out = timed_out || (d->path == net.client_path(a) &&
                                d->reason.message().find("HELLO_ACK") != std::string::npos);
    }
  }
  CHECK(timed_out);
}

TEST_CASE("engine scenario: a path whose carrier cannot take the flow's frames is refused",
          "[engine][scenario][paths]") {
  FlowConfig c = fast_probe_config();  // max_payload 32 KiB
  auto cl = FlowCore::client(c, make_id(1), make_id(2));
  REQUIRE(cl.ok());
  auto r = cl->add_path(PathOptions{Framing::datagram, "udp", 1392}, TimePoint{});
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == make_error_code(errc::invalid_config));
  CHECK_THAT(r.error().message(), Catch::Contains("max_frame 1392"));
  c.max_payload = 1384;  // udpflow: 1 400 - 8 udpflow header - 8 frame header
  auto ok = FlowCore::client(c, make_id(1), make_id(2));
  REQUIRE(ok.ok());
  CHECK(ok->add_path(PathOptions{Framing::datagram, "udp", 1392}, TimePoint{}).ok());
}

TEST_CASE("engine scenario: prime does not flee its own bulk load (self-load guard)",
          "[engine][scenario][prime]") {
  FlowConfig c = fast_probe_config();
  c.ledger_max_bytes = 4U << 20;
  c.ledger_max_frames = 1024;
  c.reorder_max_frames = 2048;
  c.recv_window_bytes = 4U << 20;
  c.dwell = 2s;
  c.cooldown = 5s;
  FakeNet net(c, c);
  // 5 MB/s paths with 512 KiB of carrier buffering: bulk data queues ~100 ms in front of probes.
  const LinkSpec spec{Framing::stream, 10ms, 0.0, 512 * 1024, 5'000};
  const int a = net.add_link(spec);
  net.add_link(spec);
  REQUIRE(all_ready(net, 2));
  rendr::test::Pattern pattern(3);
  std::uint64_t written = 0;
  std::uint64_t read = 0;
  std::vector<std::byte> buf(64 * 1024);
  net.app = [&](FakeNet& n) {
    while (true) {
      pattern.fill(written, buf);
      auto w = n.client.write(buf, n.now);
      REQUIRE(w.ok());
      if (*w == 0) {
        break;
      }
      written += *w;
    }
    while (true) {
      auto r = n.server->read(buf, n.now);
      REQUIRE(r.ok());
      if (r->bytes == 0) {
        break;
      }
      REQUIRE(pattern.mismatch(read, std::span(buf).first(r->bytes)) < 0);
      read += r->bytes;
    }
  };
  net.run_until([] { return false; }, 15s);
  CHECK(read > 50'000'000);  // the path really was saturated for the whole run
  CHECK(net.client.active_path() == net.client_path(a));
  CHECK(net.client.stats().migration_count == 0);
}

TEST_CASE("engine scenario: silent death is detected when the freshness window spans more "
          "probes than are kept outstanding (fast probing, long RTT)",
          "[engine][scenario][failover]") {
  FlowConfig c = fast_probe_config();
  c.probe_interval = 10ms;  // 16 outstanding probes = 160 ms < the 500 ms window below
  c.fresh_min = 500ms;
  FakeNet net(c, c);
  const int a = net.add_link({Framing::stream, 5ms});
  const int b = net.add_link({Framing::stream, 5ms});
  REQUIRE(all_ready(net, 2));
  net.blackhole(a);
  const TimePoint cut = net.now;
  REQUIRE(net.run_until([&] { return net.client.active_path() == net.client_path(b); }, 5s));
  CHECK(net.now - cut >= 500ms);
  CHECK(net.now - cut <= 700ms);
}

TEST_CASE("engine scenario: lost HELLO / HELLO_ACK on a datagram carrier are repeated",
          "[engine][scenario][handshake]") {
  FakeNet net(fast_probe_config(), fast_probe_config(), 5);
  const int a = net.add_link({Framing::datagram, 5ms, 1.0});  // everything lost at first
  REQUIRE_FALSE(net.run_until([&] { return net.client.state() == FlowState::active; }, 700ms));
  net.set_loss(a, 0.0);
  REQUIRE(net.run_until([&] { return net.client.state() == FlowState::active; }, 2s));
  // And a BRIDGE_TAG whose answer is lost: the second link drops everything for a while.
  const int b = net.add_link({Framing::datagram, 5ms, 1.0});
  net.run_until([] { return false; }, 500ms);
  net.set_loss(b, 0.0);
  REQUIRE(all_ready(net, 2));
  CHECK(net.server->path_ids().size() >= 2);
}
