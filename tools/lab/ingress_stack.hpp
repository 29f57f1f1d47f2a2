// SPDX-License-Identifier: Apache-2.0
// IngressStack: `rendr-tun egress` in the egress namespace and `rendr-tun ingress` on rtun0 in
// the app namespace of an IngressLab (ingress_lab.hpp), each with a status socket, for the
// bench, the demo and their tests. Processes are started with setns + exec (no `ip netns exec`
// per process); their stdout+stderr go to <dir>/<log>.log in a private temp dir. start() waits
// until both print "ready". Destruction stops every process it spawned (SIGTERM, then SIGKILL)
// and removes the dir (RENDR_KEEP_LOGS=1 keeps the logs).
//
//   auto stack = IngressStack::start(*lab, {.tun_bin = RENDR_TUN_BIN});
//   (*stack)->spawn(lab->origin_role(), {"python3", "-m", "http.server", ...}, "origin");
//   std::string json = (*stack)->status("ingress");
#pragma once

#include "lab/ingress_lab.hpp"
#include "lab/lab_util.hpp"

#include <rendr/common/result.hpp>

#include <memory>
#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace rendr::lab {

struct IngressStackOptions {
  std::string tun_bin;  // rendr-tun
  // After "rendr-tun egress --listen 0.0.0.0:7000 --status-socket S".
  std::vector<std::string> egress_args = {"--allow", "198.18.0.0/24"};
  // After "rendr-tun ingress --tun rtun0 --status-socket S --peer P1 --peer P2".
  std::vector<std::string> ingress_args;
};

class IngressStack {
 public:
  // start spawns the egress, then the ingress, and waits (10 s each) for their "ready" line.
  // ETIMEDOUT with the process's log when one does not get ready.
  [[nodiscard]] static Result<std::unique_ptr<IngressStack>> start(const IngressLab& lab,
                                                                   IngressStackOptions o);
  ~IngressStack();
  IngressStack(const IngressStack&) = delete;
  IngressStack& operator=(const IngressStack&) = delete;

  [[nodiscard]] const std::string& dir() const { return dir_; }
  // status_socket: the status socket of "ingress" or "egress".
  [[nodiscard]] std::string status_socket(const std::string& role) const {
    return dir_ + "/" + role + ".sock";
  }
  // status reads one status document from |role|'s socket ("" when it cannot connect).
  [[nodiscard]] std::string status(const std::string& role) const;
  // spawn runs argv in the lab namespace |role| with stdout+stderr to dir/<log>.log; the
  // process is stopped with the stack.
  [[nodiscard]] Result<pid_t> spawn(const std::string& role, const std::vector<std::string>& argv,
                                    const std::string& log);
  [[nodiscard]] std::string log(const std::string& name) const;
  // wait_log waits (bounded) until |name|'s log contains |text|; false when it did not or the
  // process exited first.
  [[nodiscard]] bool wait_log(const std::string& name, const std::string& text,
                              int timeout_ms) const;
  // pid: the process spawned under |log| ("ingress", "egress"); -1 when there is none.
  [[nodiscard]] pid_t pid(const std::string& log) const;

 private:
  explicit IngressStack(const IngressLab& lab) : lab_(lab) {}
  const IngressLab& lab_;
  std::string dir_;
  StackProcesses procs_;
};

}  // namespace rendr::lab
