// SPDX-License-Identifier: Apache-2.0
// The source agent's migration core, I/O-free: it says which step comes next and by when; the
// agent's coroutine (agents/src/migrate_source.cpp) only runs that step and feeds the result
// back. Times are passed in ("now"), never read, so tests drive it with a fake clock.
//
//   SourceMigration m(cfg);
//   for (SrcNext n = m.start(now, empty); n.action != SrcAction::finish;) {
//     StepResult r = run(n.action, n.deadline);        // I/O: channels, servers, kernel
//     n = m.on(now(), r);
//   }
//   report(m.result(), m.error(), m.fsm().trace());
//
// Steps of one batch, in order (every failure jumps to the undo steps of MigrationFsm's
// abort_plan for the state it struck in, plus steer_back once a STEER was sent):
//   connect_target [connect_gateway steer_check] export_flows (kept == 0: finish "empty")
//   freeze_checkpoint ship_offer await_ready [steer] send_commit await_commit release finish
// A COMMIT whose answer is lost is resolved by query_target (answers: committed -> release,
// aborted -> undo, unknown -> presumed commit (indeterminate), staged -> abort_staged_target then
// undo), with backoff between unanswered queries until the resolve time runs out (presumed
// commit, indeterminate): once COMMIT may have reached the target, the source never thaws
// unless the target says it did not commit.
//
// Also here, the pure rules the coroutines around it apply: which exported flows stay in a
// batch (judge_exports), what to do with an export that arrives after its batch gave up
// (late_export), and how a selection too large for one batch is cut and summed (BatchRun).
#pragma once

#include <rendr/agents/migration.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rendr::agents {

using MigClock = std::chrono::steady_clock;

enum class SrcAction : std::uint8_t {
  connect_target,       // a live (HELLO-checked) channel to the target agent
  connect_gateway,      // a live channel to the gateway agent
  steer_check,          // ask the gateway whether it can steer every flow to the target
  export_flows,         // servers hand over fd + state; StepResult::count = flows kept
  freeze_checkpoint,    // eBPF freeze + TCP_REPAIR checkpoint of every kept flow
  ship_offer,           // write the offer (snapshots + states) to the target
  await_ready,          // read the target's answer to the offer (ok = READY)
  steer,                // the gateway steers the flows to the target (ok = STEERED)
  send_commit,          // write COMMIT (peer-ack hints, packets to replay)
  await_commit,         // read the answer to COMMIT (ok = COMMITTED, refused = any other)
  query_target,         // fresh channel: ask the target the migration's state (peer_state)
  abort_staged_target,  // the target is still staged after a lost COMMIT: tell it to abort
  backoff,              // wait until the deadline, then ask again
  release,              // committed: close the frozen sockets silently, grace-unfreeze
  undo_steer_back,      // gateway: flows back to this host
  undo_tell_b_abort,    // target: release the staged sockets
  undo_thaw,            // leave repair mode here
  undo_unfreeze,        // lift the eBPF freeze here
  undo_return_fds,      // hand fds + state back to the servers
  finish,               // done: result() says how
};

enum class Outcome : std::uint8_t {
  ok,
  refused,    // the peer answered, but no (text: its reason)
  failed,     // the step could not be done: I/O error, broken channel (text: why)
  timed_out,  // the deadline passed without an answer (text: why)
};

[[nodiscard]] const char* to_string(SrcAction a);
[[nodiscard]] const char* to_string(Outcome o);

struct SrcNext {
  SrcAction action = SrcAction::finish;
  MigClock::time_point deadline{};  // by when the step must be done (backoff: when to go on)
};

struct StepResult {
  SrcAction step = SrcAction::finish;  // the step this result answers
  Outcome outcome = Outcome::ok;
  std::string text;         // the error or refusal (undo steps: what could not be undone)
  // export_flows: flows kept; await_commit: connections the target activated (unset: it did
  // not say).
  std::optional<std::uint64_t> count;
  std::string peer_state;   // query_target (ok): committed | aborted | staged | unknown
};

