// SPDX-License-Identifier: Apache-2.0
// The two roles of rendr-tun (docs/tun-ingress.md), each driven by its decision hook so that
// an embedder can replace the CLI's config-file / option policy with its own callback:
//   run_ingress: terminate every TCP flow routed into the TUN in userstack, ask |decide| (deny,
//     or the peers carrying it), dial an engine flow with the L3 identity and relay; a denied
//     flow, a failed dial or an engine flow that fails (a refusal from the egress, the
//     migration budget) resets that one application flow, counted by reason.
//     UDP datagrams routed into the TUN ride engine packet flows, one per 5-tuple, decided
//     the same way (tun_udp.hpp).
//   run_egress: accept engine flows, ask |decide| (deny, redirect, connect), connect to the
//     destination and relay; what cannot be landed is refused over the engine flow (REFUSE)
//     with a RefusalCode. Packet flows with a UDP identity are relayed through a connected
//     UDP socket, one datagram per packet.
// Both run until killed; ready lines go to stdout, per-flow logs to stderr.
#pragma once

#include "tun_policy.hpp"
#include "tun_status.hpp"

#include <rendr/engine/stats_json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdint>
#include <string>
#include <vector>

namespace rendr::tun {

struct CommonOptions {
  std::string status_socket;               // --status-socket PATH (empty: none)
  // --status-dir DIR: where `rendrctl status` finds this process (<DIR>/tun-<pid>.sock;
  // tun_status_dir.hpp). Default: the engine status dir; empty ("--status-dir none"): nowhere.
  std::string status_dir = engine::engine_status_dir();
  std::vector<std::uint8_t> listener_key;  // --key-file FILE (empty: unkeyed)
  // --probe-ms N: the engine flows probe each path every N ms and call a path dead after 3 N
  // ms of silence (FlowConfig probe_interval / fresh_min); 0 = the engine's defaults (1 s,
  // 500 ms). Faster failover for more probe traffic per flow.
  std::chrono::milliseconds probe{0};
  // --later-paths-ms N (ingress): a flow dials its first path at once and the others N ms later
  // or once it carried 64 KiB (DialOptions::later_paths_after / later_paths_bytes), so a
  // request/response that ends sooner pays for one path only; 0 = every path at once. A path
  // that joins later may become the flow's active one: tests and benches read the active path
  // from the status before they drop one.
  std::chrono::milliseconds later_paths{250};
};

// UdpOptions: the ingress's UDP flow table (docs/tun-ingress.md "UDP").
struct UdpOptions {
  std::size_t max_flows = 1024;                   // --udp-max-flows: then new 5-tuples drop
  std::chrono::milliseconds idle_timeout{60000};  // --udp-idle-timeout: no datagram either way
  std::size_t queue_packets = 256;  // per flow, waiting for the dial / the engine's window
  std::size_t queue_bytes = 1U << 20;
};

// publish_status serves |s| in o.status_dir for `rendrctl status`; a failure (an unprivileged
// run cannot write /run/rendr) is a warning on stderr, not a reason to stop.
inline void publish_status(const CommonOptions& o, TunStatus& s) {
  if (o.status_dir.empty()) {
    return;
  }
  if (auto st = s.publish(o.status_dir); !st) {
    std::fprintf(stderr,
                 "rendr-tun: warning: not listed by `rendrctl status` (%s; --status-dir DIR "
                 "names a writable directory, rendrctl status --engine-dir DIR reads it)\n",
                 st.error().message().c_str());
  }
}

// apply_probe sets |c|'s probing from |o| (nothing when o.probe is 0).
inline void apply_probe(const CommonOptions& o, engine::FlowConfig& c) {
  // Transport silence (docs/engine.md "Paths: probes and death", rule 3): off in the engine by
  // default, on here - a silently dropped uplink is failed over in tens of ms.
  c.ack_silence_min = std::chrono::milliseconds(30);
  if (o.probe.count() > 0) {
    c.probe_interval = o.probe;
    c.fresh_min = 3 * o.probe;
  }
}

struct IngressOptions : CommonOptions {
  std::string tun;
  std::string tun_clone;  // --tun-clone PATH: the TUN clone node (empty: /dev/net/tun)
  FlowDecisionHook decide;
  UdpOptions udp;
  // lwIP's send MSS towards the app (StackOptions::send_mss; 0 = lwIP's own, <= 1460). Larger
  // segments cut the TUN writes per byte; needs a TUN MTU above it.
  std::uint16_t send_mss = 0;
};

struct EgressOptions : CommonOptions {
  std::string listen;
  EgressHook decide;
  std::chrono::milliseconds connect_timeout{10000};
};

[[nodiscard]] int run_ingress(const IngressOptions& o);
[[nodiscard]] int run_egress(const EgressOptions& o);

}  // namespace rendr::tun
