// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the eBPF freeze - setup, the grace period after a flow left, peer-ack hints.
#include "agent_internal.hpp"

#include <net/if.h>

namespace rendr::agents {

// tc_filter_handle: a nonzero tc filter handle derived from the role and agent name (FNV-1a).
std::uint32_t tc_filter_handle(const std::string& role, const std::string& name) {
  std::uint32_t h = 2166136261U;
  for (char c : "rendr-" + role + ":" + name) {
    h = (h ^ static_cast<unsigned char>(c)) * 16777619U;
  }
  return h | 1U;
}

Status Agent::init_freeze() {
  if (!cfg_.no_freeze && cfg_.steer_ifaces.empty()) {
    // The handle follows the agent's name: a restarted agent (after a kill) replaces the
    // filters its previous run left on the devices instead of stacking more beside them.
    ebpf::FreezerOptions fo;
    fo.tc_handle = tc_filter_handle("freeze", cfg_.name);
    auto fz = ebpf::Freezer::create(fo);
    if (!fz) {
      freeze_error_ = fz.error().message();
      log_.warn("eBPF freeze unavailable: " + freeze_error_);
    } else {
      freezer_ = std::make_unique<ebpf::Freezer>(std::move(*fz));
      auto ifs = cfg_.freeze_ifaces.empty() ? default_ifaces() : cfg_.freeze_ifaces;
      for (const auto& ifn : ifs) {
        unsigned idx = ::if_nametoindex(ifn.c_str());
        if (idx == 0) {
          return make_error(std::errc::no_such_device, "--freeze-iface " + ifn + ": no such device");
        }
        RENDR_TRY_CTX(freezer_->attach(static_cast<int>(idx)), "attach freeze to " + ifn);
        log_.info("freeze attached to " + ifn);
      }
    }
  }
  return {};
}

void Agent::cancel_freeze(const FourTuple& t) {
  auto it = grace_.find(t.to_string());
  if (it != grace_.end()) {
    it->second->cancel();
    grace_.erase(it);
  }
  if (freezer_) {
    (void)freezer_->unfreeze(t);
  }
}

std::uint64_t Agent::peer_ack_hint(const FourTuple& t) const {
  if (!freezer_) {
    return 0;
  }
  auto c = freezer_->counters(t);
  if (!c || !c->peer_ack) {
    return 0;
  }
  return (std::uint64_t{1} << 48) | (std::uint64_t{c->peer_window} << 32) | *c->peer_ack;
}

std::pair<std::uint64_t, std::uint64_t> Agent::freeze_hints(const FourTuple& t) const {
  if (!freezer_) {
    return {0, 0};
  }
  auto c = freezer_->counters(t);
  if (!c) {
    return {0, 0};
  }
  const std::uint64_t ack =
      c->peer_ack ? (std::uint64_t{1} << 48) | (std::uint64_t{c->peer_window} << 32) | *c->peer_ack
                  : 0;
  return {ack, c->egress_packets};
}

void Agent::schedule_unfreeze(const FourTuple& t) {
  if (!freezer_) {
    return;
  }
  auto timer = std::make_unique<asio::steady_timer>(io_, ms(cfg_.freeze_grace_ms));
  std::string key = t.to_string();
  timer->async_wait([this, t, key](asio::error_code ec) {
    if (ec) {
      return;
    }
    (void)freezer_->unfreeze(t);
    grace_.erase(key);
  });
  grace_[key] = std::move(timer);
}

}  // namespace rendr::agents
