// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the named-netns labs (gateway_lab, multipath_lab, ingress_lab) and rendr-lab: running
// commands inside a namespace, listing and deleting a prefix's namespaces, reading interface
// indexes, and NetnsEnter (move the calling thread into a namespace and back). Everything here
// only touches namespaces under /run/netns whose names the caller passes in. Not thread-safe
// beyond what the kernel gives (NetnsEnter is per thread).
#pragma once

#include <rendr/common/netns.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include <sys/types.h>

#include <map>
#include <utility>
#include <string>
#include <vector>

namespace rendr::lab {

// kNoDadSysctl turns IPv6 duplicate address detection off for interfaces created afterwards.
// Run it in a fresh namespace before adding veths: otherwise their link-local addresses stay
// tentative for a second or two, and a forwarding namespace (gw) cannot resolve neighbours for
// forwarded IPv6 packets meanwhile (its NS would need a usable link-local source).
inline constexpr const char* kNoDadSysctl =
    "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0";

// shell runs "sh -c cmd" and returns its exit status; output goes to |out| if given.
int shell(const std::string& cmd, std::string* out = nullptr);

// shell_quote wraps |s| in single quotes for sh.
[[nodiscard]] std::string shell_quote(const std::string& s);

// run_in executes "ip netns exec <netns> sh -c <cmd>"; the error names the namespace, the
// command, its exit status and its output.
[[nodiscard]] Status run_in(const std::string& netns, const std::string& cmd);
// output_in is run_in returning the command's output (stdout+stderr).
[[nodiscard]] Result<std::string> output_in(const std::string& netns, const std::string& cmd);

// run_script runs |cmds| in order in ONE shell (one process spawn instead of one per command;
// lab set-up spends most of its time spawning processes): the first that fails stops it, and
// the error names |what|, that command and its output. Commands that act inside a namespace
// use in_ns().
[[nodiscard]] Status run_script(const std::string& what, const std::vector<std::string>& cmds);
// in_ns prefixes |cmd| so it acts in |netns|: "ip -n <netns> ..." for an ip command (no mount
// namespace, unlike "ip netns exec"), "ip netns exec <netns> ..." for anything else.
[[nodiscard]] std::string in_ns(const std::string& netns, const std::string& cmd);

// netns_exists says whether /run/netns/<name> exists.
[[nodiscard]] bool netns_exists(const std::string& name);
// netns_add creates a named namespace with "lo" up. Fails with EPERM and a "needs root" hint
// when the caller lacks CAP_SYS_ADMIN, with EEXIST when the name is taken.
[[nodiscard]] Status netns_add(const std::string& name);
// netns_del kills the processes left in a named namespace and deletes it; a missing one is not
// an error.
void netns_del(const std::string& name);
// open_netns opens /run/netns/<name> (for setns / NetnsEnter).
[[nodiscard]] Result<UniqueFd> open_netns(const std::string& name);

// Link: one line of "ip -o link show" inside a namespace.
struct Link {
  int ifindex = 0;
  std::string name;
};
// links lists the interfaces of a named namespace.
[[nodiscard]] Result<std::vector<Link>> links(const std::string& netns);
// ifindex returns the index of |ifname| in |netns| (ENODEV when absent).
[[nodiscard]] Result<int> ifindex(const std::string& netns, const std::string& ifname);

// wait_links_ready polls (bounded by |timeout_ms|) until every non-loopback interface of |netns|
// is "state UP" with a real qdisc. A veth's carrier goes through linkwatch, which may delay it
// by up to a second; until then its qdisc is noop and every packet sent is silently dropped,
// which would cost the first ping or SYN a retransmission timeout. ETIMEDOUT names the link.
[[nodiscard]] Status wait_links_ready(const std::string& netns, int timeout_ms = 5000);

// macs reads the MAC address of every interface of |netns| that has one, by name.
[[nodiscard]] Result<std::map<std::string, std::string>> macs(const std::string& netns);
// neighbour_pins returns the commands (for run_script) that pin each of |peer_addrs| to
// |peer_mac| on |ifname| in |netns| (see pin_neighbour).
[[nodiscard]] std::vector<std::string> neighbour_pins(const std::string& netns,
                                                      const std::string& ifname,
                                                      const std::vector<std::string>& peer_addrs,
                                                      const std::string& peer_mac);
// mac_of reads the MAC address of |ifname| in |netns| ("aa:bb:cc:dd:ee:ff").
[[nodiscard]] Result<std::string> mac_of(const std::string& netns, const std::string& ifname);
// pin_neighbour adds permanent neighbour entries in |netns| on |ifname| for the other end of a
// veth (|peer_addrs|, bare v4/v6 addresses, all owned by |peer_mac|). The labs pin every veth
// neighbour: no ARP/ND round trip on first use (right after setup the first IPv6 neighbour
// solicitation is sometimes lost, costing a 1 s retransmit), and a silent drop never depends
// on neighbour state.
[[nodiscard]] Status pin_neighbour(const std::string& netns, const std::string& ifname,
                                   const std::vector<std::string>& peer_addrs,
                                   const std::string& peer_mac);

// kProbePing: a reachability probe that returns as soon as one reply arrives (20 ms between
// attempts, 3 s deadline). For about a second after a lab is built, the first IPv6 packets to a
// namespace's own address are sometimes dropped (seen on 6.x kernels, with DAD off and
// neighbours pinned); probing until a reply arrives means create() returns a lab whose first
// real packet does not pay a 1 s retransmission. Needs root (interval < 200 ms).
inline constexpr const char* kProbePing = "ping -q -c1 -i0.02 -w3";

// lab_roles lists every namespace role any lab may create ("peer", "gw", "a", "b", "client",
// "server", "app", "egress", "origin"); a lab's namespace is "<prefix>-<role>".
[[nodiscard]] const std::vector<std::string>& lab_roles();
// existing_lab_namespaces returns the "<prefix>-<role>" namespaces that exist now.
[[nodiscard]] std::vector<std::string> existing_lab_namespaces(const std::string& prefix);
// remove_lab deletes every lab namespace of |prefix| (see lab_roles) and returns the names it
// deleted. Only names built from the prefix and the known roles are touched.
std::vector<std::string> remove_lab(const std::string& prefix);
// valid_prefix: 1..32 chars of [A-Za-z0-9_.-], not starting with '-' or '.'.
[[nodiscard]] Status valid_prefix(const std::string& prefix);

// Processes a stack (AgentStack, IngressStack) started, each under its log name, with its log
// in <run dir>/<name>.log.
using StackProcesses = std::vector<std::pair<std::string, pid_t>>;
// read_run_log: <dir>/<name>.log, empty when it cannot be read.
[[nodiscard]] std::string read_run_log(const std::string& dir, const std::string& name);
// stop_stack ends |procs| (SIGTERM, up to 1 s each, then SIGKILL) and removes |dir|; with
// RENDR_KEEP_LOGS set (not "0") it keeps the logs there and deletes everything else.
void stop_stack(StackProcesses& procs, const std::string& dir);

// NetnsEnter moves the calling thread into a namespace and back (RAII; rendr/common/netns.hpp).
using rendr::NetnsEnter;

}  // namespace rendr::lab
