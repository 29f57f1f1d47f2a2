// SPDX-License-Identifier: Apache-2.0
#include <rendr/agents/target_migration.hpp>

namespace rendr::agents {

const char* to_string(StagedState s) {
  switch (s) {
    case StagedState::staged: return "staged";
    case StagedState::committed: return "committed";
    case StagedState::aborted: return "aborted";
  }
  return "?";
}

TargetVerdict StagedMigration::on_commit() {
  if (state_ != StagedState::staged) {
    return TargetVerdict::refuse;
  }
  state_ = StagedState::committed;
  return TargetVerdict::activate;
}

TargetVerdict StagedMigration::on_abort() {
  if (state_ != StagedState::staged) {
    return TargetVerdict::nothing;
  }
  state_ = StagedState::aborted;
  return TargetVerdict::release;
}

TargetVerdict StagedMigration::on_timer(Clock::time_point now) {
  if (now < deadline_) {
    return TargetVerdict::nothing;
  }
  return on_abort();
}

std::string StagedMigration::commit_refusal() const {
  return "migration " + std::to_string(mig_) + " is not staged here (" + state_name() + ")";
}

std::string commit_refusal_unknown(std::uint64_t mig) {
  return "migration " + std::to_string(mig) + " is not staged here (unknown)";
}

std::string check_offer(const OfferShape& o, const std::string& agent_name, bool repair_ok,
                        const std::string& repair_error, std::uint64_t mig,
                        const std::optional<std::string>& staged_from) {
  if (!o.has_mig || !o.has_service || !o.conn_ids || *o.conn_ids != o.snapshots ||
      o.snapshots != o.states || o.snapshots == 0) {
    return "malformed offer (fields missing or lists of different lengths)";
  }
  if (!repair_ok) {
    return "TCP_REPAIR unavailable on " + agent_name + ": " + repair_error;
  }
  if (staged_from) {
    return "migration " + std::to_string(mig) + " is already staged here (from " + *staged_from +
           ")";
  }
  return {};
}

IntakeNext OfferIntake::start() {
  i_ = 0;
  cur_ = n_ == 0 ? IntakeNext{IntakeAction::stage, 0, {}} : IntakeNext{IntakeAction::decode, 0, {}};
  return cur_;
}

IntakeNext OfferIntake::on_decoded(const std::string& error) {
  if (cur_.action != IntakeAction::decode) {
    return cur_;
  }
  if (!error.empty()) {
    cur_ = IntakeNext{IntakeAction::reject, i_,
                      "snapshot " + std::to_string(i_) + " rejected: " + error};
    return cur_;
  }
  if (++i_ < n_) {
    cur_ = IntakeNext{IntakeAction::decode, i_, {}};
  } else {
    i_ = 0;
    cur_ = IntakeNext{IntakeAction::restore, 0, {}};
  }
  return cur_;
}

IntakeNext OfferIntake::on_restored(const std::string& error) {
  if (cur_.action != IntakeAction::restore) {
    return cur_;
  }
  if (!error.empty()) {
    cur_ = IntakeNext{IntakeAction::reject, i_, "restore " + std::to_string(i_) + ": " + error};
    return cur_;
  }
  if (++i_ < n_) {
    cur_ = IntakeNext{IntakeAction::restore, i_, {}};
  } else {
    cur_ = IntakeNext{IntakeAction::stage, 0, {}};
  }
  return cur_;
}

void OutcomeLog::remember(std::uint64_t mig, const char* state) {
  log_.emplace_back(mig, state);
  if (log_.size() > cap_) {
    log_.pop_front();
  }
}

std::string OutcomeLog::state_of(std::uint64_t mig, const StagedMigration* live) const {
  if (live != nullptr) {
    return live->state_name();
  }
  std::string state = "unknown";
  for (const auto& [id, st] : log_) {
    if (id == mig) {
      state = st;
    }
  }
  return state;
}

void TupleLog::forget(const std::string& tuple) { by_tuple_.erase(tuple); }

void TupleLog::remember(const std::string& tuple, const char* state) {
  const std::uint64_t seq = ++seq_;
  by_tuple_[tuple] = {state, seq};
  order_.emplace_back(tuple, seq);
  // Evict the oldest live records; entries a later remember or a forget replaced are skipped
  // (and the queue is compacted when they dominate it).
  while (by_tuple_.size() > cap_ || order_.size() > 2 * cap_ + 16) {
    auto [t, sq] = std::move(order_.front());
    order_.pop_front();
    auto it = by_tuple_.find(t);
    if (it != by_tuple_.end() && it->second.second == sq && by_tuple_.size() > cap_) {
      by_tuple_.erase(it);
    } else if (it != by_tuple_.end() && it->second.second == sq) {
      order_.emplace_back(std::move(t), sq);  // live, and within the cap: keep it
    }
  }
}

std::string TupleLog::state_of(const std::string& tuple) const {
  auto it = by_tuple_.find(tuple);
  return it == by_tuple_.end() ? std::string("unknown") : it->second.first;
}

}  // namespace rendr::agents
