// SPDX-License-Identifier: Apache-2.0
// Server flows that never heard from their client after the HELLO: once every carrier is gone
// they end after FlowConfig::silent_budget, while a flow whose client spoke keeps the whole
// migration budget to come back (docs/engine.md "Listener limits").
#include "fake_net.hpp"

#include <rendr/engine/errors.hpp>
#include <rendr/engine/core/flow.hpp>

#include <catch2/catch.hpp>

using namespace rendr;
using namespace rendr::engine;
using namespace rendr::engine::test;
using namespace std::chrono_literals;

namespace {

FlowConfig server_config(Duration silent) {
  FlowConfig c = fast_probe_config();
  c.migration_budget = 30s;
  c.silent_budget = silent;
  return c;
}

// run_for moves the fake clock |d| on (the predicate never holds).
void run_for(FakeNet& net, Duration d) { (void)net.run_until([] { return false; }, d); }

}  // namespace

TEST_CASE("engine silent flow: a HELLO whose carrier closed at once ends after the silent "
          "budget",
          "[engine][silent]") {
  FakeNet net(fast_probe_config(), server_config(3s));
  const int a = net.add_link({});
  // The server flow exists as soon as the HELLO arrived; the carrier closes before the
  // client could say anything more (a flood of HELLOs, each carrier closed at once).
  REQUIRE(net.run_until([&] { return net.server.has_value(); }, 1s));
  net.fail_link(a);
  const TimePoint lost = net.now;
  REQUIRE(net.server->state() == FlowState::migrating);
  run_for(net, 2s);
  CHECK(net.server->state() == FlowState::migrating);
  REQUIRE(net.run_until([&] { return net.server->state() == FlowState::dead; }, 2s));
  CHECK(net.now - lost >= 3s);
  CHECK(net.now - lost < 3s + 100ms);
  REQUIRE(net.server->close_error().has_value());
  CHECK(net.server->close_error()->code == make_error_code(errc::migration_budget_exceeded));
  CHECK_THAT(net.server->close_error()->message(), Catch::Contains("no frame after the HELLO"));
}

TEST_CASE("engine silent flow: a client that spoke keeps the migration budget",
          "[engine][silent]") {
  FakeNet net(fast_probe_config(), server_config(3s));
  const int a = net.add_link({});
  REQUIRE(net.run_until([&] { return net.client.state() == FlowState::active; }, 1s));
  run_for(net, 200ms);  // probes and replies both ways
  net.fail_link(a);
  const TimePoint lost = net.now;
  REQUIRE(net.server->state() == FlowState::migrating);
  run_for(net, 10s);
  CHECK(net.server->state() == FlowState::migrating);
  // ...and it can still come back on a new carrier.
  net.add_link({});
  REQUIRE(net.run_until([&] { return net.server->state() == FlowState::active; }, 2s));
  CHECK(net.now - lost > 10s);
}

TEST_CASE("engine silent flow: silent_budget 0 keeps the migration budget and is bounded by it",
          "[engine][silent]") {
  FakeNet net(fast_probe_config(), server_config(0s));
  const int a = net.add_link({});
  REQUIRE(net.run_until([&] { return net.server.has_value(); }, 1s));
  net.fail_link(a);
  run_for(net, 10s);
  CHECK(net.server->state() == FlowState::migrating);
  REQUIRE(net.run_until([&] { return net.server->state() == FlowState::dead; }, 25s));

  FlowConfig bad = server_config(31s);
  CHECK_FALSE(validate_config(bad).ok());
  bad.silent_budget = -1s;
  CHECK_FALSE(validate_config(bad).ok());
}
