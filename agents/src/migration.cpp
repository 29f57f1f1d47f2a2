// SPDX-License-Identifier: Apache-2.0
#include <rendr/agents/migration.hpp>

namespace rendr::agents {

const char* to_string(MigState s) {
  switch (s) {
    case MigState::init: return "init";
    case MigState::exporting: return "exporting";
    case MigState::frozen: return "frozen";
    case MigState::offered: return "offered";
    case MigState::staged: return "staged";
    case MigState::steered: return "steered";
    case MigState::committing: return "committing";
    case MigState::committed: return "committed";
    case MigState::aborting: return "aborting";
    case MigState::aborted: return "aborted";
  }
  return "?";
}

const char* to_string(MigEvent e) {
  switch (e) {
    case MigEvent::start: return "start";
    case MigEvent::exported: return "exported";
    case MigEvent::checkpointed: return "checkpointed";
    case MigEvent::shipped: return "shipped";
    case MigEvent::ready: return "ready";
    case MigEvent::steered: return "steered";
    case MigEvent::commit_sent: return "commit_sent";
    case MigEvent::committed: return "committed";
    case MigEvent::b_aborted: return "b_aborted";
    case MigEvent::b_unreachable: return "b_unreachable";
    case MigEvent::failure: return "failure";
    case MigEvent::undone: return "undone";
  }
  return "?";
}

const char* to_string(UndoAction a) {
  switch (a) {
    case UndoAction::steer_back: return "steer_back";
    case UndoAction::tell_b_abort: return "tell_b_abort";
    case UndoAction::thaw: return "thaw";
    case UndoAction::unfreeze: return "unfreeze";
    case UndoAction::return_fds: return "return_fds";
  }
  return "?";
}

MigTransition transition(MigState s, MigEvent ev) {
  using S = MigState;
  using E = MigEvent;
  auto to = [](S n) { return MigTransition{true, n}; };
  switch (s) {
    case S::init:
      if (ev == E::start) return to(S::exporting);
      if (ev == E::failure) return to(S::aborting);
      break;
    case S::exporting:
      if (ev == E::exported) return to(S::exporting);  // fds in; checkpoint next
      if (ev == E::checkpointed) return to(S::frozen);
      if (ev == E::failure) return to(S::aborting);
      break;
    case S::frozen:
      if (ev == E::shipped) return to(S::offered);
      if (ev == E::failure) return to(S::aborting);
      break;
    case S::offered:
      if (ev == E::ready) return to(S::staged);
      if (ev == E::failure) return to(S::aborting);
      break;
    case S::staged:
      if (ev == E::steered) return to(S::steered);
      if (ev == E::failure) return to(S::aborting);
      break;
    case S::steered:
      if (ev == E::commit_sent) return to(S::committing);
      if (ev == E::failure) return to(S::aborting);
      break;
    case S::committing:
      if (ev == E::committed || ev == E::b_unreachable) return to(S::committed);
      // B answered that it never committed: safe to undo everything.
      if (ev == E::b_aborted) return to(S::aborting);
      // A failure here (channel broke after COMMIT) is not an abort: B must be asked first.
      if (ev == E::failure) return to(S::committing);
      break;
    case S::aborting:
      if (ev == E::undone) return to(S::aborted);
      if (ev == E::failure) return to(S::aborting);  // an undo step failed: keep undoing
      break;
    case S::committed:
    case S::aborted:
      break;
  }
  return MigTransition{};
}

std::vector<UndoAction> abort_plan(MigState s) {
  using S = MigState;
  using U = UndoAction;
  switch (s) {
    case S::init:
      return {};
    case S::exporting:
      // Some fds may be in hand (checkpointed or not): thaw is a no-op for the others.
      return {U::thaw, U::unfreeze, U::return_fds};
    case S::frozen:
    case S::offered:
    case S::staged:
      // B may hold staged sockets (silent): tell it first, then resume here.
      return {U::tell_b_abort, U::thaw, U::unfreeze, U::return_fds};
    case S::steered:
    case S::committing:  // only reached through b_aborted
      return {U::steer_back, U::tell_b_abort, U::thaw, U::unfreeze, U::return_fds};
    case S::committed:
    case S::aborting:
    case S::aborted:
      return {};
  }
  return {};
}

bool MigrationFsm::on(MigEvent ev) {
  MigTransition t = transition(state_, ev);
  if (!t.valid) {
    trace_.push_back(std::string("refused ") + to_string(ev) + " in " + to_string(state_));
    return false;
  }
  if (t.next == MigState::aborting && state_ != MigState::aborting) {
    failed_in_ = state_;
  }
  if (state_ == MigState::committing && ev == MigEvent::b_unreachable) {
    indeterminate_ = true;
  }
  trace_.push_back(std::string(to_string(state_)) + " --" + to_string(ev) + "--> " +
                   to_string(t.next));
  state_ = t.next;
  return true;
}

}  // namespace rendr::agents
