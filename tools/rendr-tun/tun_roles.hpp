// SPDX-License-Identifier: Apache-2.0
// The two roles of rendr-tun (docs/tun-ingress.md), each driven by its decision hook so that
// an embedder can replace the CLI's config-file / option policy with its own callback:
//   run_ingress: terminate every TCP flow routed into the TUN in userstack, ask |decide| (deny,
//     or the peers carrying it), dial an engine flow with the L3 identity and relay; a denied
//     flow, a failed dial or an engine flow that fails (a refusal from the egress, the
//     migration budget) resets that one application flow, counted by reason.
//   run_egress: accept engine flows, ask |decide| (deny, redirect, connect), connect to the
//     destination and relay; what cannot be landed is refused over the engine flow (REFUSE)
//     with a RefusalCode.
// Both run until killed; ready lines go to stdout, per-flow logs to stderr.
#pragma once

#include "tun_policy.hpp"

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace rendr::tun {

struct CommonOptions {
  std::string status_socket;               // --status-socket PATH (empty: none)
  std::vector<std::uint8_t> listener_key;  // --key-file FILE (empty: unkeyed)
};

struct IngressOptions : CommonOptions {
  std::string tun;
  FlowDecisionHook decide;
};

struct EgressOptions : CommonOptions {
  std::string listen;
  EgressHook decide;
  std::chrono::milliseconds connect_timeout{10000};
};

[[nodiscard]] int run_ingress(const IngressOptions& o);
[[nodiscard]] int run_egress(const EgressOptions& o);

}  // namespace rendr::tun
