// SPDX-License-Identifier: Apache-2.0
// rendrctl commands that talk to a running rendr-agent over its control socket.
#pragma once

#include <string>
#include <vector>

namespace rendrctl {

// Each returns the process exit status (0 ok, 1 failed, 2 usage error).
int cmd_agent_status(const std::vector<std::string>& args);  // status --agent/--peer
int cmd_flows(const std::vector<std::string>& args);
int cmd_migrate(const std::vector<std::string>& args);
int cmd_metrics(const std::vector<std::string>& args);
// wants_agent: whether `status` arguments ask the agent rather than probing locally.
bool wants_agent(const std::vector<std::string>& args);
extern const char* const kAgentUsage;

}  // namespace rendrctl
