// SPDX-License-Identifier: Apache-2.0
// SourceMigration walked step by step with a fake clock: every step, every abort path, a lost
// COMMIT answer and the timeouts. No sockets, no sleeps.
#include <rendr/agents/source_migration.hpp>

#include <catch2/catch.hpp>

using namespace rendr::agents;
using A = SrcAction;
using namespace std::chrono_literals;

namespace {

struct Harness {
  explicit Harness(bool gateway = false, std::chrono::milliseconds resolve = 10000ms) {
    SourceConfig cfg;
    cfg.target = "hostB";
    cfg.gateway = gateway;
    cfg.step_timeout = 5000ms;
    cfg.commit_resolve = resolve;
    cfg.query_backoff = 200ms;
    m.emplace(cfg);
  }
  MigClock::time_point now{std::chrono::seconds(1000)};  // fake clock
  std::optional<SourceMigration> m;

  SrcNext start(bool empty = false) { return m->start(now, empty); }
  SrcNext ok(A a, std::optional<std::uint64_t> count = std::nullopt) {
    return m->on(now, step_ok(a, count));
  }
  SrcNext fail(A a, const std::string& why, Outcome o = Outcome::failed) {
    return m->on(now, step_failed(a, why, o));
  }
  SrcNext query(const std::string& state) {
    StepResult r = step_ok(A::query_target);
    r.peer_state = state;
    return m->on(now, r);
  }
  // walk_to: runs the happy path until |target| is the current step.
  void walk_to(A target, std::uint64_t flows = 3) {
    SrcNext n = start();
    while (n.action != target) {
      REQUIRE(n.action != A::finish);
      n = ok(n.action, n.action == A::export_flows || n.action == A::await_commit
                           ? std::optional<std::uint64_t>(flows)
                           : std::nullopt);
    }
  }
  // undo_all: answers every undo step ok; returns the steps seen.
  std::vector<A> undo_all() {
    std::vector<A> seen;
    SrcNext n = m->current();
    while (n.action != A::finish) {
      seen.push_back(n.action);
      n = ok(n.action);
    }
    return seen;
  }
};

}  // namespace

TEST_CASE("source core: the happy path without a gateway", "[agents][source_core]") {
  Harness h;
  SrcNext n = h.start();
  CHECK(n.action == A::connect_target);
  CHECK(n.deadline == h.now + 5000ms);
  h.now += 3ms;
  n = h.ok(A::connect_target);
  CHECK(n.action == A::export_flows);
  CHECK(n.deadline == h.now + 5000ms);
  n = h.ok(A::export_flows, 3);
  CHECK(n.action == A::freeze_checkpoint);
  n = h.ok(A::freeze_checkpoint);
  CHECK(n.action == A::ship_offer);
  CHECK(h.m->fsm().state() == MigState::frozen);
  n = h.ok(A::ship_offer);
  CHECK(n.action == A::await_ready);
  CHECK(h.m->fsm().state() == MigState::offered);
  n = h.ok(A::await_ready);
  CHECK(n.action == A::send_commit);  // no gateway: no steer step
  CHECK(h.m->fsm().state() == MigState::steered);
  CHECK_FALSE(h.m->steer_sent());
  n = h.ok(A::send_commit);
  CHECK(n.action == A::await_commit);
  CHECK(h.m->fsm().state() == MigState::committing);
  n = h.ok(A::await_commit, 3);
  CHECK(n.action == A::release);
  CHECK(h.m->result() == SrcResult::running);
  n = h.ok(A::release);
  CHECK(n.action == A::finish);
  CHECK(h.m->done());
  CHECK(h.m->result() == SrcResult::committed);
  CHECK(std::string(to_string(h.m->result())) == "committed");
  CHECK_FALSE(h.m->indeterminate());
  CHECK(h.m->error().empty());
  CHECK(h.m->commit_warning().empty());
  CHECK(h.m->failed_in().empty());
  CHECK(h.m->fsm().trace() ==
        std::vector<std::string>{"init --start--> exporting",
                                 "exporting --exported--> exporting",
                                 "exporting --checkpointed--> frozen",
                                 "frozen --shipped--> offered",
                                 "offered --ready--> staged", "staged --steered--> steered",
                                 "steered --commit_sent--> committing",
                                 "committing --committed--> committed"});
}

