// SPDX-License-Identifier: Apache-2.0
// The source agent's migration state machine, I/O-free: the orchestrator feeds it events and
// does what it answers. One Migration moves a batch of flows from this host (A) to one target
// agent (B); every flow of the batch shares its fate.
//
//   init -> exporting -> frozen -> offered -> staged -> steered -> committing -> committed
//                    \________\________\________\________\-----> aborting -> aborted
//   committing --(no answer, B unreachable)--> committed (presumed) with indeterminate = true
//
// exporting: the embedder hands over fds; frozen: eBPF freeze + checkpoint done; offered:
// snapshots shipped to B; staged: B restored them in repair mode (nothing transmitted);
// steered: the gateway sends the flows to B; committing: COMMIT sent, B activates and adopts.
// Up to `steered` every failure is undone in reverse (abort plan); once COMMIT may have reached
// B, A never thaws unless B says it aborted: two live copies of one connection would corrupt it.
// SourceMigration (source_migration.hpp) walks this FSM step by step for the agent; the target's
// side is StagedMigration (target_migration.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rendr::agents {

enum class MigState : std::uint8_t {
  init,
  exporting,
  frozen,
  offered,
  staged,
  steered,
  committing,
  committed,
  aborting,
  aborted,
};

enum class MigEvent : std::uint8_t {
  start,        // init -> exporting
  exported,     // every fd received
  checkpointed, // frozen + checkpointed
  shipped,      // offer written to B
  ready,        // B staged every socket
  steered,      // gateway confirmed (or no gateway)
  commit_sent,  // COMMIT written
  committed,    // B confirmed
  b_aborted,    // B says it aborted / never saw the migration (during committing)
  b_unreachable,// committing: B cannot be asked any more
  failure,      // a step failed, timed out, or the channel broke
  undone,       // the abort plan finished
};

// Undo actions, in the order the orchestrator must run them.
enum class UndoAction : std::uint8_t {
  steer_back,    // gateway: flows back to A
  tell_b_abort,  // B: release staged sockets (silent)
  thaw,          // A: leave repair mode
  unfreeze,      // A: lift the eBPF freeze
  return_fds,    // embedder: hand fds + state back
};

[[nodiscard]] const char* to_string(MigState s);
[[nodiscard]] const char* to_string(MigEvent e);
[[nodiscard]] const char* to_string(UndoAction a);

struct MigTransition {
  bool valid = false;  // false: the event is not allowed in this state (a bug; state unchanged)
  MigState next = MigState::init;
};

// transition: where |ev| takes a migration in state |s|.
[[nodiscard]] MigTransition transition(MigState s, MigEvent ev);

// abort_plan: what must be undone when a failure strikes in state |s| (empty when there is
// nothing to undo, or when aborting is no longer allowed: committing/committed).
[[nodiscard]] std::vector<UndoAction> abort_plan(MigState s);

// MigrationFsm: the state plus a trace of every transition (for reports and tests).
class MigrationFsm {
 public:
  [[nodiscard]] MigState state() const { return state_; }
  [[nodiscard]] bool indeterminate() const { return indeterminate_; }
  // on applies |ev|; false (and no change) if it is not valid here. A failure remembers the
  // state it struck in (failed_in()) for the abort plan.
  bool on(MigEvent ev);
  [[nodiscard]] MigState failed_in() const { return failed_in_; }
  [[nodiscard]] const std::vector<std::string>& trace() const { return trace_; }
  [[nodiscard]] bool done() const {
    return state_ == MigState::committed || state_ == MigState::aborted;
  }

 private:
  MigState state_ = MigState::init;
  MigState failed_in_ = MigState::init;
  bool indeterminate_ = false;
  std::vector<std::string> trace_;
};

}  // namespace rendr::agents