StepResult step_ok(SrcAction step, std::optional<std::uint64_t> count = std::nullopt);
StepResult step_failed(SrcAction step, std::string text, Outcome o = Outcome::failed);

struct SourceConfig {
  std::string target;          // the target agent's name (for messages)
  bool gateway = false;        // a gateway steers the flows: steer_check and steer run
  std::uint64_t flows = 0;     // flows in the batch (to check the activated count)
  std::chrono::milliseconds step_timeout{5000};
  std::chrono::milliseconds commit_resolve{10000};
  std::chrono::milliseconds query_backoff{200};
};

enum class SrcResult : std::uint8_t { running, committed, empty, aborted };
[[nodiscard]] const char* to_string(SrcResult r);

class SourceMigration {
 public:
  explicit SourceMigration(SourceConfig cfg);

  // start: the first step. |empty|: every selected flow ended before the batch (finish, "empty").
  SrcNext start(MigClock::time_point now, bool empty);
  // on: feed the result of the current step; returns the next one. A result for another step
  // than the current one (a caller bug) is ignored: the current step is returned again.
  SrcNext on(MigClock::time_point now, const StepResult& r);
  // timeout: the current step's deadline passed (same as a timed_out result for it).
  SrcNext timeout(MigClock::time_point now);

  [[nodiscard]] SrcNext current() const { return cur_; }
  [[nodiscard]] SrcResult result() const { return result_; }
  [[nodiscard]] bool done() const { return cur_.action == SrcAction::finish; }
  // error: why the batch aborted, with " (undo: ...)" when an undo step failed.
  [[nodiscard]] const std::string& error() const { return error_; }
  // commit_error: why COMMIT's answer is missing (while the target is being asked).
  [[nodiscard]] const std::string& commit_error() const { return commit_error_; }
  // commit_warning: the target answered COMMITTED but activated fewer connections.
  [[nodiscard]] const std::string& commit_warning() const { return commit_warning_; }
  [[nodiscard]] bool steer_sent() const { return steer_sent_; }
  [[nodiscard]] bool indeterminate() const { return fsm_.indeterminate(); }
  [[nodiscard]] std::uint64_t flows() const { return cfg_.flows; }
  [[nodiscard]] const MigrationFsm& fsm() const { return fsm_; }
  // failed_in: the state the abort struck in ("" unless aborted).
  [[nodiscard]] std::string failed_in() const;
  // undo_plan: the undo steps this abort runs, in order (empty unless aborting).
  [[nodiscard]] const std::vector<SrcAction>& undo_plan() const { return undo_; }

 private:
  SrcNext go(SrcAction a, MigClock::time_point deadline);
  SrcNext step(SrcAction a, MigClock::time_point now) { return go(a, now + cfg_.step_timeout); }
  SrcNext fail(MigClock::time_point now, const std::string& why);
  SrcNext begin_undo(MigClock::time_point now);
  SrcNext next_undo(MigClock::time_point now);
  SrcNext resolve(MigClock::time_point now);
  SrcNext query_or_presume(MigClock::time_point now);
  SrcNext abort_after_commit(MigClock::time_point now);
  SrcNext committed(MigClock::time_point now);
  SrcNext finish(SrcResult r);

  SourceConfig cfg_;
  MigrationFsm fsm_;
  SrcNext cur_{};
  SrcResult result_ = SrcResult::running;
  std::string error_;
  std::string commit_error_;
  std::string commit_warning_;
  std::string undo_errors_;
  bool steer_sent_ = false;
  MigClock::time_point resolve_deadline_{};
  std::vector<SrcAction> undo_;
  std::size_t undo_next_ = 0;
};

// ---- exports

// What the servers' answers to an export request amount to, per flow.
struct FlowExport {
  std::string tuple;           // the flow (for messages)
  bool done = false;           // the server answered (or the flow ended)
  bool refused = false;        // the server declined
  bool ended = false;          // the connection is gone (error says how)
  bool has_fd = false;         // an fd arrived
  bool socket_closed = false;  // has_fd, and that socket is in CLOSE already
  bool no_holder = false;      // refused, and no process of this netns holds its socket
  std::string error;
};

