// SPDX-License-Identifier: Apache-2.0
// Peer-observed migration downtime, as `rendr-bench migrate` measures it and `rendr-bench
// userstack` reuses for its userstack -> userstack moves: a client in the lab's peer namespace
// sends a 16-byte echo message every 1 ms to VIP:port (an echo server registered with the
// agents of hosts a and b serves it), the flow moves between a and b, and each migration's
// downtime is the worst round trip of the messages sent around it.
#pragma once

#include "lab/agent_stack.hpp"
#include "lab/gateway_lab.hpp"

#include <rendr/common/result.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace rendr::bench {

struct DowntimeResult {
  std::vector<double> downtime_ms;  // per migration: worst echo RTT from asking to 50 ms after
  std::vector<std::string> from;    // per migration: the host it moved from ("a" or "b")
  std::vector<double> frozen_ms;    // per committed migration: the agent's freeze-to-commit time
  double baseline_p99_ms = 0;       // echo RTT p99 before the first migration
  std::uint64_t bytes_lost = 0;     // echo bytes lost or out of order
  std::string failures;             // "" when every migration committed and every echo came back
};

// measure_downtime connects to VIP:|port| (the flow starts on host a), echoes every 1 ms and
// migrates the flow |migrations| times a <-> b, 100 ms apart. Errors: the connection failed.
[[nodiscard]] Result<DowntimeResult> measure_downtime(const lab::GatewayLab& lab,
                                                      const lab::AgentStack& stack,
                                                      std::uint16_t port, int migrations);

}  // namespace rendr::bench
