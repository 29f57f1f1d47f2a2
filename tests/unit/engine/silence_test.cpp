// SPDX-License-Identifier: Apache-2.0
// The silence decision (judge_silence) and the timer-lateness accounting (TimerLateness), then
// both inside a FlowCore on a fake clock: a blackholed path whose socket still reports unread
// input, or whose timer runs on a starved thread, is judged again instead of failed - and is
// failed all the same within two freshness windows (docs/engine.md "How silence is decided").
#include "fake_net.hpp"

#include <rendr/engine/core/flow.hpp>
#include <rendr/engine/core/silence.hpp>

#include <catch2/catch.hpp>

using namespace rendr;
using namespace rendr::engine;
using namespace rendr::engine::test;
using namespace std::chrono_literals;

namespace {

const TimePoint kT0 = TimePoint{} + 1000s;

SilenceInput at(Duration since_probe, Duration lateness = 0ms, std::size_t pending = 0) {
  SilenceInput in;
  in.now = kT0 + since_probe;
  in.first_unanswered = kT0;
  in.window = 500ms;
  in.own_lateness = lateness;
  in.pending_bytes = pending;
  return in;
}

}  // namespace

TEST_CASE("engine silence: judge_silence verdicts on a fake clock", "[engine][silence]") {
  SilenceInput heard = at(900ms);
  heard.first_unanswered.reset();
  CHECK(judge_silence(heard).kind == SilenceKind::heard);

  const auto early = judge_silence(at(499ms, 300ms, 10));
  CHECK(early.kind == SilenceKind::not_yet);
  REQUIRE(early.recheck.has_value());
  CHECK(*early.recheck == kT0 + 500ms);

  CHECK(judge_silence(at(500ms)).kind == SilenceKind::silent);
  CHECK(judge_silence(at(600ms, 19ms)).kind == SilenceKind::silent);  // punctual enough

  const auto pending = judge_silence(at(600ms, 0ms, 1));
  CHECK(pending.kind == SilenceKind::pending);
  REQUIRE(pending.recheck.has_value());
  CHECK(*pending.recheck == kT0 + 600ms + kPendingRecheck);

  const auto starved = judge_silence(at(800ms, 300ms));
  CHECK(starved.kind == SilenceKind::starved);
  REQUIRE(starved.recheck.has_value());
  CHECK(*starved.recheck == kT0 + 1000ms);  // capped at two windows, not 800 + 300 ms

  // Unread input is looked at before our own lateness.
  CHECK(judge_silence(at(600ms, 300ms, 5)).kind == SilenceKind::pending);

  // Two windows: no reprieve any more, whatever the socket or the thread say.
  CHECK(judge_silence(at(1000ms, 400ms, 7)).kind == SilenceKind::silent);
  CHECK(judge_silence(at(1500ms, 0ms, 1)).kind == SilenceKind::silent);
}

TEST_CASE("engine silence: TimerLateness keeps max and a histogram of lateness",
          "[engine][silence]") {
  TimerLateness t;
  const TimePoint d = kT0;
  t.record_fire(d, d - 1ms);  // ran early (clock granularity): 0
  t.record_fire(d, d + 999us);
  t.record_fire(d, d + 1ms);   // < 5 ms
  t.record_fire(d, d + 19ms);  // < 20 ms
  t.record_fire(d, d + 20ms);  // < 100 ms
  t.record_fire(d, d + 150ms);
  t.record_fire(d, d + 499ms);
  t.record_fire(d, d + 2s);
  t.record_handler(3ms);
  t.record_handler(1ms);
  t.record_lock_wait(7ms);
  t.record_lock_wait(2ms);
  t.record_armed_late(40ms, DeadlineKind::rto);
  t.record_armed_late(10ms, DeadlineKind::ack);
  t.record_armed_late(5ms, DeadlineKind::rto);
  CHECK(t.fired() == 8);
  CHECK(t.max_late() == 2s);
  CHECK(t.last_late() == 2s);
  CHECK(t.max_handler() == 3ms);
  CHECK(t.max_lock_wait() == 7ms);
  CHECK(t.armed_late() == 3);
  CHECK(t.max_armed_late() == 40ms);
  CHECK(t.armed_late_by_kind()[static_cast<std::size_t>(DeadlineKind::rto)] == 2);
  CHECK(t.armed_late_by_kind()[static_cast<std::size_t>(DeadlineKind::ack)] == 1);
  CHECK(t.max_armed_late_by_kind()[static_cast<std::size_t>(DeadlineKind::rto)] == 40ms);
  CHECK(t.max_armed_late_by_kind()[static_cast<std::size_t>(DeadlineKind::ack)] == 10ms);
  const std::array<std::uint64_t, TimerLateness::kBuckets> want{2, 1, 1, 1, 2, 1};
  CHECK(t.histogram() == want);
}

