// SPDX-License-Identifier: Apache-2.0
// FlowActivation step by step: the order a staged kernel socket goes live in at COMMIT (the
// freeze here lifts only after repair-off and the replay), and what each failure leads to.
#include <rendr/agents/activation.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace rendr::agents;
using S = ActivationStep;

namespace {

// Script: the answers the I/O gives, in order; run() drives the core with them and returns the
// steps it asked for.
struct Script {
  bool hold_ok = true;
  bool repair_ok = true;
  std::vector<std::size_t> taken;  // packets each replay_held round finds
};

std::vector<S> run(FlowActivation& a, const Script& sc) {
  std::vector<S> steps;
  std::size_t round = 0;
  S s = a.start();
  for (int guard = 0; guard < 32 && !a.finished(); ++guard) {
    steps.push_back(s);
    switch (s) {
      case S::hold: s = a.on_hold(sc.hold_ok); break;
      case S::lift_first: s = a.on_lifted_first(); break;
      case S::leave_repair: s = a.on_left_repair(sc.repair_ok); break;
      case S::replay_held:
        s = a.on_replayed(round < sc.taken.size() ? sc.taken[round] : 0);
        ++round;
        break;
      case S::lift: s = a.on_lifted(); break;
      case S::drop_freeze: s = a.on_dropped(); break;
      case S::done:
      case S::failed: break;
    }
  }
  steps.push_back(s);
  return steps;
}

}  // namespace

TEST_CASE("activation: frozen here, the freeze lifts only after repair-off and the replay",
          "[agents][activation]") {
  FlowActivation a(true);
  const auto steps = run(a, Script{.taken = {5, 0}});
  CHECK(steps == std::vector<S>{S::hold, S::leave_repair, S::replay_held, S::replay_held,
                                S::lift, S::done});
  CHECK(a.finished());
  CHECK(a.step() == S::done);
  CHECK_FALSE(a.lifted_early());
  CHECK(a.replay_rounds() == 2);
}

TEST_CASE("activation: nothing held here goes straight to the lift after one look",
          "[agents][activation]") {
  FlowActivation a(true);
  CHECK(run(a, Script{}) ==
        std::vector<S>{S::hold, S::leave_repair, S::replay_held, S::lift, S::done});
  CHECK(a.replay_rounds() == 1);
}

TEST_CASE("activation: a peer that keeps sending is held for a bounded number of rounds",
          "[agents][activation]") {
  FlowActivation a(true);
  const auto steps = run(a, Script{.taken = {9, 9, 9, 9, 9, 9}});
  CHECK(a.replay_rounds() == FlowActivation::kMaxReplayRounds);
  REQUIRE(steps.size() >= 2);
  CHECK(steps[steps.size() - 2] == S::lift);  // what came after the last round: fed by lift
  CHECK(steps.back() == S::done);
}

TEST_CASE("activation: not frozen here, repair-off is the only step", "[agents][activation]") {
  FlowActivation a(false);
  CHECK(run(a, Script{}) == std::vector<S>{S::leave_repair, S::done});
}

TEST_CASE("activation: a hold that fails falls back to lifting before repair-off",
          "[agents][activation]") {
  FlowActivation a(true);
  CHECK(run(a, Script{.hold_ok = false, .repair_ok = true, .taken = {}}) ==
        std::vector<S>{S::hold, S::lift_first, S::leave_repair, S::done});
  CHECK(a.lifted_early());
  CHECK(a.replay_rounds() == 0);
}

TEST_CASE("activation: a failed repair-off lifts the freeze here and fails",
          "[agents][activation]") {
  SECTION("frozen here") {
    FlowActivation a(true);
    CHECK(run(a, Script{.hold_ok = true, .repair_ok = false, .taken = {}}) ==
          std::vector<S>{S::hold, S::leave_repair, S::drop_freeze, S::failed});
  }
  SECTION("after the fallback lift (nothing left to lift)") {
    FlowActivation a(true);
    CHECK(run(a, Script{.hold_ok = false, .repair_ok = false, .taken = {}}) ==
          std::vector<S>{S::hold, S::lift_first, S::leave_repair, S::failed});
  }
  SECTION("not frozen here") {
    FlowActivation a(false);
    CHECK(run(a, Script{.hold_ok = true, .repair_ok = false, .taken = {}}) ==
          std::vector<S>{S::leave_repair, S::failed});
  }
}

TEST_CASE("activation: answers to steps not asked for change nothing", "[agents][activation]") {
  FlowActivation a(true);
  // Before start(): no event is taken.
  CHECK(a.on_hold(true) == S::hold);
  CHECK(a.start() == S::hold);
  CHECK(a.start() == S::hold);  // start() twice: same step
  // The lift cannot come before repair-off, nor a replay round.
  CHECK(a.on_lifted() == S::hold);
  CHECK(a.on_replayed(3) == S::hold);
  CHECK(a.on_left_repair(true) == S::hold);
  CHECK(a.on_hold(true) == S::leave_repair);
  CHECK(a.on_hold(false) == S::leave_repair);  // a late hold answer
  CHECK(a.on_lifted() == S::leave_repair);
  CHECK(a.on_left_repair(true) == S::replay_held);
  CHECK(a.on_left_repair(false) == S::replay_held);
  CHECK(a.on_dropped() == S::replay_held);
  CHECK(a.on_replayed(0) == S::lift);
  CHECK(a.on_replayed(0) == S::lift);
  CHECK(a.on_lifted() == S::done);
  // Finished: nothing moves it.
  CHECK(a.on_lifted() == S::done);
  CHECK(a.on_dropped() == S::done);
  CHECK(std::string(to_string(a.step())) == "done");
}
