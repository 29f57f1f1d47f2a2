// SPDX-License-Identifier: Apache-2.0
#include <rendr/agents/source_migration.hpp>

#include <algorithm>

namespace rendr::agents {

const char* to_string(SrcAction a) {
  switch (a) {
    case SrcAction::connect_target: return "connect_target";
    case SrcAction::connect_gateway: return "connect_gateway";
    case SrcAction::steer_check: return "steer_check";
    case SrcAction::export_flows: return "export_flows";
    case SrcAction::freeze_checkpoint: return "freeze_checkpoint";
    case SrcAction::ship_offer: return "ship_offer";
    case SrcAction::await_ready: return "await_ready";
    case SrcAction::steer: return "steer";
    case SrcAction::send_commit: return "send_commit";
    case SrcAction::await_commit: return "await_commit";
    case SrcAction::query_target: return "query_target";
    case SrcAction::abort_staged_target: return "abort_staged_target";
    case SrcAction::backoff: return "backoff";
    case SrcAction::release: return "release";
    case SrcAction::undo_steer_back: return "undo_steer_back";
    case SrcAction::undo_tell_b_abort: return "undo_tell_b_abort";
    case SrcAction::undo_thaw: return "undo_thaw";
    case SrcAction::undo_unfreeze: return "undo_unfreeze";
    case SrcAction::undo_return_fds: return "undo_return_fds";
    case SrcAction::finish: return "finish";
  }
  return "?";
}

const char* to_string(Outcome o) {
  switch (o) {
    case Outcome::ok: return "ok";
    case Outcome::refused: return "refused";
    case Outcome::failed: return "failed";
    case Outcome::timed_out: return "timed_out";
  }
  return "?";
}

const char* to_string(SrcResult r) {
  switch (r) {
    case SrcResult::running: return "running";
    case SrcResult::committed: return "committed";
    case SrcResult::empty: return "empty";
    case SrcResult::aborted: return "aborted";
  }
  return "?";
}

StepResult step_ok(SrcAction step, std::optional<std::uint64_t> count) {
  StepResult r;
  r.step = step;
  r.count = count;
  return r;
}

StepResult step_failed(SrcAction step, std::string text, Outcome o) {
  StepResult r;
  r.step = step;
  r.outcome = o;
  r.text = std::move(text);
  return r;
}

SourceMigration::SourceMigration(SourceConfig cfg) : cfg_(std::move(cfg)) {}

SrcNext SourceMigration::go(SrcAction a, MigClock::time_point deadline) {
  cur_ = SrcNext{a, deadline};
  return cur_;
}

SrcNext SourceMigration::finish(SrcResult r) {
  result_ = r;
  return go(SrcAction::finish, cur_.deadline);
}

SrcNext SourceMigration::start(MigClock::time_point now, bool empty) {
  fsm_.on(MigEvent::start);
  if (empty) {
    return finish(SrcResult::empty);
  }
  return step(SrcAction::connect_target, now);
}

SrcNext SourceMigration::timeout(MigClock::time_point now) {
  return on(now, step_failed(cur_.action, std::string(to_string(cur_.action)) + " timed out",
                             Outcome::timed_out));
}

SrcNext SourceMigration::fail(MigClock::time_point now, const std::string& why) {
  error_ = why;
  if (fsm_.state() != MigState::aborting) {
    fsm_.on(MigEvent::failure);
  }
  return begin_undo(now);
}

SrcNext SourceMigration::begin_undo(MigClock::time_point now) {
  std::vector<UndoAction> plan = abort_plan(fsm_.failed_in());
  // A steer request that failed or went unanswered may have moved some flows already.
  if (steer_sent_ && std::find(plan.begin(), plan.end(), UndoAction::steer_back) == plan.end()) {
    plan.insert(plan.begin(), UndoAction::steer_back);
  }
  // Without a gateway nothing was steered: no steer-back step (it could only fail, and its
  // "no gateway" would end up in the report).
  if (!cfg_.gateway) {
    std::erase(plan, UndoAction::steer_back);
  }
  undo_.clear();
  for (UndoAction u : plan) {
    switch (u) {
      case UndoAction::steer_back: undo_.push_back(SrcAction::undo_steer_back); break;
      case UndoAction::tell_b_abort: undo_.push_back(SrcAction::undo_tell_b_abort); break;
      case UndoAction::thaw: undo_.push_back(SrcAction::undo_thaw); break;
      case UndoAction::unfreeze: undo_.push_back(SrcAction::undo_unfreeze); break;
      case UndoAction::return_fds: undo_.push_back(SrcAction::undo_return_fds); break;
    }
  }
  undo_next_ = 0;
  return next_undo(now);
}

SrcNext SourceMigration::next_undo(MigClock::time_point now) {
  if (undo_next_ < undo_.size()) {
    return step(undo_[undo_next_++], now);
  }
  fsm_.on(MigEvent::undone);
  if (!undo_errors_.empty()) {
    error_ += " (undo: " + undo_errors_ + ")";
  }
  return finish(SrcResult::aborted);
}

SrcNext SourceMigration::committed(MigClock::time_point now) {
  return step(SrcAction::release, now);
}

SrcNext SourceMigration::resolve(MigClock::time_point now) {
  resolve_deadline_ = now + cfg_.commit_resolve;
  return query_or_presume(now);
}

SrcNext SourceMigration::query_or_presume(MigClock::time_point now) {
  if (now < resolve_deadline_) {
    return step(SrcAction::query_target, now);
  }
  fsm_.on(MigEvent::b_unreachable);  // presumed commit: never run two copies
  return committed(now);
}

SrcNext SourceMigration::abort_after_commit(MigClock::time_point now) {
  fsm_.on(MigEvent::b_aborted);
  error_ = commit_error_.empty() ? "agent " + cfg_.target + " did not commit" : commit_error_;
  return begin_undo(now);
}

std::string SourceMigration::failed_in() const {
  if (result_ != SrcResult::aborted) {
    return {};
  }
  return to_string(fsm_.failed_in());
}

SrcNext SourceMigration::on(MigClock::time_point now, const StepResult& r) {
  if (cur_.action == SrcAction::finish || r.step != cur_.action) {
    return cur_;
  }
  const bool ok = r.outcome == Outcome::ok;
  switch (cur_.action) {
    case SrcAction::connect_target:
      if (!ok) {
        return fail(now, r.text);
      }
      return step(cfg_.gateway ? SrcAction::connect_gateway : SrcAction::export_flows, now);
    case SrcAction::connect_gateway:
      if (!ok) {
        return fail(now, r.text);
      }
      return step(SrcAction::steer_check, now);
    case SrcAction::steer_check:
      if (!ok) {
        return fail(now, r.text);
      }
      return step(SrcAction::export_flows, now);
    case SrcAction::export_flows:
      fsm_.on(MigEvent::exported);
      if (!ok) {
        return fail(now, r.text);
      }
      if (r.count.value_or(0) == 0) {
        return finish(SrcResult::empty);  // every flow ended before it could move
      }
      cfg_.flows = *r.count;
      return step(SrcAction::freeze_checkpoint, now);
    case SrcAction::freeze_checkpoint:
      if (!ok) {
        return fail(now, r.text);
      }
      fsm_.on(MigEvent::checkpointed);
      // Flows whose connection ended between the export and their checkpoint left the batch
      // (count: the flows kept; unset: all of them).
      if (r.count) {
        if (*r.count == 0) {
          return finish(SrcResult::empty);
        }
        cfg_.flows = *r.count;
      }
      return step(SrcAction::ship_offer, now);
    case SrcAction::ship_offer:
      if (!ok) {
        return fail(now, r.text);
      }
      fsm_.on(MigEvent::shipped);
      return step(SrcAction::await_ready, now);
    case SrcAction::await_ready:
      if (!ok) {
        return fail(now, r.text);
      }
      fsm_.on(MigEvent::ready);
      if (cfg_.gateway) {
        steer_sent_ = true;
        return step(SrcAction::steer, now);
      }
      fsm_.on(MigEvent::steered);
      return step(SrcAction::send_commit, now);
    case SrcAction::steer:
      if (!ok) {
        return fail(now, r.text);
      }
      fsm_.on(MigEvent::steered);
      return step(SrcAction::send_commit, now);
    case SrcAction::send_commit:
      // From here on this host never thaws unless the target says it did not commit.
      fsm_.on(MigEvent::commit_sent);
      if (!ok) {
        commit_error_ = r.text;
        fsm_.on(MigEvent::failure);
        return resolve(now);
      }
      return step(SrcAction::await_commit, now);
    case SrcAction::await_commit:
      if (ok) {
        if (!r.count || *r.count != cfg_.flows) {
          commit_warning_ = "target activated " +
                            (r.count ? std::to_string(*r.count) : std::string("?")) + " of " +
                            std::to_string(cfg_.flows) + " connections: " + r.text;
        }
        fsm_.on(MigEvent::committed);
        return committed(now);
      }
      commit_error_ = r.text;
      if (r.outcome == Outcome::refused) {
        // The target answered but did not commit (e.g. it already self-aborted).
        return abort_after_commit(now);
      }
      fsm_.on(MigEvent::failure);  // stays committing: the target must be asked
      return resolve(now);
    case SrcAction::query_target:
      if (!ok) {
        return go(SrcAction::backoff, now + cfg_.query_backoff);
      }
      if (r.peer_state == "committed") {
        fsm_.on(MigEvent::committed);
        return committed(now);
      }
      if (r.peer_state == "aborted") {
        return abort_after_commit(now);
      }
      if (r.peer_state == "unknown") {
        // The target lost its memory (restart): its staged sockets died silently with it, or
        // it had committed. Never thaw here: presume commit (flagged indeterminate).
        fsm_.on(MigEvent::b_unreachable);
        return committed(now);
      }
      // Still staged: the COMMIT never arrived; the target would self-abort; tell it now.
      return step(SrcAction::abort_staged_target, now);
    case SrcAction::abort_staged_target:
      return abort_after_commit(now);  // its answer does not matter
    case SrcAction::backoff:
      return query_or_presume(now);
    case SrcAction::release:
      return finish(SrcResult::committed);
    case SrcAction::undo_steer_back:
    case SrcAction::undo_tell_b_abort:
    case SrcAction::undo_thaw:
    case SrcAction::undo_unfreeze:
    case SrcAction::undo_return_fds:
      if (!ok) {
        undo_errors_ += r.text;
      }
      return next_undo(now);
    case SrcAction::finish:
      break;
  }
  return cur_;
}

// ---- exports

ExportVerdict judge_exports(std::vector<FlowExport> flows, const std::string& batch_error,
                            const std::string& service, int step_timeout_ms) {
  ExportVerdict v;
  v.error = batch_error;
  v.ended.assign(flows.size(), false);
  v.ended_why.resize(flows.size());
  for (std::size_t i = 0; i < flows.size(); ++i) {
    FlowExport& f = flows[i];
    // A refusal counts as an end when no process holds the socket any more (the server had
    // closed it without an untrack); any other refusal aborts the batch.
    if (f.refused && f.no_holder) {
      f.ended = true;
      f.error += "; no process holds its socket";
    }
    if (f.has_fd && f.socket_closed) {
      f.ended = true;
      f.error = "closed (reset by the peer, or both sides closed it) before it moved";
    }
    if (f.ended) {
      v.ended[i] = true;
      v.ended_why[i] = f.error;
      continue;
    }
    ++v.kept;
    if (v.error.empty() && !f.done) {
      v.error = "the " + service + " server did not export " + f.tuple + " within " +
                std::to_string(step_timeout_ms) + " ms";
    } else if (v.error.empty() && !f.error.empty()) {
      v.error = f.tuple + ": " + f.error;
    }
  }
  return v;
}

LateExport late_export(bool refusal, bool has_fd, bool tracked) {
  if (refusal) {
    return LateExport::ignore_refusal;
  }
  if (has_fd && tracked) {
    return LateExport::hand_back;
  }
  return LateExport::unrequested;
}

// ---- batches

std::size_t BatchRun::next_take(std::size_t room_flows, std::uint64_t limit, std::uint64_t open) {
  last_take_ = 0;
  if (!more()) {
    return 0;
  }
  if (room_flows == 0) {
    error_ = "no room for a batch under RLIMIT_NOFILE " + std::to_string(limit) + " (" +
             std::to_string(open) + " open)";
    return 0;
  }
  last_take_ = std::min(room_flows, total_ - next_);
  next_ += last_take_;
  return last_take_;
}

void BatchRun::on_report(const BatchReport& r) {
  ended_ += r.ended;
  if (r.result == "aborted") {
    stopped_ = true;
    error_ = r.error;
    failed_in_ = r.failed_in;
    return;
  }
  if (r.result == "committed") {
    ++committed_;
    moved_ += r.flows;
    bytes_ += r.bytes_carried;
    replayed_ += r.replayed;
    frozen_max_ = std::max(frozen_max_, r.frozen_ms);
  }
}

const char* BatchRun::result() const {
  if (!error_.empty()) {
    return committed_ == 0 ? "aborted" : "partial";
  }
  return committed_ == 0 ? "empty" : "committed";
}

std::uint64_t BatchRun::not_moved() const {
  const std::uint64_t gone = moved_ + (ended_ - ended_before_);  // ended inside the batches
  return total_ > gone ? total_ - gone : 0;
}

}  // namespace rendr::agents
