// SPDX-License-Identifier: Apache-2.0
// DrainPlan step by step with a fake clock: when the agent stops waiting for exported sockets'
// send queues to drain before the freeze.
#include <rendr/agents/drain.hpp>

#include <catch2/catch.hpp>

using namespace rendr::agents;
using std::chrono::milliseconds;
using Clock = DrainPlan::Clock;

TEST_CASE("drain: stops once every flow holds little", "[agents][drain]") {
  const auto t0 = Clock::time_point{} + std::chrono::hours(1);
  DrainPlan p({}, 4, t0);
  CHECK_FALSE(p.observe(4 << 20, t0).has_value());
  CHECK_FALSE(p.observe(2 << 20, t0 + milliseconds(1)).has_value());
  CHECK(p.observe(4 * 64 * 1024, t0 + milliseconds(2)) == DrainStop::drained);
  CHECK(p.first() == (4U << 20));
}

TEST_CASE("drain: idle flows stop at the first look", "[agents][drain]") {
  const auto t0 = Clock::time_point{} + std::chrono::hours(1);
  DrainPlan p({}, 100, t0);
  CHECK(p.observe(0, t0) == DrainStop::drained);
}

TEST_CASE("drain: a queue that stops shrinking ends the wait (closed window)", "[agents][drain]") {
  const auto t0 = Clock::time_point{} + std::chrono::hours(1);
  DrainPlan p({}, 1, t0);
  CHECK_FALSE(p.observe(3 << 20, t0).has_value());
  CHECK_FALSE(p.observe(2 << 20, t0 + milliseconds(5)).has_value());
  // No progress from 5 ms on: stalled once 10 ms passed without any.
  CHECK_FALSE(p.observe(2 << 20, t0 + milliseconds(14)).has_value());
  CHECK(p.observe(2 << 20, t0 + milliseconds(15)) == DrainStop::stalled);
}

TEST_CASE("drain: a slow but steady drain is cut at the maximum", "[agents][drain]") {
  const auto t0 = Clock::time_point{} + std::chrono::hours(1);
  DrainOptions o;
  o.max = milliseconds(50);
  DrainPlan p(o, 1, t0);
  std::uint64_t q = 8 << 20;
  for (int ms = 0; ms < 50; ++ms) {
    INFO("at " << ms << " ms");
    REQUIRE_FALSE(p.observe(q, t0 + milliseconds(ms)).has_value());
    q -= 4096;  // progress every millisecond
  }
  CHECK(p.observe(q, t0 + milliseconds(50)) == DrainStop::timed_out);
}

TEST_CASE("drain: max 0 turns it off", "[agents][drain]") {
  const auto t0 = Clock::time_point{} + std::chrono::hours(1);
  DrainOptions o;
  o.max = milliseconds(0);
  DrainPlan p(o, 1, t0);
  CHECK(p.observe(8 << 20, t0) == DrainStop::disabled);
}
