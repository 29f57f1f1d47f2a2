// SPDX-License-Identifier: Apache-2.0
// The gateway lab as named network namespaces, for tools (rendr-demo, rendr-lab, benches):
// <prefix>-peer -- <prefix>-gw -- {<prefix>-a, <prefix>-b}. The VIP (10.99.0.1 / fd99::1) is on
// both hosts' lo; gw routes it to the owner. Addresses (v4 /24, v6 /64, nodad):
//   peer eth0 10.0.1.2 fd00:1::2  <->  gw vpeer 10.0.1.1 fd00:1::1
//   a    eth0 10.0.2.2 fd00:2::2  <->  gw va    10.0.2.1 fd00:2::1
//   b    eth0 10.0.3.2 fd00:3::2  <->  gw vb    10.0.3.1 fd00:3::1
// Everything lives in namespaces this object creates; the destructor (and teardown()) deletes
// them unless keep() was called, and create() first removes leftovers of an earlier run with the
// same prefix. A failed create() leaves nothing behind. Not thread-safe.
#pragma once

#include "lab_util.hpp"

#include <rendr/common/endpoint.hpp>
#include <rendr/common/json.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include <memory>
#include <string>
#include <vector>

namespace rendr::lab {

enum class Host { a, b };

// Iface: one interface of a lab topology, as configured (not read back from the kernel).
struct Iface {
  std::string role;  // namespace role ("gw")
  std::string name;  // interface name inside that namespace ("va")
  std::string addr4;  // "10.0.2.1/24", empty if none
  std::string addr6;  // "fd00:2::1/64", empty if none
  std::string peer_role;  // the other end of the veth ("a"), empty for lo
  std::string peer_name;  // "eth0"
};

class GatewayLab {
 public:
  static constexpr const char* kVip4 = "10.99.0.1";
  static constexpr const char* kVip6 = "fd99::1";
  static constexpr const char* kPeer4 = "10.0.1.2";
  static constexpr const char* kPeer6 = "fd00:1::2";
  static constexpr const char* kGwPeer4 = "10.0.1.1";  // gw's address on the peer leg
  static constexpr const char* kGwPeer6 = "fd00:1::1";

  // create builds the lab (needs root). Errors: EPERM (not root, message says so), EINVAL (bad
  // prefix), EIO (a command failed; the message carries its output). On error nothing is left.
  [[nodiscard]] static Result<std::unique_ptr<GatewayLab>> create(std::string prefix);
  // attach returns a handle on a lab that already exists (ENOENT if any namespace is missing).
  // An attached handle does not tear the lab down when destroyed (call teardown() for that).
  [[nodiscard]] static Result<std::unique_ptr<GatewayLab>> attach(std::string prefix);
  ~GatewayLab();
  GatewayLab(const GatewayLab&) = delete;
  GatewayLab& operator=(const GatewayLab&) = delete;

  [[nodiscard]] const std::string& prefix() const { return prefix_; }
  [[nodiscard]] std::string ns(const std::string& role) const { return prefix_ + "-" + role; }
  [[nodiscard]] std::string host_ns(Host h) const { return ns(h == Host::a ? "a" : "b"); }
  // netns_fd opens the namespace (for setns / NetnsEnter).
  [[nodiscard]] Result<UniqueFd> netns_fd(const std::string& role) const;

  // run executes "ip netns exec <ns> sh -c <cmd>"; error includes the output.
  [[nodiscard]] Status run(const std::string& role, const std::string& cmd) const;

  // route_vip_to points gw's VIP routes (v4 and v6) at host |h|.
  [[nodiscard]] Status route_vip_to(Host h);
  // use_userstack provisions host |h| for the userstack method the way root would once: a TUN
  // device |tun|, up, with the VIP (v4 and v6) moved from lo into it by routes and forwarding
  // on, so VIP traffic arriving from gw is routed into the TUN (where the agent's lwIP
  // terminates it). |owner_uid|/|owner_gid| >= 0: the device is made `user U group G`, so an
  // agent running as that user with no capabilities attaches it; < 0: root-owned (attachable by
  // root or CAP_NET_ADMIN only).
  [[nodiscard]] Status use_userstack(Host h, const std::string& tun = "rtun0", int owner_uid = -1,
                                     int owner_gid = -1) const;
  // vip_owner reads gw's VIP route back.
  [[nodiscard]] Result<Host> vip_owner() const;
  // freeze drops the packets of flow |t| (|t| as the host sees it: local = VIP side) in gw's
  // forward path with nftables: both directions, or only host -> peer when
  // |host_to_peer_only|. One flow at a time; unfreeze() lifts it (a no-op when none is frozen).
  [[nodiscard]] Status freeze(const FourTuple& t, bool host_to_peer_only = false);
  [[nodiscard]] Status unfreeze();
  // keep makes the destructor leave the namespaces in place (rendr-lab up; `down` removes them).
  void keep() { owned_ = false; }
  void teardown();

  // Static topology: roles in creation order, every interface, per-leg addresses.
  [[nodiscard]] static const std::vector<std::string>& roles();
  [[nodiscard]] static const std::vector<Iface>& interfaces();
  [[nodiscard]] static std::string host_addr4(Host h);  // "10.0.2.2" / "10.0.3.2"
  [[nodiscard]] static std::string host_addr6(Host h);  // "fd00:2::2" / "fd00:3::2"
  [[nodiscard]] static std::string gw_addr4(Host h);    // gw on that host's leg: "10.0.2.1"
  [[nodiscard]] static std::string gw_addr6(Host h);    // "fd00:2::1"
  [[nodiscard]] static std::string gw_ifname(Host h);   // "va" / "vb"
  static constexpr const char* kHostIf = "eth0";       // host and peer side of each veth
  static constexpr const char* kGwPeerIf = "vpeer";

  // ifindex of |ifname| in the namespace of |role| (read from the kernel).
  [[nodiscard]] Result<int> ifindex(const std::string& role, const std::string& ifname) const;

  // describe writes the lab as one JSON object (docs/lab.md): namespaces, interfaces with
  // ifindex, addresses, VIP and its owner, agent management addresses.
  void describe(JsonWriter& w) const;
  [[nodiscard]] std::string describe() const;

 private:
  explicit GatewayLab(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string prefix_;
  bool frozen_ = false;
  bool owned_ = true;
};

}  // namespace rendr::lab
