// SPDX-License-Identifier: Apache-2.0
// The agents' test lab: tools/lab's gateway lab (support/gateway_fixture.hpp) with its
// AgentStack (rendr-agent in gw, a and b, mutual TLS with the stack's CA), a pattern_server
// registered with the agents of both hosts, rendrctl run against any agent, and pattern
// clients in the peer. Everything (namespaces, processes, temp dir) goes away with the
// fixture, also on failure.
#pragma once

#include "lab/agent_stack.hpp"
#include "support/gateway_fixture.hpp"
#include "support/pattern.hpp"

#include <rendr/common/unique_fd.hpp>

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace rendr::test {

// scaled_ms: |ms| times RENDR_TEST_TIME_SCALE (1..20, default 1), the factor the lab applies to
// the agents' step timeout for slow (sanitizer) builds.
int scaled_ms(int ms);

struct AgentLabOptions {
  std::vector<std::string> faults_a;
  std::vector<std::string> faults_b;
  int step_timeout_ms = 3000;
  bool start_servers = true;
  // The gateway knows hostB as a backend; false starts it with hostA only, so it refuses to
  // steer anything to B.
  bool gw_knows_b = true;
  std::vector<std::string> faults_gw;
  // More certificates from the lab's CA, for names no agent is configured with.
  std::vector<std::string> extra_certs;
  std::vector<std::string> server_args;  // extra pattern_server arguments (test hooks)
  std::vector<std::string> gw_args;      // extra rendr-agent arguments for the gateway
  // Hosts ("a", "b") that serve with the userstack method: the VIP is routed into a TUN there
  // (GatewayLab::use_userstack), the agent runs --method userstack, and the pattern server
  // listens on loopback only (every VIP connection reaches it through its agent).
  std::vector<std::string> userstack_hosts;
};

class AgentLab {
 public:
  explicit AgentLab(const AgentLabOptions& o = {});
  ~AgentLab();
  AgentLab(const AgentLab&) = delete;
  AgentLab& operator=(const AgentLab&) = delete;

  GatewayFixture lab;
  std::string dir;  // the stack's temp dir: certificates, control sockets, logs

  [[nodiscard]] std::string sock(const std::string& agent) const { return stack_->sock(agent); }
  // rendrctl runs the CLI against |agent|'s control socket; returns its exit status, stdout in
  // |out| (stderr in |err| if given).
  int rendrctl(const std::string& agent, const std::vector<std::string>& args, std::string& out,
               std::string* err = nullptr) const;
  // migrate runs `rendrctl migrate ... --json` from |from| and returns the JSON report line.
  std::string migrate(const std::string& from, const std::vector<std::string>& select,
                      const std::string& to, int* status = nullptr) const;
  // start_agent / kill_agent manage one agent process (name: gw, a, b); a userstack host's
  // agent starts with its userstack arguments again.
  void start_agent(const std::string& name, const std::vector<std::string>& faults = {});
  void kill_agent(const std::string& name, int sig = 9);
  // pid of a process the lab started (agents gw, a, b; servers srv-a, srv-b), 0 if none.
  [[nodiscard]] pid_t pid(const std::string& name) const;
  void start_server(const std::string& host);
  [[nodiscard]] std::string log(const std::string& name) const;
  [[nodiscard]] bool server_alive(const std::string& host) const;
  // make_certs issues ca + one cert per name into |d| (CA named |ca_name|).
  static void make_certs(const std::string& d, const std::vector<std::string>& names,
                         const std::string& ca_name = "ca");

 private:
  AgentLabOptions opt_;
  std::unique_ptr<rendr::lab::AgentStack> stack_;  // declared after |lab|: stopped before it
};

// PatternClient: a connection from the peer to the VIP, reading the server's pattern stream
// (checked at every offset) and sending the upstream pattern, on its own thread.
class PatternClient {
 public:
  PatternClient(const GatewayFixture& lab, std::uint16_t port, std::uint64_t up_limit = 64ULL << 20,
                bool v6 = false);
  ~PatternClient();
  [[nodiscard]] FourTuple tuple() const { return tuple_; }
  [[nodiscard]] std::uint64_t down() const { return down_.load(); }
  [[nodiscard]] std::uint64_t up() const { return up_.load(); }
  [[nodiscard]] bool failed() const { return failed_.load(); }
  [[nodiscard]] std::string error() const;
  void set_reading(bool on) { reading_.store(on); }
  // wait_window_full waits (reading off) until the client's receive queue has not grown for
  // |stable_ms|: the server filled the window and, writing on, its own send queue. Returns the
  // queued bytes, or -1 on timeout.
  int wait_window_full(int stable_ms, int timeout_ms) const;
  // wait_down waits until |bytes| more were received (false on timeout or failure).
  bool wait_down(std::uint64_t more, int timeout_ms);
  void stop();

 private:
  void run();
  UniqueFd fd_;
  FourTuple tuple_;
  std::uint64_t up_limit_;
  std::atomic<std::uint64_t> down_{0};
  std::atomic<std::uint64_t> up_{0};
  std::atomic<bool> failed_{false};
  std::atomic<bool> stop_{false};
  std::atomic<bool> reading_{true};
  mutable std::mutex mu_;
  std::string error_;
  std::thread t_;
};


// metric reads one Prometheus value of |agent| (`rendrctl metrics`); ~0 when absent.
std::uint64_t metric(AgentLab& al, const std::string& agent, const std::string& name);

// expect_healthy checks (Catch CHECKs) that |c| receives 8 MiB more, pattern-exact, that the
// peer saw no RST since |rst_before| and that both pattern servers still run.
void expect_healthy(AgentLab& al, PatternClient& c, long long rst_before);

// userstack_options: a lab whose hosts a and b both serve with the userstack method.
AgentLabOptions userstack_options();

// wait_tracked waits until `rendrctl flows` on |agent| lists |flow|.
bool wait_tracked(const AgentLab& al, const std::string& agent, const std::string& flow,
                  int timeout_ms);
// wait_log waits until the log of |name| contains |text|.
bool wait_log(const AgentLab& al, const std::string& name, const std::string& text,
              int timeout_ms);
// migrate_killing_a asks agent a to move |flow| to b and kills a (SIGKILL) 1 s into that
// migration, inside the 3 s pause of the lab's stall fault. Returns rendrctl's exit status; the
// agent dies under it, so it prints no report (AgentLab::migrate would throw). |out| gets
// rendrctl's stdout and stderr.
int migrate_killing_a(AgentLab& al, const std::string& flow, std::string& out);

}  // namespace rendr::test