namespace {

FlowConfig fixed_window_config() {
  FlowConfig c = fast_probe_config();
  c.fresh_min = 500ms;
  c.fresh_max = 500ms;
  return c;
}

// silent_for: blackhole a lone path and return how long until the client declared it down.
Duration silent_for(FakeNet& net) {
  const int a = net.add_link({Framing::stream, 5ms});
  REQUIRE(net.run_until([&] { return net.client.state() == FlowState::active; }, 1s));
  (void)net.run_until([] { return false; }, 200ms);  // probes and replies both ways
  net.blackhole(a);
  const TimePoint cut = net.now;
  // A step moves the clock on to the next event after its timers ran: with nothing left to
  // do after the path died that would be the migration budget, so read the time in 1 ms steps.
  net.max_step = 1ms;
  REQUIRE(net.run_until([&] { return net.client.stats().paths_lost > 0; }, 5s));
  return net.now - cut;
}

}  // namespace

TEST_CASE("engine silence: a blackholed path is failed after one window on a punctual thread",
          "[engine][silence]") {
  FakeNet net(fixed_window_config(), fixed_window_config());
  net.client_timer_ctx = [] {
    FlowCore::TimerContext ctx;
    ctx.pending_input = [](PathId) { return std::size_t{0}; };
    return ctx;
  };
  const Duration took = silent_for(net);
  // The window runs from the first probe nothing answered: one sent less than a round trip
  // (10 ms) before the cut lost its reply to the blackhole too.
  CHECK(took >= 490ms);
  CHECK(took <= 540ms);
  CHECK(net.client.stats().silence_pending_reprieves == 0);
  CHECK(net.client.stats().silence_starved_reprieves == 0);
}

TEST_CASE(
    "engine silence: unread input on the socket postpones the verdict - at most to two "
    "windows",
    "[engine][silence]") {
  FakeNet net(fixed_window_config(), fixed_window_config());
  std::size_t asked = 0;
  net.client_timer_ctx = [&asked] {
    FlowCore::TimerContext ctx;
    ctx.pending_input = [&asked](PathId) {
      ++asked;
      return std::size_t{100};  // a socket that is never drained (worst case)
    };
    return ctx;
  };
  const Duration took = silent_for(net);
  CHECK(took >= 980ms);  // the first unanswered probe went out at most 20 ms after the cut
  CHECK(took <= 1040ms);
  CHECK(asked > 0);
  CHECK(net.client.stats().silence_pending_reprieves > 0);
  CHECK(net.spins == 0);  // rechecks are spaced (kPendingRecheck), not a busy loop
}

TEST_CASE(
    "engine silence: a starved thread gives the peer as long as it was late, within two "
    "windows",
    "[engine][silence]") {
  FakeNet net(fixed_window_config(), fixed_window_config());
  net.client_timer_ctx = [] {
    FlowCore::TimerContext ctx;
    ctx.lateness = 150ms;
    return ctx;
  };
  const Duration took = silent_for(net);
  CHECK(took >= 650ms);
  CHECK(took <= 1040ms);
  CHECK(net.client.stats().silence_starved_reprieves > 0);
  CHECK(net.client.stats().silence_pending_reprieves == 0);
}

TEST_CASE("engine silence: a path that speaks again within the reprieve stays up",
          "[engine][silence]") {
  // A 650 ms outage on a datagram link (everything lost, then nothing): longer than the
  // 500 ms window, shorter than two. Only the client is judged here (the server's window: 2 s).
  FlowConfig server = fixed_window_config();
  server.fresh_min = 2s;
  server.fresh_max = 2s;
  for (const bool starved : {false, true}) {
    FakeNet net(fixed_window_config(), server);
    const int a = net.add_link({Framing::datagram, 5ms});
    REQUIRE(net.run_until([&] { return net.client.state() == FlowState::active; }, 1s));
    (void)net.run_until([] { return false; }, 200ms);
    net.client_timer_ctx = [starved] {
      FlowCore::TimerContext ctx;
      ctx.lateness = starved ? 150ms : 0ms;
      return ctx;
    };
    net.set_loss(a, 1.0);
    (void)net.run_until([] { return false; }, 650ms);
    net.set_loss(a, 0.0);
    (void)net.run_until([] { return false; }, 2s);
    INFO("starved " << starved);
    if (starved) {
      CHECK(net.client.stats().paths_lost == 0);
      CHECK(net.client.stats().silence_starved_reprieves > 0);
    } else {
      CHECK(net.client.stats().paths_lost == 1);  // the same outage on a punctual thread
    }
  }
}
