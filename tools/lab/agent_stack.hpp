// SPDX-License-Identifier: Apache-2.0
// AgentStack: rendr-agent in gw, a and b of a named gateway lab (tools/lab/gateway_lab.hpp),
// with a fresh CA and one certificate per agent, for the demo and the benchmarks. Processes
// run via `ip netns exec`; logs and sockets live in a private temp dir. Destruction stops the
// processes (SIGTERM, then SIGKILL) and removes the dir.
#pragma once

#include "lab/gateway_lab.hpp"

#include <rendr/common/result.hpp>

#include <map>
#include <memory>
#include <string>
#include <sys/types.h>
#include <vector>

namespace rendr::lab {

struct AgentStackOptions {
  std::string agent_bin;    // rendr-agent
  std::string rendrctl_bin; // rendrctl (cert init/issue)
  int step_timeout_ms = 5000;
  int freeze_grace_ms = 2000;
  std::vector<std::string> extra_agent_args;
};

class AgentStack {
 public:
  [[nodiscard]] static Result<std::unique_ptr<AgentStack>> start(const GatewayLab& lab,
                                                                 AgentStackOptions o);
  ~AgentStack();
  AgentStack(const AgentStack&) = delete;
  AgentStack& operator=(const AgentStack&) = delete;

  [[nodiscard]] const std::string& dir() const { return dir_; }
  // sock: control socket of agent "gw", "a" or "b".
  [[nodiscard]] std::string sock(const std::string& agent) const { return dir_ + "/" + agent + ".sock"; }
  // spawn runs argv inside namespace |role| with stdout+stderr to dir/<log>.log; the process is
  // stopped with the stack.
  [[nodiscard]] Result<pid_t> spawn(const std::string& role, const std::vector<std::string>& argv,
                                    const std::string& log);
  [[nodiscard]] std::string log(const std::string& name) const;
  // migrate asks |from|'s agent to move the selected flows (e.g. {"--flow", T} / {"--all"}) to
  // |to| and returns the JSON report (result committed or aborted).
  [[nodiscard]] Result<std::string> migrate(const std::string& from,
                                            const std::vector<std::string>& flows,
                                            const std::string& to, bool all = false,
                                            const std::string& service = {}) const;
  // pid: the process spawned under |log| (agents: "gw", "a", "b"); -1 when there is none.
  [[nodiscard]] pid_t pid(const std::string& log) const;
  // issue_cert issues one more certificate from the stack's CA (dir/<name>.pem and .key), e.g.
  // for a name the agents do not list.
  [[nodiscard]] Status issue_cert(const std::string& name) const;
  // wait_log waits (bounded) until |name|'s log contains |text|.
  [[nodiscard]] bool wait_log(const std::string& name, const std::string& text, int timeout_ms) const;

 private:
  AgentStack(const GatewayLab& lab, AgentStackOptions o) : lab_(lab), opt_(std::move(o)) {}
  Status start_agent(const std::string& name);
  const GatewayLab& lab_;
  AgentStackOptions opt_;
  std::string dir_;
  std::vector<std::pair<std::string, pid_t>> procs_;
};

}  // namespace rendr::lab
