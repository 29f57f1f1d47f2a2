// SPDX-License-Identifier: Apache-2.0
// StagedMigration, check_offer and OutcomeLog with a fake clock: every way a migration staged
// on the target ends, and what QUERY answers after a lost COMMIT answer.
#include <rendr/agents/target_migration.hpp>

#include <catch2/catch.hpp>

using namespace rendr::agents;
using namespace std::chrono_literals;
using V = TargetVerdict;

namespace {
const StagedMigration::Clock::time_point t0{std::chrono::seconds(50)};
}

TEST_CASE("target core: COMMIT activates a staged migration once", "[agents][target_core]") {
  StagedMigration sm(7, "hostA", t0, 30000ms);
  CHECK(sm.staged());
  CHECK(sm.mig() == 7);
  CHECK(sm.from() == "hostA");
  CHECK(sm.deadline() == t0 + 30000ms);
  CHECK(sm.on_commit() == V::activate);
  CHECK(sm.state() == StagedState::committed);
  CHECK(std::string(sm.state_name()) == "committed");
  // A second COMMIT (a retry) and late ABORTs change nothing.
  CHECK(sm.on_commit() == V::refuse);
  CHECK(sm.commit_refusal() == "migration 7 is not staged here (committed)");
  CHECK(sm.on_abort() == V::nothing);
  CHECK(sm.on_channel_closed() == V::nothing);
  CHECK(sm.on_timer(t0 + 60000ms) == V::nothing);
  CHECK(sm.state() == StagedState::committed);
}

TEST_CASE("target core: ABORT, channel loss and expiry release a staged migration",
          "[agents][target_core]") {
  SECTION("ABORT from the source") {
    StagedMigration sm(1, "a", t0, 30000ms);
    CHECK(sm.on_abort() == V::release);
    CHECK(sm.state() == StagedState::aborted);
    CHECK(sm.on_abort() == V::nothing);  // answered again, released once
  }
  SECTION("the channel to the source closed before COMMIT") {
    StagedMigration sm(1, "a", t0, 30000ms);
    CHECK(sm.on_channel_closed() == V::release);
    CHECK(sm.on_commit() == V::refuse);
    CHECK(sm.commit_refusal() == "migration 1 is not staged here (aborted)");
  }
  SECTION("no COMMIT within the staged timeout") {
    StagedMigration sm(1, "a", t0, 30000ms);
    CHECK(sm.on_timer(t0 + 29999ms) == V::nothing);  // early wake-up: still staged
    CHECK(sm.staged());
    CHECK(sm.on_timer(t0 + 30000ms) == V::release);
    CHECK(std::string(sm.state_name()) == "aborted");
    CHECK(sm.on_timer(t0 + 40000ms) == V::nothing);
  }
}

TEST_CASE("target core: COMMIT for a migration never staged here", "[agents][target_core]") {
  CHECK(commit_refusal_unknown(9) == "migration 9 is not staged here (unknown)");
}

TEST_CASE("target core: check_offer rejects before anything is restored",
          "[agents][target_core]") {
  OfferShape good;
  good.has_mig = true;
  good.has_service = true;
  good.conn_ids = 2;
  good.snapshots = 2;
  good.states = 2;
  CHECK(check_offer(good, "hostB", true, "", 5, std::nullopt).empty());
  const std::string malformed = "malformed offer (fields missing or lists of different lengths)";
  auto bad = good;
  bad.has_mig = false;
  CHECK(check_offer(bad, "hostB", true, "", 5, std::nullopt) == malformed);
  bad = good;
  bad.has_service = false;
  CHECK(check_offer(bad, "hostB", true, "", 5, std::nullopt) == malformed);
  bad = good;
  bad.conn_ids.reset();
  CHECK(check_offer(bad, "hostB", true, "", 5, std::nullopt) == malformed);
  bad = good;
  bad.conn_ids = 3;
  CHECK(check_offer(bad, "hostB", true, "", 5, std::nullopt) == malformed);
  bad = good;
  bad.states = 1;
  CHECK(check_offer(bad, "hostB", true, "", 5, std::nullopt) == malformed);
  bad = good;
  bad.conn_ids = 0;
  bad.snapshots = 0;
  bad.states = 0;
  CHECK(check_offer(bad, "hostB", true, "", 5, std::nullopt) == malformed);
  CHECK(check_offer(good, "hostB", false, "EPERM", 5, std::nullopt) ==
        "TCP_REPAIR unavailable on hostB: EPERM");
  CHECK(check_offer(good, "hostB", true, "", 5, std::string("hostA")) ==
        "migration 5 is already staged here (from hostA)");
}

