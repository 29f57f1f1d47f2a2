// SPDX-License-Identifier: Apache-2.0
// The ingress lab (rendr-tun, docs/tun-ingress.md) as named network namespaces:
//
//   <prefix>-app ==(p1, p2: two engine paths)== <prefix>-egress --(o1)-- <prefix>-origin
//
//   app     TUN rtun0 (10.77.0.1/32, MTU 65535 by default, up), 198.18.0.0/24 routed into it (src 10.77.0.1): what
//           the application there dials in that subnet is terminated by `rendr-tun ingress`
//           on rtun0. 198.19.0.0/24 is routed over p1 to the egress instead: the same origin
//           reached without rendr (the bench's raw baseline).
//   paths   p<i> on both sides: app 10.8<7+i>.0.1/24 <-> egress 10.8<7+i>.0.2/24 (i = 1, 2:
//           10.88.0.0/24 and 10.89.0.0/24); `rendr-tun ingress --peer 10.88.0.2:7000 --peer
//           10.89.0.2:7000` carries each flow over both (path 1 first).
//   egress  `rendr-tun egress` listens there (0.0.0.0:7000); forwarding on; 198.18.0.0/24 and
//           198.19.0.0/24 routed over o1 to the origin (10.90.0.1/24 <-> 10.90.0.2/24).
//   origin  198.18.0.10 (kOrigin4) and 198.19.0.10 (kOriginRaw4) on its lo, default route via
//           the egress: the server the app reaches. It sees the egress's address (10.90.0.1)
//           for flows carried by rendr, the app's (10.88.0.1) for raw ones.
//
// With IngressLabOptions::origin_ns false there is no origin namespace: the origin addresses
// live on the egress's own lo (the tests in tests/priv/tun run their servers there).
// rp_filter is off everywhere, IPv6 DAD off, every veth neighbour pinned (a silent drop never
// depends on neighbour state). drop() silently drops a path in the app namespace with
// nftables (table inet rtdrop: per path chains p<i>_out / p<i>_in, jumped from the output and
// input hooks), both ways, as a dead uplink would.
//
// The lab holds no processes: IngressStack (ingress_stack.hpp) runs rendr-tun and an origin in
// it. The destructor (and teardown()) deletes the namespaces unless keep() was called; create()
// first removes leftovers with the same prefix and leaves nothing behind when it fails. Not
// thread-safe.
#pragma once

#include "lab_util.hpp"

#include <rendr/common/json.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace rendr::lab {

struct IngressLabOptions {
  // false: the origin's addresses on the egress's lo (no origin namespace, no o1 link).
  bool origin_ns = true;
  // More /32 addresses on the origin's lo (e.g. a destination an egress rule denies); they
  // must lie in 198.18.0.0/24 (via rendr) or 198.19.0.0/24 (raw).
  std::vector<std::string> origin_addrs;
  // >= 0: rtun0 is created `user U group G`, so rendr-tun ingress can run as that user with
  // no capability; < 0: root's device.
  int tun_uid = -1;
  int tun_gid = -1;
  // rtun0's MTU (IngressLab::kTunMtu by default; 1500 keeps a 3000-byte ping fragmented).
  int tun_mtu = 65535;
};

// DropCounters: packets the drop rules of one path discarded, per direction (app side).
struct DropCounters {
  bool on = false;
  std::uint64_t out_packets = 0;  // app -> egress
  std::uint64_t in_packets = 0;   // egress -> app
};

class IngressLab {
 public:
  static constexpr int kPaths = 2;
  static constexpr const char* kTun = "rtun0";
  static constexpr const char* kTunAddr4 = "10.77.0.1";
  // rtun0's default MTU: room for rendr-tun ingress --send-mss up to 65000 (large segments
  // towards the app: fewer TUN writes); the kernel's own segments to the TUN are TSO-sized.
  static constexpr int kTunMtu = 65535;
  static constexpr const char* kViaRendr4 = "198.18.0.0/24";  // routed into the TUN
  static constexpr const char* kRaw4 = "198.19.0.0/24";       // routed over p1, no rendr
  static constexpr const char* kOrigin4 = "198.18.0.10";
  static constexpr const char* kOriginRaw4 = "198.19.0.10";
  static constexpr int kEgressPort = 7000;

  // create builds the lab (needs root). Errors: EPERM (not root), EINVAL (bad prefix or origin
  // address), EIO (a command failed, with its output). On error nothing is left behind.
  [[nodiscard]] static Result<std::unique_ptr<IngressLab>> create(std::string prefix,
                                                                  IngressLabOptions opt = {});
  // attach returns a non-owning handle on an existing lab (ENOENT if app or egress is absent).
  [[nodiscard]] static Result<std::unique_ptr<IngressLab>> attach(std::string prefix);
  ~IngressLab();
  IngressLab(const IngressLab&) = delete;
  IngressLab& operator=(const IngressLab&) = delete;

  [[nodiscard]] const std::string& prefix() const { return prefix_; }
  [[nodiscard]] std::string ns(const std::string& role) const { return prefix_ + "-" + role; }
  // origin_role: "origin", or "egress" when the lab has no origin namespace.
  [[nodiscard]] std::string origin_role() const { return origin_ns_ ? "origin" : "egress"; }
  [[nodiscard]] bool has_origin_ns() const { return origin_ns_; }
  [[nodiscard]] Result<UniqueFd> netns_fd(const std::string& role) const;
  // run executes "ip netns exec <prefix>-<role> sh -c <cmd>".
  [[nodiscard]] Status run(const std::string& role, const std::string& cmd) const;

  // Path |i| (1-based, not range-checked): interface name and addresses.
  [[nodiscard]] static std::string ifname(int i);       // "p<i>" on both sides
  [[nodiscard]] static std::string app_addr4(int i);    // "10.88.0.1", "10.89.0.1"
  [[nodiscard]] static std::string egress_addr4(int i); // "10.88.0.2", "10.89.0.2"
  // peers: the --peer list for rendr-tun ingress, path 1 first ("10.88.0.2:7000", ...).
  [[nodiscard]] static std::vector<std::string> peers();
  // active_path: the lab path (1 .. kPaths) the first flow of a rendr-tun status document
  // (either side's) is active on, 0 when it has no active path. The engine may run a flow on
  // path 2 (its first ready path, or a quality switch), so "the active path" is read, never
  // assumed.
  [[nodiscard]] static int active_path(std::string_view tun_status);

  // drop turns the silent drop of path |i| on or off (both directions, in the app namespace).
  // EINVAL for a bad path.
  [[nodiscard]] Status drop(int i, bool on);
  // drop_counters reads path |i|'s drop state and counters back from the kernel.
  [[nodiscard]] Result<DropCounters> drop_counters(int i) const;

  void keep() { owned_ = false; }
  void teardown();

  // describe writes the lab as one JSON object (docs/lab.md "ingress").
  void describe(JsonWriter& w) const;
  [[nodiscard]] std::string describe() const;

 private:
  IngressLab(std::string prefix, bool origin_ns)
      : prefix_(std::move(prefix)), origin_ns_(origin_ns) {}
  std::string prefix_;
  bool origin_ns_;
  bool owned_ = true;
};

}  // namespace rendr::lab