struct ExportVerdict {
  std::string error;          // the batch aborts ("" = it goes on with the kept flows)
  std::vector<bool> ended;    // per flow: leaves the batch (reason in ended_why)
  std::vector<std::string> ended_why;
  std::size_t kept = 0;
};

// judge_exports: which flows leave the batch because they ended before or while they were
// exported (refused with no holder, closed socket, untracked), and whether the rest aborts:
// |batch_error| (an export request could not be sent) first, else the first flow not exported
// within the step time, else the first flow with an error.
[[nodiscard]] ExportVerdict judge_exports(std::vector<FlowExport> flows,
                                          const std::string& batch_error,
                                          const std::string& service, int step_timeout_ms);

enum class LateExport : std::uint8_t {
  ignore_refusal,  // a refusal after the flow ended (untrack first): the usual order
  hand_back,       // an fd for a flow still tracked: return it to the server (never close it)
  unrequested,     // nothing asked for it: log
};
// late_export: what to do with an export answer no batch waits for any more.
[[nodiscard]] LateExport late_export(bool refusal, bool has_fd, bool tracked);

// ---- batches

// One batch's report, as BatchRun needs it.
struct BatchReport {
  std::string result;  // committed | empty | aborted
  std::uint64_t flows = 0;
  std::uint64_t ended = 0;
  std::uint64_t bytes_carried = 0;
  std::uint64_t replayed = 0;
  double frozen_ms = 0;
  std::string error;
  std::string failed_in;
};

// BatchRun: a selection of |total| flows moved in batches cut to the descriptor room; a failed
// batch stops the rest (earlier batches stay committed, the rest stays here).
class BatchRun {
 public:
  BatchRun(std::size_t total, std::uint64_t ended_before)
      : total_(total), ended_(ended_before), ended_before_(ended_before) {}
  // next_take: how many flows the next batch takes with room for |room_flows|; 0 = stop (no
  // flows left, an error, or no room: then error() says so, with |limit| and |open|).
  std::size_t next_take(std::size_t room_flows, std::uint64_t limit, std::uint64_t open);
  // more: flows are left and no batch failed.
  [[nodiscard]] bool more() const { return next_ < total_ && error_.empty() && !stopped_; }
  // offset: index of the first flow of the batch next_take just cut.
  [[nodiscard]] std::size_t offset() const { return next_ - last_take_; }
  void on_report(const BatchReport& r);
  void on_error(std::string why) {
    error_ = std::move(why);
    stopped_ = true;
  }

  // result: committed | partial | aborted | empty.
  [[nodiscard]] const char* result() const;
  [[nodiscard]] const std::string& error() const { return error_; }
  [[nodiscard]] const std::string& failed_in() const { return failed_in_; }
  [[nodiscard]] std::uint64_t moved() const { return moved_; }
  [[nodiscard]] std::uint64_t ended() const { return ended_; }
  [[nodiscard]] std::uint64_t bytes() const { return bytes_; }
  [[nodiscard]] std::uint64_t replayed() const { return replayed_; }
  [[nodiscard]] std::uint64_t committed() const { return committed_; }
  [[nodiscard]] double frozen_max() const { return frozen_max_; }
  // not_moved: flows that stay here (neither moved nor ended inside a batch).
  [[nodiscard]] std::uint64_t not_moved() const;

 private:
  std::size_t total_;
  std::size_t next_ = 0;
  std::size_t last_take_ = 0;
  std::uint64_t ended_;
  std::uint64_t ended_before_;
  std::uint64_t moved_ = 0;
  std::uint64_t bytes_ = 0;
  std::uint64_t replayed_ = 0;
  std::uint64_t committed_ = 0;
  double frozen_max_ = 0;
  std::string error_;
  std::string failed_in_;
  bool stopped_ = false;
};

}  // namespace rendr::agents
