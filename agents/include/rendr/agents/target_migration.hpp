// SPDX-License-Identifier: Apache-2.0
// The target agent's migration core, I/O-free: what a migration staged here may do next. The
// agent (agents/src/migrate_target.cpp) restores the offered sockets in repair mode, keeps one
// StagedMigration per offer, and asks it on every COMMIT, ABORT, QUERY, channel loss and
// expiry; the answer says whether to activate, release (silently) or refuse.
//
//   offer --check_offer ok, OfferIntake: decode every snapshot, then restore each--> staged
//   staged --COMMIT--> committed (activate every socket: past repair-off nothing is undone)
//   staged --ABORT | channel to the source closed | expiry (deadline)--> aborted (release)
//   committed / aborted: COMMIT refused ("not staged here (<state>)"), ABORT answered, no-op
//
// OutcomeLog keeps the final state of recent migrations for the source's QUERY after a lost
// COMMIT answer (a migration never seen answers "unknown"); TupleLog the same by connection,
// for a restarted source that reclaims a connection it had frozen (reclaim.hpp).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>

namespace rendr::agents {

enum class StagedState : std::uint8_t { staged, committed, aborted };
[[nodiscard]] const char* to_string(StagedState s);

enum class TargetVerdict : std::uint8_t {
  activate,  // COMMIT: leave repair mode and hand the sockets to their server
  release,   // close the staged sockets silently (no FIN, no RST), lift the local freeze
  refuse,    // COMMIT for a migration not staged (any more): answer peer_fail
  nothing,   // already finished: answer, change nothing
};

class StagedMigration {
 public:
  using Clock = std::chrono::steady_clock;
  // A migration |mig| from agent |from| staged at |now|; it expires at now + |staged_timeout|.
  StagedMigration(std::uint64_t mig, std::string from, Clock::time_point now,
                  std::chrono::milliseconds staged_timeout)
      : mig_(mig), from_(std::move(from)), deadline_(now + staged_timeout) {}

  [[nodiscard]] std::uint64_t mig() const { return mig_; }
  [[nodiscard]] const std::string& from() const { return from_; }
  [[nodiscard]] StagedState state() const { return state_; }
  [[nodiscard]] const char* state_name() const { return to_string(state_); }
  [[nodiscard]] bool staged() const { return state_ == StagedState::staged; }
  // deadline: when a staged migration aborts itself (no COMMIT came).
  [[nodiscard]] Clock::time_point deadline() const { return deadline_; }

  // on_commit: activate (then committed) while staged, else refuse (commit_refusal says why).
  TargetVerdict on_commit();
  // on_abort, on_channel_closed: release while staged (then aborted), else nothing.
  TargetVerdict on_abort();
  TargetVerdict on_channel_closed() { return on_abort(); }
  // on_timer: the expiry timer fired at |now|: release if staged and the deadline passed.
  TargetVerdict on_timer(Clock::time_point now);
  // commit_refusal: the text of a refused COMMIT.
  [[nodiscard]] std::string commit_refusal() const;

 private:
  std::uint64_t mig_;
  std::string from_;
  Clock::time_point deadline_;
  StagedState state_ = StagedState::staged;
};

// commit_refusal_unknown: the text of a COMMIT for a migration never staged here.
[[nodiscard]] std::string commit_refusal_unknown(std::uint64_t mig);

// The shape of an offer, as check_offer needs it.
struct OfferShape {
  bool has_mig = false;
  bool has_service = false;
  std::optional<std::size_t> conn_ids;  // unset: the list is malformed
  std::size_t snapshots = 0;
  std::size_t states = 0;
};

// check_offer: why an offer is rejected before anything is restored ("" = go on): malformed,
// TCP_REPAIR unavailable here (|repair_error|), or the migration id already staged here (from
// |staged_from|, set when it is).
[[nodiscard]] std::string check_offer(const OfferShape& o, const std::string& agent_name,
                                      bool repair_ok, const std::string& repair_error,
                                      std::uint64_t mig,
                                      const std::optional<std::string>& staged_from);

// OfferIntake: the order an accepted offer is taken in. Every snapshot is decoded before the
// kernel is touched (a tampered or truncated one rejects the whole offer), then each is restored
// in repair mode (nothing is transmitted); the first failure rejects the offer, and the sockets
// restored so far close silently.
enum class IntakeAction : std::uint8_t { decode, restore, stage, reject };

struct IntakeNext {
  IntakeAction action = IntakeAction::stage;
  std::size_t index = 0;  // decode / restore: which connection of the offer
  std::string why;        // reject: the text of the peer_fail answer
};

class OfferIntake {
 public:
  explicit OfferIntake(std::size_t connections) : n_(connections) {}
  IntakeNext start();
  // on_decoded / on_restored: the current connection's result ("" = it worked).
  IntakeNext on_decoded(const std::string& error);
  IntakeNext on_restored(const std::string& error);

 private:
  std::size_t n_;
  std::size_t i_ = 0;
  IntakeNext cur_{};
};

// OutcomeLog: the final state of the last |cap| migrations finished here.
class OutcomeLog {
 public:
  explicit OutcomeLog(std::size_t cap = 1024) : cap_(cap) {}
  void remember(std::uint64_t mig, const char* state);
  // state_of: the state QUERY answers: |live| (a migration still held) wins, else the last
  // remembered outcome, else "unknown".
  [[nodiscard]] std::string state_of(std::uint64_t mig, const StagedMigration* live) const;
  [[nodiscard]] std::size_t size() const { return log_.size(); }

 private:
  std::size_t cap_;
  std::deque<std::pair<std::uint64_t, std::string>> log_;
};

// TupleLog: the final state of recent moves into this host by connection (four-tuple text),
// for a restarted source's QUERY by tuple (reclaim.hpp): it knows the connection, not the
// migration. A later outcome for the same tuple replaces the earlier one; forget() drops it
// when the connection leaves this host again. Bounded: the oldest records go first.
class TupleLog {
 public:
  explicit TupleLog(std::size_t cap = 4096) : cap_(cap) {}
  void remember(const std::string& tuple, const char* state);
  void forget(const std::string& tuple);
  // state_of: "committed" | "aborted" | "unknown" (never seen, forgotten, or evicted).
  [[nodiscard]] std::string state_of(const std::string& tuple) const;
  [[nodiscard]] std::size_t size() const { return by_tuple_.size(); }

 private:
  std::size_t cap_;
  std::uint64_t seq_ = 0;
  std::unordered_map<std::string, std::pair<std::string, std::uint64_t>> by_tuple_;  // state, seq
  std::deque<std::pair<std::string, std::uint64_t>> order_;  // oldest first; stale seqs skipped
};

}  // namespace rendr::agents