TEST_CASE("source core: with a gateway, steer_check before export and steer before COMMIT",
          "[agents][source_core]") {
  Harness h(true);
  CHECK(h.start().action == A::connect_target);
  CHECK(h.ok(A::connect_target).action == A::connect_gateway);
  CHECK(h.ok(A::connect_gateway).action == A::steer_check);
  CHECK(h.ok(A::steer_check).action == A::export_flows);
  CHECK(h.ok(A::export_flows, 2).action == A::freeze_checkpoint);
  CHECK(h.ok(A::freeze_checkpoint).action == A::ship_offer);
  CHECK(h.ok(A::ship_offer).action == A::await_ready);
  CHECK_FALSE(h.m->steer_sent());
  CHECK(h.ok(A::await_ready).action == A::steer);
  CHECK(h.m->steer_sent());
  CHECK(h.m->fsm().state() == MigState::staged);
  CHECK(h.ok(A::steer).action == A::send_commit);
  CHECK(h.ok(A::send_commit).action == A::await_commit);
  CHECK(h.ok(A::await_commit, 2).action == A::release);
  CHECK(h.ok(A::release).action == A::finish);
  CHECK(h.m->result() == SrcResult::committed);
  CHECK(h.m->flows() == 2);
}

TEST_CASE("source core: empty batches finish without undoing anything", "[agents][source_core]") {
  SECTION("every flow ended before the batch") {
    Harness h;
    CHECK(h.start(true).action == A::finish);
    CHECK(h.m->result() == SrcResult::empty);
    CHECK(h.m->fsm().trace().size() == 1);  // start only, as the agent always did
  }
  SECTION("every flow ended while it was exported") {
    Harness h;
    h.walk_to(A::export_flows);
    CHECK(h.ok(A::export_flows, 0).action == A::finish);
    CHECK(h.m->result() == SrcResult::empty);
    CHECK(h.m->failed_in().empty());
    CHECK(h.m->undo_plan().empty());
  }
  SECTION("an export without a count is empty too") {
    Harness h;
    h.walk_to(A::export_flows);
    CHECK(h.ok(A::export_flows).action == A::finish);
    CHECK(h.m->result() == SrcResult::empty);
  }
}

TEST_CASE("source core: a failure at each step runs the undo plan of the state it struck in",
          "[agents][source_core]") {
  const std::vector<A> early = {A::undo_thaw, A::undo_unfreeze, A::undo_return_fds};
  const std::vector<A> shipped = {A::undo_tell_b_abort, A::undo_thaw, A::undo_unfreeze,
                                  A::undo_return_fds};
  const std::vector<A> steered = {A::undo_steer_back, A::undo_tell_b_abort, A::undo_thaw,
                                  A::undo_unfreeze, A::undo_return_fds};
  struct Case {
    A at;
    Outcome how;
    const char* failed_in;
    std::vector<A> undo;
  };
  const Case cases[] = {
      {A::connect_target, Outcome::failed, "exporting", early},
      {A::connect_gateway, Outcome::timed_out, "exporting", early},
      {A::steer_check, Outcome::refused, "exporting", early},
      {A::export_flows, Outcome::timed_out, "exporting", early},
      {A::freeze_checkpoint, Outcome::failed, "exporting", early},
      {A::ship_offer, Outcome::failed, "frozen", shipped},
      {A::await_ready, Outcome::refused, "offered", shipped},
      {A::await_ready, Outcome::timed_out, "offered", shipped},
      // A steer that failed or went unanswered may have moved some flows: steer back first.
      {A::steer, Outcome::refused, "staged", steered},
      {A::steer, Outcome::timed_out, "staged", steered},
  };
  for (const auto& c : cases) {
    INFO(to_string(c.at) << " " << to_string(c.how));
    Harness h(true);
    h.walk_to(c.at);
    SrcNext n = h.fail(c.at, "boom", c.how);
    CHECK(n.action == c.undo.front());
    CHECK(h.m->fsm().state() == MigState::aborting);
    CHECK(h.m->undo_plan() == c.undo);
    CHECK(h.undo_all() == c.undo);
    CHECK(h.m->result() == SrcResult::aborted);
    CHECK(h.m->fsm().state() == MigState::aborted);
    CHECK(h.m->error() == "boom");
    CHECK(h.m->failed_in() == c.failed_in);
  }
}

