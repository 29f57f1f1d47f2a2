// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the migration method, chosen once at start (docs/native-migration.md "Method
// selection"). native: kernel sockets with TCP_REPAIR and the eBPF freeze. userstack: VIP
// connections routed into a pre-provisioned TUN are terminated in the lwIP of this host's
// userstack keeper and bridged to the servers (userstack_serve.cpp, us_keeper.hpp). auto takes native when it works, else userstack when
// --tun attaches; an explicit --method that cannot work here fails the start with the reason.
#include "agent_internal.hpp"

namespace rendr::agents {

Status Agent::init_method() {
  const bool gateway = !cfg_.steer_ifaces.empty();
  if (cfg_.method != "userstack") {
    RENDR_TRY(init_freeze());  // warns (freeze_error_) when the kernel refuses the BPF program
  }
  const bool freeze_ok = freezer_ != nullptr || cfg_.no_freeze;
  if (tcp_repair_ok_ && freeze_ok) {
    method_ = "native";
    method_reason_ = "TCP_REPAIR and eBPF freeze work here";
  } else if (!tcp_repair_ok_) {
    method_reason_ = "TCP_REPAIR unavailable: " + tcp_repair_error_;
  } else if (!gateway) {
    method_reason_ = "eBPF freeze unavailable: " + freeze_error_;
  } else {
    method_reason_ = "TCP_REPAIR and eBPF steering work here";
  }
  if (cfg_.method == "native" && method_ != "native") {
    return make_error(std::errc::operation_not_supported,
                      "--method native is not available here: " + method_reason_);
  }
  if (method_ == "native" || gateway) {
    return {};
  }
  if (cfg_.tun.empty()) {
    if (cfg_.method == "userstack") {  // parse_agent_args refuses this already
      return make_error(std::errc::invalid_argument, "--method userstack needs --tun DEV");
    }
    method_reason_ += "; no --tun device for the userstack method";
    return {};
  }
  const std::string native_why = method_reason_;
  if (auto s = start_userstack(); !s) {
    if (cfg_.method == "userstack") {
      return s.error().with_context("--method userstack is not available here");
    }
    method_reason_ = native_why + "; userstack unavailable: " + s.error().message();
    log_.warn("no migration method: " + method_reason_);
    return {};
  }
  // A keeper that outlived an earlier run holds the device: the probe found it busy, yet it
  // attaches - through the keeper.
  for (auto& c : probed_.caps) {
    if ((c.name == "tun" || c.name == "userstack") && !c.ok && c.reason == "busy") {
      c.ok = true;
      c.detail.clear();
      c.reason.clear();
    }
  }
  if (probed_.method == "engine") {
    probed_.method = "userstack";
    probed_.reason = "TUN device " + cfg_.tun + " is held by this host's userstack keeper";
  }
  method_ = "userstack";
  method_reason_ = cfg_.method == "userstack"
                       ? "--method userstack: TUN device " + cfg_.tun + " attached"
                       : "native unavailable (" + native_why + "); TUN device " + cfg_.tun +
                             " attached";
  return {};
}

}  // namespace rendr::agents
