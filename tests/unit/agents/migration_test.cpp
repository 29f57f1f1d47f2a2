// SPDX-License-Identifier: Apache-2.0
#include <rendr/agents/migration.hpp>

#include <catch2/catch.hpp>

using namespace rendr::agents;
using S = MigState;
using E = MigEvent;
using U = UndoAction;

namespace {
MigrationFsm drive_to(S target) {
  MigrationFsm f;
  const E path[] = {E::start, E::exported, E::checkpointed, E::shipped, E::ready, E::steered,
                    E::commit_sent};
  for (E e : path) {
    if (f.state() == target) {
      break;
    }
    REQUIRE(f.on(e));
  }
  REQUIRE(f.state() == target);
  return f;
}
}  // namespace

TEST_CASE("the happy path walks every state in order", "[agents]") {
  MigrationFsm f = drive_to(S::committing);
  CHECK(f.on(E::committed));
  CHECK(f.state() == S::committed);
  CHECK(f.done());
  CHECK_FALSE(f.indeterminate());
  CHECK(f.trace().size() == 8);
}

TEST_CASE("a failure before commit aborts with the undo plan of the state it struck in",
          "[agents]") {
  struct Case {
    S at;
    std::vector<U> plan;
  };
  const Case cases[] = {
      {S::exporting, {U::thaw, U::unfreeze, U::return_fds}},
      {S::frozen, {U::tell_b_abort, U::thaw, U::unfreeze, U::return_fds}},
      {S::offered, {U::tell_b_abort, U::thaw, U::unfreeze, U::return_fds}},
      {S::staged, {U::tell_b_abort, U::thaw, U::unfreeze, U::return_fds}},
      {S::steered, {U::steer_back, U::tell_b_abort, U::thaw, U::unfreeze, U::return_fds}},
  };
  for (const auto& c : cases) {
    INFO(to_string(c.at));
    MigrationFsm f = drive_to(c.at);
    REQUIRE(f.on(E::failure));
    CHECK(f.state() == S::aborting);
    CHECK(f.failed_in() == c.at);
    CHECK(abort_plan(f.failed_in()) == c.plan);
    CHECK(f.on(E::undone));
    CHECK(f.state() == S::aborted);
  }
}

TEST_CASE("after COMMIT a broken channel never aborts on its own", "[agents]") {
  MigrationFsm f = drive_to(S::committing);
  CHECK(f.on(E::failure));
  CHECK(f.state() == S::committing);  // must ask B first
  SECTION("B says it committed") {
    CHECK(f.on(E::committed));
    CHECK(f.state() == S::committed);
    CHECK_FALSE(f.indeterminate());
  }
  SECTION("B says it aborted: undo everything including the steering") {
    CHECK(f.on(E::b_aborted));
    CHECK(f.state() == S::aborting);
    CHECK(abort_plan(f.failed_in()).front() == U::steer_back);
  }
  SECTION("B unreachable: presumed commit, flagged") {
    CHECK(f.on(E::b_unreachable));
    CHECK(f.state() == S::committed);
    CHECK(f.indeterminate());
  }
}

TEST_CASE("events out of order are refused and leave the state alone", "[agents]") {
  MigrationFsm f;
  CHECK_FALSE(f.on(E::ready));
  CHECK(f.state() == S::init);
  MigrationFsm g = drive_to(S::frozen);
  CHECK_FALSE(g.on(E::committed));
  CHECK(g.state() == S::frozen);
  CHECK_FALSE(g.on(E::b_unreachable));
  MigrationFsm h = drive_to(S::committing);
  REQUIRE(h.on(E::committed));
  CHECK_FALSE(h.on(E::failure));
  CHECK(h.state() == S::committed);
  CHECK(abort_plan(S::committed).empty());
  CHECK(abort_plan(S::committing).size() == 5);
}
