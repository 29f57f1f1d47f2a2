// SPDX-License-Identifier: Apache-2.0
// rendr-agent internals: configuration and the Agent (control socket, peer channel, migration
// orchestration, gateway steering). The composition root; nothing depends on it.
#pragma once

#include <rendr/common/result.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace rendr::agents {

struct BackendConfig {
  std::string name;     // agent name of the backend host
  std::string ifname;   // gateway device towards it
  std::string nexthop;  // its address on that link (optional)
};

struct AgentConfig {
  std::string name;                                  // this agent's name (= its certificate CN)
  std::string control_socket = "/run/rendr/agent.sock";
  std::string listen;                                // addr:port for the TLS agent channel
  std::map<std::string, std::string> peers;          // name -> addr:port
  std::string gateway;                               // peer name of the gateway agent ("" = none)
  std::string cert, key, ca;                         // PEM paths
  std::vector<std::string> freeze_ifaces;            // empty: every up non-loopback device
  bool no_freeze = false;                            // (tests) do not load the eBPF freeze
  // gateway role
  std::vector<std::string> steer_ifaces;
  std::vector<std::string> vips;
  std::vector<BackendConfig> backends;
  std::string default_backend;
  // Steering entries of flows that ended (both FINs, or an RST) are removed after this long
  // without packets; the table is swept every steer_gc_interval_ms (0: never).
  int steer_fin_linger_ms = 60000;
  int steer_rst_linger_ms = 10000;
  int steer_gc_interval_ms = 10000;
  // timing
  int step_timeout_ms = 5000;
  int commit_resolve_ms = 10000;
  int staged_timeout_ms = 30000;
  int freeze_grace_ms = 2000;
  // Before the freeze, wait up to this long for exported sockets' send queues to drain (0: no).
  int drain_ms = 500;
  // limits
  std::size_t max_frame_bytes = 256U << 20;  // one agent-channel message (a whole offer)
  // test-only fault injection (docs/native-migration.md "Fault injection")
  std::vector<std::string> faults;
  std::string log_level;
  // Migration method (docs/native-migration.md "Method selection"): "auto" (native when
  // TCP_REPAIR and BPF work, else userstack when --tun attaches), "native" or "userstack"; an
  // explicit method that is not available fails the start with the reason.
  std::string method = "auto";
  std::string tun;        // userstack: the pre-provisioned TUN device the VIPs are routed into
  std::string tun_clone;  // userstack: the clone node (default /dev/net/tun)
  // userstack: which registered service serves connections to each local (VIP) port.
  std::map<std::uint16_t, std::string> service_ports;
};

// run_agent runs until SIGINT/SIGTERM. Returns the process exit status.
int run_agent(const AgentConfig& cfg);

// parse_agent_args parses rendr-agent's command line. Errors name the bad argument.
[[nodiscard]] Result<AgentConfig> parse_agent_args(int argc, char** argv, bool& help);
[[nodiscard]] std::string agent_usage();

}  // namespace rendr::agents
