// SPDX-License-Identifier: Apache-2.0
// The multipath lab as named network namespaces: <prefix>-client and <prefix>-server joined by N
// veth pairs (2..8). Path i (1-based) is the pair "p<i>" (same name on both sides) with
//   client 10.10.<i>.1/24 fd10:<i>::1/64   <->   server 10.10.<i>.2/24 fd10:<i>::2/64
// so traffic to a path's server address leaves through that path. rp_filter is off in both
// namespaces (an engine may send from one path's address over another).
//
// Per-path impairments, all reversible and all inside the lab's namespaces:
//   drop  - nftables silent DROP of every packet the sending side puts on the path (no ICMP, no
//           RST: the path just goes dark, IPv6 neighbour discovery included);
//   loss  - nftables "numgen random mod 100 < N" drop of N % of the packets;
//   rate  - tbf qdisc as the root of the sending side's interface.
// Each applies per direction: client_to_server acts in the client's output, server_to_client in
// the server's. This kernel has no netem and no fq: delay comes from rendr-impair, not here.
// Nftables layout, per namespace: table inet rendr_lab, base chain "output" (hook output) with
// 'oifname "p<i>" jump p<i>_drop' and 'jump p<i>_loss'; those chains hold the rules (with
// counters) and are flushed by clear(). Not thread-safe.
#pragma once

#include "lab_util.hpp"

#include <rendr/common/json.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace rendr::lab {

enum class Dir { both, client_to_server, server_to_client };

struct MultipathOptions {
  int paths = 2;  // 2..8
  std::uint64_t rate_bps = 0;  // tbf on every path, both directions; 0 = unlimited
};

// PathState: a path's impairments as read back from the kernel, per direction.
struct PathDirState {
  bool drop = false;
  int loss_percent = 0;
  std::uint64_t rate_bps = 0;  // 0 = no tbf
  std::uint64_t dropped_packets = 0;  // nft counters of the drop/loss rules
};
struct PathState {
  PathDirState client_to_server;
  PathDirState server_to_client;
};

class MultipathLab {
 public:
  static constexpr int kMinPaths = 2;
  static constexpr int kMaxPaths = 8;

  // create builds the lab (needs root). Errors: EPERM (not root), EINVAL (bad prefix, paths out
  // of range), EIO (a command failed, with its output). On error nothing is left behind.
  // Leftovers of an earlier run with the same prefix are removed first.
  [[nodiscard]] static Result<std::unique_ptr<MultipathLab>> create(std::string prefix,
                                                                    MultipathOptions opt = {});
  // attach returns a non-owning handle on an existing lab (ENOENT if absent); it counts the
  // paths from the interfaces it finds.
  [[nodiscard]] static Result<std::unique_ptr<MultipathLab>> attach(std::string prefix);
  ~MultipathLab();
  MultipathLab(const MultipathLab&) = delete;
  MultipathLab& operator=(const MultipathLab&) = delete;

  [[nodiscard]] const std::string& prefix() const { return prefix_; }
  [[nodiscard]] int paths() const { return paths_; }
  [[nodiscard]] std::string ns(const std::string& role) const { return prefix_ + "-" + role; }
  [[nodiscard]] std::string client_ns() const { return ns("client"); }
  [[nodiscard]] std::string server_ns() const { return ns("server"); }
  [[nodiscard]] Result<UniqueFd> netns_fd(const std::string& role) const;
  // run executes "ip netns exec <prefix>-<role> sh -c <cmd>".
  [[nodiscard]] Status run(const std::string& role, const std::string& cmd) const;

  // Addresses and names of path |i| (1-based; not range-checked).
  [[nodiscard]] static std::string ifname(int i);        // "p<i>" on both sides
  [[nodiscard]] static std::string client_addr4(int i);  // "10.10.<i>.1"
  [[nodiscard]] static std::string server_addr4(int i);  // "10.10.<i>.2"
  [[nodiscard]] static std::string client_addr6(int i);  // "fd10:<i>::1"
  [[nodiscard]] static std::string server_addr6(int i);  // "fd10:<i>::2"

  // drop turns the silent DROP of path |i| on or off. EINVAL for a bad path.
  [[nodiscard]] Status drop(int i, bool on, Dir dir = Dir::both);
  // loss drops |percent| (0..100; 0 removes) of path |i|'s packets at random.
  [[nodiscard]] Status loss(int i, int percent, Dir dir = Dir::both);
  // rate limits path |i| to |bits_per_sec| with tbf (0 removes the qdisc).
  [[nodiscard]] Status rate(int i, std::uint64_t bits_per_sec, Dir dir = Dir::both);
  // clear removes every impairment of path |i| (both directions) and resets its counters.
  [[nodiscard]] Status clear(int i);
  // state reads path |i|'s impairments and drop counters back from the kernel.
  [[nodiscard]] Result<PathState> state(int i) const;
  // dropped sums the packets dropped by path |i|'s drop/loss rules (both directions) since they
  // were last set.
  [[nodiscard]] Result<std::uint64_t> dropped(int i) const;

  void keep() { owned_ = false; }
  void teardown();

  // describe writes the lab as one JSON object (docs/lab.md), including each path's state.
  void describe(JsonWriter& w) const;
  [[nodiscard]] std::string describe() const;

 private:
  MultipathLab(std::string prefix, int paths) : prefix_(std::move(prefix)), paths_(paths) {}
  [[nodiscard]] Status check_path(int i) const;
  [[nodiscard]] Status set_chain(int i, const std::string& kind, const std::string& rule, Dir dir);
  std::string prefix_;
  int paths_;
  bool owned_ = true;
};

// parse_rate reads a tc-style rate: a number with an optional unit, case-insensitive: bit, kbit,
// mbit, gbit (bits/s, powers of 1000), bps, kbps, mbps, gbps (BYTES/s, as in tc). A bare number
// is bits/s. EINVAL for anything else or for 0.
[[nodiscard]] Result<std::uint64_t> parse_rate(std::string_view text);
// format_rate renders bits/s as tc would accept it ("100mbit", "1500kbit", "64bit").
[[nodiscard]] std::string format_rate(std::uint64_t bits_per_sec);

}  // namespace rendr::lab
