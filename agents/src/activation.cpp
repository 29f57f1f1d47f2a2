// SPDX-License-Identifier: Apache-2.0
#include <rendr/agents/activation.hpp>

namespace rendr::agents {

const char* to_string(ActivationStep s) {
  switch (s) {
    case ActivationStep::hold: return "hold";
    case ActivationStep::lift_first: return "lift_first";
    case ActivationStep::leave_repair: return "leave_repair";
    case ActivationStep::replay_held: return "replay_held";
    case ActivationStep::lift: return "lift";
    case ActivationStep::drop_freeze: return "drop_freeze";
    case ActivationStep::done: return "done";
    case ActivationStep::failed: return "failed";
  }
  return "?";
}

ActivationStep FlowActivation::start() {
  if (started_) {
    return step_;
  }
  started_ = true;
  return go(frozen_ ? ActivationStep::hold : ActivationStep::leave_repair);
}

ActivationStep FlowActivation::on_hold(bool ok) {
  if (!expect(ActivationStep::hold)) {
    return step_;
  }
  return go(ok ? ActivationStep::leave_repair : ActivationStep::lift_first);
}

ActivationStep FlowActivation::on_lifted_first() {
  if (!expect(ActivationStep::lift_first)) {
    return step_;
  }
  frozen_ = false;
  lifted_early_ = true;
  return go(ActivationStep::leave_repair);
}

ActivationStep FlowActivation::on_left_repair(bool ok) {
  if (!expect(ActivationStep::leave_repair)) {
    return step_;
  }
  if (!ok) {
    return go(frozen_ ? ActivationStep::drop_freeze : ActivationStep::failed);
  }
  return go(frozen_ ? ActivationStep::replay_held : ActivationStep::done);
}

ActivationStep FlowActivation::on_replayed(std::size_t taken) {
  if (!expect(ActivationStep::replay_held)) {
    return step_;
  }
  ++rounds_;
  // Packets came in while the earlier ones were fed: look again, so the lift leaves as few as
  // possible to feed after the peer's newer packets may already reach the socket.
  if (taken > 0 && rounds_ < kMaxReplayRounds) {
    return step_;
  }
  return go(ActivationStep::lift);
}

ActivationStep FlowActivation::on_lifted() {
  if (!expect(ActivationStep::lift)) {
    return step_;
  }
  frozen_ = false;
  return go(ActivationStep::done);
}

ActivationStep FlowActivation::on_dropped() {
  if (!expect(ActivationStep::drop_freeze)) {
    return step_;
  }
  frozen_ = false;
  return go(ActivationStep::failed);
}

}  // namespace rendr::agents