TEST_CASE("source core: undo errors are kept and reported after the cause",
          "[agents][source_core]") {
  Harness h(true);
  h.walk_to(A::steer);
  CHECK(h.fail(A::steer, "gateway gw refused to steer", Outcome::refused).action ==
        A::undo_steer_back);
  CHECK(h.fail(A::undo_steer_back, "steer back failed: no gateway; ").action ==
        A::undo_tell_b_abort);
  CHECK(h.ok(A::undo_tell_b_abort).action == A::undo_thaw);
  CHECK(h.fail(A::undo_thaw, "thaw x; ").action == A::undo_unfreeze);
  CHECK(h.ok(A::undo_unfreeze).action == A::undo_return_fds);
  CHECK(h.ok(A::undo_return_fds).action == A::finish);
  CHECK(h.m->error() ==
        "gateway gw refused to steer (undo: steer back failed: no gateway; thaw x; )");
}

TEST_CASE("source core: the target refuses COMMIT: undo everything, steering included",
          "[agents][source_core]") {
  Harness h(true);
  h.walk_to(A::await_commit);
  SrcNext n = h.fail(A::await_commit, "commit: migration 7 is not staged here (aborted)",
                     Outcome::refused);
  CHECK(n.action == A::undo_steer_back);
  CHECK(h.m->failed_in() == "");  // not finished yet
  CHECK(h.undo_all().size() == 5);
  CHECK(h.m->result() == SrcResult::aborted);
  CHECK(h.m->failed_in() == "committing");
  CHECK(h.m->error() == "commit: migration 7 is not staged here (aborted)");
}

TEST_CASE("source core: a lost COMMIT answer is resolved by asking the target",
          "[agents][source_core]") {
  Harness h;
  h.walk_to(A::await_commit);
  const auto lost_at = h.now;
  SrcNext n = h.fail(A::await_commit, "no answer from agent hostB", Outcome::timed_out);
  CHECK(n.action == A::query_target);
  CHECK(h.m->fsm().state() == MigState::committing);  // never aborts on its own
  CHECK(h.m->commit_error() == "no answer from agent hostB");

  SECTION("it committed") {
    CHECK(h.query("committed").action == A::release);
    CHECK(h.ok(A::release).action == A::finish);
    CHECK(h.m->result() == SrcResult::committed);
    CHECK_FALSE(h.m->indeterminate());
  }
  SECTION("it aborted: undo with the commit error") {
    // MigrationFsm's plan for committing starts with steer_back; without a gateway that step
    // is left out (nothing was steered).
    CHECK(h.query("aborted").action == A::undo_tell_b_abort);
    CHECK(h.m->undo_plan().size() == 4);
    h.undo_all();
    CHECK(h.m->result() == SrcResult::aborted);
    CHECK(h.m->error() == "no answer from agent hostB");
    CHECK(h.m->failed_in() == "committing");
  }
  SECTION("it forgot (restart): presumed commit, indeterminate") {
    CHECK(h.query("unknown").action == A::release);
    CHECK(h.ok(A::release).action == A::finish);
    CHECK(h.m->result() == SrcResult::committed);
    CHECK(h.m->indeterminate());
  }
  SECTION("still staged: COMMIT never arrived; tell it to abort, then undo") {
    CHECK(h.query("staged").action == A::abort_staged_target);
    // Its answer does not matter.
    CHECK(h.fail(A::abort_staged_target, "whatever").action == A::undo_tell_b_abort);
    h.undo_all();
    CHECK(h.m->result() == SrcResult::aborted);
  }
  SECTION("unanswered queries back off until the resolve time runs out: presumed commit") {
    int queries = 0;
    n = h.m->current();
    while (n.action == A::query_target) {
      ++queries;
      h.now += 50ms;
      n = h.fail(A::query_target, "connect refused");
      REQUIRE(n.action == A::backoff);
      CHECK(n.deadline == h.now + 200ms);
      h.now = n.deadline;
      n = h.ok(A::backoff);
    }
    CHECK(n.action == A::release);
    CHECK(h.now >= lost_at + 10000ms);
    CHECK(queries == 40);  // one per 250 ms of the 10 s
    CHECK(h.m->indeterminate());
    h.ok(A::release);
    CHECK(h.m->result() == SrcResult::committed);
  }
}

TEST_CASE("source core: a COMMIT that could not be written is resolved the same way",
          "[agents][source_core]") {
  Harness h;
  h.walk_to(A::send_commit);
  CHECK(h.fail(A::send_commit, "send commit to hostB: broken pipe").action == A::query_target);
  CHECK(h.m->fsm().state() == MigState::committing);
  CHECK(h.query("committed").action == A::release);
}

