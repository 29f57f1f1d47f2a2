// SPDX-License-Identifier: Apache-2.0
// The target agent's activation of one staged kernel socket at COMMIT, I/O-free: the order in
// which the socket leaves repair mode, takes the packets the peer sent while the connection was
// frozen, and the freeze here lifts. agents/src/native_flow.cpp runs the steps:
//
//   FlowActivation act(frozen_here);
//   for (ActivationStep s = act.start(); !act.finished();) {
//     s = act.on_<step>(run(s));      // I/O: the freezer here, repair; on_hold(ok), ...
//   }
//
// The rule behind the order: a packet of the flow that reaches the socket while it is still in
// repair mode is lost, and one that reaches it before the replayed (older) packets makes it
// SACK past the hole, so the peer retransmits everything the replay carries. So the freeze here
// stays on until the replay is in, and only changes what it lets through once the socket is
// live (hold: the socket's own packets and the peer's bare ACKs pass, the peer's data is still
// held and recorded):
//
//   frozen here:  hold -> leave_repair -> replay_held (again while it found packets, at most
//                 kMaxReplayRounds) -> lift -> done
//   hold failed:  lift_first -> leave_repair -> done   (the order of old: what arrives between
//                 the lift and repair-off is lost and the peer retransmits it)
//   not frozen:   leave_repair -> done
//   leave_repair failed: drop_freeze (when frozen here) -> failed
//
// leave_repair is repair::Repairer::activate with the source's packets as its replay; past
// repair-off nothing is undone, so a failed replay step never stops the lift.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rendr::agents {

enum class ActivationStep : std::uint8_t {
  hold,          // the freeze here holds only the peer's data; the socket may speak
  lift_first,    // (hold failed) take what the freeze here recorded and lift it: it joins the
                 // source's packets in leave_repair's replay
  leave_repair,  // repair off (window probe, unsent bytes, options, ACK kick), then the replay
  replay_held,   // take what the freeze here recorded so far and feed it to the socket
  lift,          // lift the freeze here and feed what it recorded since the last take
  drop_freeze,   // activation failed: lift the freeze here, forget what it recorded
  done,          // the socket is live, the freeze here lifted
  failed,        // the socket could not be activated (the freeze here lifted)
};
[[nodiscard]] const char* to_string(ActivationStep s);

class FlowActivation {
 public:
  // Rounds of replay_held at most before the lift (a peer that keeps sending must not keep the
  // flow held: what comes after the last round is fed by lift).
  static constexpr int kMaxReplayRounds = 3;

  // |frozen_here|: the freeze on this host holds the flow (it was frozen when staged).
  explicit FlowActivation(bool frozen_here) : frozen_(frozen_here) {}

  ActivationStep start();
  ActivationStep on_hold(bool ok);
  ActivationStep on_lifted_first();
  ActivationStep on_left_repair(bool ok);
  // on_replayed: |taken| packets were taken (and fed) in this replay_held round.
  ActivationStep on_replayed(std::size_t taken);
  ActivationStep on_lifted();
  ActivationStep on_dropped();

  [[nodiscard]] ActivationStep step() const { return step_; }
  [[nodiscard]] bool finished() const {
    return step_ == ActivationStep::done || step_ == ActivationStep::failed;
  }
  // lifted_early: the freeze lifted before repair-off (hold failed): packets may have been lost
  // in between; the caller reports it.
  [[nodiscard]] bool lifted_early() const { return lifted_early_; }
  [[nodiscard]] int replay_rounds() const { return rounds_; }

 private:
  // expect: |s| is the step an event may answer; anything else keeps the current step.
  [[nodiscard]] bool expect(ActivationStep s) const { return started_ && step_ == s; }
  ActivationStep go(ActivationStep s) { return step_ = s; }

  bool frozen_;
  bool lifted_early_ = false;
  int rounds_ = 0;
  ActivationStep step_ = ActivationStep::hold;
  bool started_ = false;
};

}  // namespace rendr::agents
