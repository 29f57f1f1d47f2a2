// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the native method's flow operations (flow_method.hpp) - a kernel socket frozen
// by the eBPF freeze and captured / rebuilt with TCP_REPAIR.
#include "agent_internal.hpp"

#include <rendr/agents/activation.hpp>

namespace rendr::agents {

class NativeSourceFlow final : public SourceFlow {
 public:
  NativeSourceFlow(Agent& a, const FourTuple& t, int fd, std::optional<PreFreeze> pre)
      : a_(a), t_(t), fd_(fd), pre_(std::move(pre)) {}
  Result<TcpSnapshot> checkpoint() override {
    if (a_.freezer_) {
      a_.cancel_freeze(t_);
      if (auto fz = a_.freezer_->freeze(t_); !fz) {
        return fz.error().with_context("freeze " + t_.to_string());
      }
      froze_ = true;
    }
    // Options, addresses and the duplicate taken before the freeze (read_export_options) keep
    // those calls out of the frozen window.
    auto cp = pre_ ? a_.repairer_.checkpoint(pre_->fd, &pre_->options, &pre_->tuple)
                   : a_.repairer_.checkpoint(fd_);
    if (!cp) {
      return std::move(cp).take_error();
    }
    // Bytes in flight: ask the peer what it has, so the target resends at once what the network
    // lost just before the freeze instead of waiting seconds for a timer. The freeze records the
    // answer (peer_ack_hint at COMMIT; the target's own freeze if it comes after the steer).
    if (froze_) {
      if (auto asked = a_.repairer_.ask_peer_ack(cp->socket, cp->snapshot); !asked.ok()) {
        a_.log_.warn(asked.error().message());
      }
    }
    socket_ = std::move(cp->socket);
    captured_ = true;
    return std::move(cp->snapshot);
  }
  std::pair<std::uint64_t, std::uint64_t> freeze_hints() const override {
    return a_.freeze_hints(t_);
  }
  std::uint64_t peer_ack_hint() const override { return a_.peer_ack_hint(t_); }
  Packets take_held() override {
    if (!a_.freezer_) {
      return {};
    }
    auto pk = a_.freezer_->take_dropped(t_);
    return pk ? std::move(*pk) : Packets{};
  }
  std::uint64_t unrecorded() const override {
    if (!a_.freezer_) {
      return 0;
    }
    auto c = a_.freezer_->counters(t_);
    return c ? c->replay_skipped + c->replay_lost : 0;
  }
  void release() override {
    a_.repairer_.release(std::move(socket_));
    a_.schedule_unfreeze(t_);
  }
  Status thaw() override {
    // The exported fd is the same socket; the thawed duplicate is closed here.
    auto fd = a_.repairer_.thaw(std::move(socket_));
    if (!fd) {
      return std::move(fd).take_error();
    }
    return {};
  }
  void unfreeze() override {
    if (froze_ && a_.freezer_) {
      (void)a_.freezer_->unfreeze(t_);
    }
  }
  bool captured() const override { return captured_; }