TEST_CASE("source core: with no resolve time a lost answer is a presumed commit at once",
          "[agents][source_core]") {
  Harness h(false, 0ms);
  h.walk_to(A::await_commit);
  CHECK(h.fail(A::await_commit, "channel broke").action == A::release);
  CHECK(h.m->indeterminate());
}

TEST_CASE("source core: a target that activated fewer connections commits with a warning",
          "[agents][source_core]") {
  Harness h;
  h.walk_to(A::await_commit, 3);
  StepResult r = step_ok(A::await_commit, 2);
  r.text = "activate x: EPERM; ";
  CHECK(h.m->on(h.now, r).action == A::release);
  CHECK(h.m->commit_warning() == "target activated 2 of 3 connections: activate x: EPERM; ");
  Harness g;
  g.walk_to(A::await_commit, 3);
  CHECK(g.ok(A::await_commit).action == A::release);  // no count in the answer
  CHECK(g.m->commit_warning() == "target activated ? of 3 connections: ");
}

TEST_CASE("source core: timeouts and stray results", "[agents][source_core]") {
  Harness h;
  h.walk_to(A::await_ready);
  SECTION("timeout() fails the current step as timed out") {
    h.now += 5001ms;
    CHECK(h.m->timeout(h.now).action == A::undo_tell_b_abort);
    CHECK(h.m->error() == "await_ready timed out");
  }
  SECTION("a result for another step is ignored") {
    SrcNext before = h.m->current();
    SrcNext n = h.ok(A::await_commit, 3);
    CHECK(n.action == before.action);
    CHECK(n.deadline == before.deadline);
    CHECK(h.m->fsm().state() == MigState::offered);
  }
  SECTION("nothing moves after finish") {
    h.fail(A::await_ready, "x");
    h.undo_all();
    CHECK(h.ok(A::release).action == A::finish);
    CHECK(h.m->result() == SrcResult::aborted);
  }
}

TEST_CASE("judge_exports: ended flows leave, the first real failure aborts",
          "[agents][source_core]") {
  auto flow = [](const char* t) {
    FlowExport f;
    f.tuple = t;
    f.done = true;
    f.has_fd = true;
    return f;
  };
  SECTION("all exported") {
    auto v = judge_exports({flow("a"), flow("b")}, "", "svc", 5000);
    CHECK(v.error.empty());
    CHECK(v.kept == 2);
    CHECK(v.ended == std::vector<bool>{false, false});
  }
  SECTION("untracked, closed socket, refused without holder: ended, the rest goes on") {
    FlowExport untracked = flow("a");
    untracked.has_fd = false;
    untracked.ended = true;
    untracked.error = "closed by the server";
    FlowExport closed = flow("b");
    closed.socket_closed = true;
    FlowExport gone = flow("c");
    gone.has_fd = false;
    gone.refused = true;
    gone.no_holder = true;
    gone.error = "the server refused: no such connection";
    auto v = judge_exports({untracked, closed, gone, flow("d")}, "", "svc", 5000);
    CHECK(v.error.empty());
    CHECK(v.kept == 1);
    CHECK(v.ended == std::vector<bool>{true, true, true, false});
    CHECK(v.ended_why[0] == "closed by the server");
    CHECK(v.ended_why[1] == "closed (reset by the peer, or both sides closed it) before it moved");
    CHECK(v.ended_why[2] == "the server refused: no such connection; no process holds its socket");
  }
  SECTION("a refusal of a held socket aborts") {
    FlowExport r = flow("a");
    r.has_fd = false;
    r.refused = true;
    r.error = "the server refused: busy";
    auto v = judge_exports({flow("z"), r}, "", "svc", 5000);
    CHECK(v.error == "a: the server refused: busy");
  }
  SECTION("no answer within the step time aborts") {
    FlowExport late = flow("a");
    late.done = false;
    late.has_fd = false;
    auto v = judge_exports({late}, "", "svc", 5000);
    CHECK(v.error == "the svc server did not export a within 5000 ms");
    CHECK(v.kept == 1);
  }
  SECTION("an export request that could not be sent wins") {
    FlowExport late = flow("a");
    late.done = false;
    auto v = judge_exports({late}, "export request to the svc server failed", "svc", 5000);
    CHECK(v.error == "export request to the svc server failed");
  }
}