TEST_CASE("target core: QUERY answers the live state, else the remembered outcome",
          "[agents][target_core]") {
  OutcomeLog log(3);
  CHECK(log.state_of(1, nullptr) == "unknown");
  log.remember(1, "aborted");
  log.remember(2, "committed");
  CHECK(log.state_of(1, nullptr) == "aborted");
  CHECK(log.state_of(2, nullptr) == "committed");
  StagedMigration live(1, "a", t0, 1000ms);
  CHECK(log.state_of(1, &live) == "staged");
  log.remember(1, "committed");  // the latest outcome wins
  CHECK(log.state_of(1, nullptr) == "committed");
  log.remember(3, "aborted");
  CHECK(log.size() == 3);  // capped: the oldest (1 aborted) fell out
  log.remember(4, "aborted");
  CHECK(log.state_of(2, nullptr) == "unknown");
  CHECK(log.state_of(4, nullptr) == "aborted");
}

TEST_CASE("target core: an offer is decoded whole, then restored, then staged",
          "[agents][target_core]") {
  using I = IntakeAction;
  SECTION("every connection decodes and restores") {
    OfferIntake in(2);
    IntakeNext n = in.start();
    CHECK((n.action == I::decode && n.index == 0));
    n = in.on_decoded("");
    CHECK((n.action == I::decode && n.index == 1));
    n = in.on_decoded("");
    CHECK((n.action == I::restore && n.index == 0));  // the kernel only after every decode
    n = in.on_restored("");
    CHECK((n.action == I::restore && n.index == 1));
    n = in.on_restored("");
    CHECK(n.action == I::stage);
    CHECK(in.on_restored("late").action == I::stage);  // stray results change nothing
  }
  SECTION("a tampered snapshot rejects the offer before any restore") {
    OfferIntake in(3);
    in.start();
    in.on_decoded("");
    IntakeNext n = in.on_decoded("checksum mismatch");
    CHECK(n.action == I::reject);
    CHECK(n.why == "snapshot 1 rejected: checksum mismatch");
    CHECK(in.on_restored("").action == I::reject);
  }
  SECTION("a failed restore rejects the offer") {
    OfferIntake in(2);
    in.start();
    in.on_decoded("");
    in.on_decoded("");
    in.on_restored("");
    IntakeNext n = in.on_restored("read-back mismatch: snd_nxt");
    CHECK(n.action == I::reject);
    CHECK(n.why == "restore 1: read-back mismatch: snd_nxt");
  }
  SECTION("no connections: nothing to take in") {
    OfferIntake in(0);
    CHECK(in.start().action == I::stage);
  }
}

TEST_CASE("TupleLog: the last outcome per connection, forgotten when it leaves, bounded",
          "[agents][target]") {
  TupleLog log(3);
  CHECK(log.state_of("a") == "unknown");
  log.remember("a", "aborted");
  log.remember("a", "committed");  // moved in again: the later outcome wins
  CHECK(log.state_of("a") == "committed");
  CHECK(log.size() == 1);
  log.forget("a");
  CHECK(log.state_of("a") == "unknown");
  log.remember("b", "committed");
  log.remember("c", "committed");
  log.remember("d", "aborted");
  log.remember("e", "committed");  // over the cap: the oldest (b) goes
  CHECK(log.size() == 3);
  CHECK(log.state_of("b") == "unknown");
  CHECK(log.state_of("c") == "committed");
  CHECK(log.state_of("e") == "committed");
  // Many rewrites of one tuple keep the bookkeeping bounded and the others intact.
  for (int i = 0; i < 1000; ++i) {
    log.remember("c", i % 2 == 0 ? "aborted" : "committed");
  }
  CHECK(log.size() == 3);
  CHECK(log.state_of("c") == "committed");
  CHECK(log.state_of("d") == "aborted");
  CHECK(log.state_of("e") == "committed");
}