 private:
  Agent& a_;
  FourTuple t_;
  int fd_;
  std::optional<PreFreeze> pre_;
  repair::RepairSocket socket_;
  bool froze_ = false;
  bool captured_ = false;
};

class NativeStagedFlow final : public StagedFlow {
 public:
  NativeStagedFlow(Agent& a, repair::StagedSocket s, bool frozen_here)
      : a_(a), s_(std::move(s)), t_(s_.tuple()), frozen_here_(frozen_here) {}
  const FourTuple& tuple() const override { return t_; }
  const TcpSnapshot& snapshot() const override { return s_.snapshot(); }
  Result<UniqueFd> activate(std::optional<repair::PeerAck> peer_ack, Packets replay) override {
    // The order (FlowActivation): our freeze keeps holding the peer's data while the socket
    // leaves repair mode and takes the source's packets, then ours; it lifts only then. Lifted
    // first, the peer's packets met a socket still in repair mode (lost) or overtook the
    // replay (the peer retransmitted what the replay carried).
    // The peer's answer to the source's ask_peer_ack may have come after the steer: then our
    // freeze recorded it. The later of the two ACKs counts.
    if (frozen_here_ && a_.freezer_) {
      if (auto c = a_.freezer_->counters(t_);
          c && c->peer_ack &&
          (!peer_ack || static_cast<std::int32_t>(*c->peer_ack - peer_ack->ack) >= 0)) {
        peer_ack = repair::PeerAck{*c->peer_ack, c->peer_window};
        a_.log_.info("activate " + t_.to_string() + ": peer ack seen here " +
                     std::to_string(static_cast<std::int32_t>(peer_ack->ack -
                                                              s_.snapshot().send_seq)) +
                     " past snd_una");
      }
    }
    FlowActivation act(frozen_here_ && a_.freezer_);
    Result<UniqueFd> fd = make_error(std::errc::operation_canceled, "not activated");
    auto feed = [&](const Packets& pk) {
      if (pk.empty() || !fd) {
        return;
      }
      if (auto n = a_.repairer_.replay(t_, pk); !n) {
        a_.log_.warn("activate " + t_.to_string() + ": " + n.error().message());
      }
    };
    for (ActivationStep step = act.start(); !act.finished();) {
      switch (step) {
        case ActivationStep::hold:
          if (auto h = a_.freezer_->hold(t_); !h.ok()) {
            a_.log_.warn("activate " + t_.to_string() + ": " + h.error().message() +
                         "; lifting the freeze before repair-off");
            step = act.on_hold(false);
          } else {
            step = act.on_hold(true);
          }
          break;
        case ActivationStep::lift_first:
          if (auto u = a_.freezer_->unfreeze_take(t_); u) {
            for (auto& p : u->held) {
              replay.push_back(std::move(p));
            }
          }
          frozen_here_ = false;
          step = act.on_lifted_first();
          break;
        case ActivationStep::leave_repair:
          fd = a_.repairer_.activate(std::move(s_), peer_ack, replay);
          step = act.on_left_repair(fd.ok());
          break;
        case ActivationStep::replay_held: {
          auto pk = a_.freezer_->take_dropped(t_);
          const std::size_t n = pk ? pk->size() : 0;
          if (n > 0) {
            feed(*pk);
          }
          step = act.on_replayed(n);
          break;
        }
        case ActivationStep::lift:
          if (auto u = a_.freezer_->unfreeze_take(t_); u) {
            feed(u->held);
          }
          frozen_here_ = false;
          step = act.on_lifted();
          break;
        case ActivationStep::drop_freeze:
          (void)a_.freezer_->unfreeze(t_);
          frozen_here_ = false;
          step = act.on_dropped();
          break;
        case ActivationStep::done:
        case ActivationStep::failed:
          break;
      }
    }
    return fd;
  }
  void release() override {
    a_.repairer_.release(std::move(s_));
    if (frozen_here_ && a_.freezer_) {
      (void)a_.freezer_->unfreeze(t_);
      frozen_here_ = false;
    }
  }
  void release_staged() override {
    a_.repairer_.release(std::move(s_));
    if (frozen_here_ && a_.freezer_) {
      a_.schedule_unfreeze(t_);
      frozen_here_ = false;
    }
  }

 private:
  Agent& a_;
  repair::StagedSocket s_;
  FourTuple t_;
  bool frozen_here_;
};

std::unique_ptr<SourceFlow> Agent::native_source_flow(const FourTuple& t, int fd,
                                                      std::optional<PreFreeze> pre) {
  return std::make_unique<NativeSourceFlow>(*this, t, fd, std::move(pre));
}

Result<std::unique_ptr<StagedFlow>> Agent::native_staged_flow(TcpSnapshot snap,
                                                              const repair::RestoreOptions& ro) {
  const FourTuple tuple = snap.tuple;
  if (!netns_cookie_) {
    UniqueFd probe(::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!probe.valid()) {
      probe = UniqueFd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    }
    netns_cookie_ = probe.valid() ? repairer_.netns_cookie(probe.get()) : std::nullopt;
  }
  repair::RestoreOptions o = ro;
  if (!o.netns_cookie) {
    o.netns_cookie = *netns_cookie_;
  }
  auto st = repairer_.restore_staged(std::move(snap), o);
  if (!st) {
    return std::move(st).take_error();
  }
  // Hold what reaches this host for the connection until it goes live (the gateway may steer
  // before COMMIT); it is replayed after activation, so the staged socket sees nothing.
  const bool frozen = freezer_ && freezer_->freeze(tuple);
  return std::unique_ptr<StagedFlow>(
      std::make_unique<NativeStagedFlow>(*this, std::move(*st), frozen));
}

}  // namespace rendr::agents