TEST_CASE("late_export: a late fd goes back to its server, never closed",
          "[agents][source_core]") {
  CHECK(late_export(true, false, true) == LateExport::ignore_refusal);
  CHECK(late_export(true, true, false) == LateExport::ignore_refusal);
  CHECK(late_export(false, true, true) == LateExport::hand_back);
  CHECK(late_export(false, true, false) == LateExport::unrequested);
  CHECK(late_export(false, false, true) == LateExport::unrequested);
}

TEST_CASE("BatchRun: cut to the room, summed, stopped by a failed batch",
          "[agents][source_core]") {
  auto committed = [](std::uint64_t flows, std::uint64_t ended) {
    BatchReport r;
    r.result = "committed";
    r.flows = flows;
    r.ended = ended;
    r.bytes_carried = 100 * flows;
    r.replayed = 1;
    r.frozen_ms = static_cast<double>(flows);
    return r;
  };
  SECTION("all batches commit") {
    BatchRun b(10, 1);
    CHECK(b.next_take(4, 100, 20) == 4);
    CHECK(b.offset() == 0);
    b.on_report(committed(4, 0));
    CHECK(b.next_take(4, 100, 20) == 4);
    CHECK(b.offset() == 4);
    b.on_report(committed(3, 1));
    CHECK(b.next_take(8, 100, 20) == 2);
    CHECK(b.offset() == 8);
    b.on_report(committed(2, 0));
    CHECK_FALSE(b.more());
    CHECK(b.next_take(8, 100, 20) == 0);
    CHECK(std::string(b.result()) == "committed");
    CHECK(b.moved() == 9);
    CHECK(b.ended() == 2);
    CHECK(b.bytes() == 900);
    CHECK(b.replayed() == 3);
    CHECK(b.committed() == 3);
    CHECK(b.frozen_max() == 4.0);
    CHECK(b.not_moved() == 0);
  }
  SECTION("a failed batch stops the rest: partial") {
    BatchRun b(10, 0);
    b.next_take(4, 100, 20);
    b.on_report(committed(4, 0));
    b.next_take(4, 100, 20);
    BatchReport ab;
    ab.result = "aborted";
    ab.error = "boom";
    ab.failed_in = "offered";
    b.on_report(ab);
    CHECK_FALSE(b.more());
    CHECK(std::string(b.result()) == "partial");
    CHECK(b.error() == "boom");
    CHECK(b.failed_in() == "offered");
    CHECK(b.not_moved() == 6);
  }
  SECTION("no room at all: aborted") {
    BatchRun b(3, 0);
    CHECK(b.next_take(0, 64, 60) == 0);
    CHECK(b.error() == "no room for a batch under RLIMIT_NOFILE 64 (60 open)");
    CHECK(std::string(b.result()) == "aborted");
    CHECK(b.not_moved() == 3);
  }
  SECTION("a batch that did not answer a report stops the run") {
    BatchRun b(3, 0);
    b.next_take(1, 64, 10);
    b.on_error("batch: TCP_REPAIR unavailable");
    CHECK_FALSE(b.more());
    CHECK(std::string(b.result()) == "aborted");
  }
  SECTION("only empty batches: empty") {
    BatchRun b(2, 0);
    b.next_take(2, 64, 10);
    BatchReport e;
    e.result = "empty";
    e.ended = 2;
    b.on_report(e);
    CHECK(std::string(b.result()) == "empty");
    CHECK(b.not_moved() == 0);
  }
}

TEST_CASE("source core: flows whose connection ended before their checkpoint leave the batch",
          "[agents][source_core]") {
  SECTION("some ended: the rest moves and the commit counts only those") {
    Harness h;
    h.walk_to(A::freeze_checkpoint, 3);
    SrcNext n = h.ok(A::freeze_checkpoint, 2);
    CHECK(n.action == A::ship_offer);
    n = h.ok(A::ship_offer);
    CHECK(n.action == A::await_ready);
    n = h.ok(A::await_ready);
    CHECK(n.action == A::send_commit);
    n = h.ok(A::send_commit);
    CHECK(n.action == A::await_commit);
    StepResult r = step_ok(A::await_commit, 2);
    CHECK(h.m->on(h.now, r).action == A::release);
    CHECK(h.m->commit_warning().empty());  // 2 of 2, not 2 of 3
  }
  SECTION("all ended: the batch is empty, with nothing to undo") {
    Harness h;
    h.walk_to(A::freeze_checkpoint, 3);
    SrcNext n = h.ok(A::freeze_checkpoint, 0);
    CHECK(n.action == A::finish);
    CHECK(h.m->result() == SrcResult::empty);
    CHECK(h.m->error().empty());
  }
}
