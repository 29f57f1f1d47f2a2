// SPDX-License-Identifier: Apache-2.0
// AgentStack: rendr-agent in gw, a and b of a named gateway lab (tools/lab/gateway_lab.hpp),
// with a fresh CA and one certificate per agent, for the demo, the benchmarks and the agents'
// privileged tests. Processes run via `ip netns exec`; logs and sockets live in a private temp
// dir. Destruction stops every process it spawned (SIGTERM, then SIGKILL) and removes the dir
// (RENDR_KEEP_LOGS=1 keeps the logs).
//
//   auto stack = AgentStack::start(*lab, {.agent_bin = ..., .rendrctl_bin = ...});
//   (*stack)->spawn("a", {server_bin, "--agent", (*stack)->sock("a")}, "srv-a");
//   auto report = (*stack)->migrate("a", {"--all"}, "b");
#pragma once

#include "lab/gateway_lab.hpp"
#include "lab/lab_util.hpp"

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
  std::vector<std::string> extra_agent_args;  // for every agent
  // Per agent ("gw", "a", "b"): arguments after extra_agent_args when start() starts it (e.g.
  // {"--fault", "..."}); a later start_agent() passes its own instead.
  std::map<std::string, std::vector<std::string>> agent_args;
  // false: gw lists only host a as a backend, so it refuses to steer anything to b.
  bool gw_knows_b = true;
  // More certificates from the stack's CA, for names no agent is configured with.
  std::vector<std::string> extra_certs;
  // Host agents ("a", "b") that run with no privilege at all, as unpriv_uid:unpriv_gid under
  // `setpriv --reuid U --regid G --clear-groups --inh-caps=-all --bounding-set=-all` (pair them
  // with a userstack host provisioned for that user: GatewayLab::use_userstack(h, tun, U, G)).
  // The stack hands that user what the agent opens: the stack dir (its control socket), its
  // certificate and key, and a private TUN clone node (dir/tun, owned by the user, mode 0600),
  // passed as --tun-clone: this machine's /dev/net/tun is 0600 root (Debian's udev makes it
  // 0666; there the node is not needed, but it does no harm).
  std::vector<std::string> unprivileged;
  int unpriv_uid = 4242;
  int unpriv_gid = 4242;
};

// make_certs creates a CA in |dir| with `rendrctl cert init` (common name |ca_name|; empty:
// rendrctl's default) and issues one certificate per name (dir/<name>.pem and .key, valid two
// days). Errors: EIO with rendrctl's output.
[[nodiscard]] Status make_certs(const std::string& rendrctl_bin, const std::string& dir,
                                const std::vector<std::string>& names,
                                const std::string& ca_name = {});

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
  // unprivileged says whether agent |name| runs without privilege (AgentStackOptions).
  [[nodiscard]] bool unprivileged(const std::string& name) const;
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
  // alive says whether the process spawned under |log| still runs.
  [[nodiscard]] bool alive(const std::string& log) const;
  // stop sends |sig| to the process spawned under |log|, waits for it and forgets it (nothing
  // happens when there is none).
  void stop(const std::string& log, int sig);
  // start_agent starts agent |name| ("gw", "a", "b"; again after stop()) with the stack's
  // options, extra_agent_args and |extra|, and waits (10 s) until it logs "ready". ETIMEDOUT
  // with its log when it does not.
  [[nodiscard]] Status start_agent(const std::string& name,
                                   const std::vector<std::string>& extra = {});
  // issue_cert issues one more certificate from the stack's CA (dir/<name>.pem and .key), e.g.
  // for a name the agents do not list.
  [[nodiscard]] Status issue_cert(const std::string& name) const;
  // wait_log waits (bounded) until |name|'s log contains |text|.
  [[nodiscard]] bool wait_log(const std::string& name, const std::string& text, int timeout_ms) const;

 private:
  AgentStack(const GatewayLab& lab, AgentStackOptions o) : lab_(lab), opt_(std::move(o)) {}
  const GatewayLab& lab_;
  AgentStackOptions opt_;
  std::string dir_;
  StackProcesses procs_;
};

}  // namespace rendr::lab
