// SPDX-License-Identifier: Apache-2.0
// The agent's userstack method in the gateway lab (tools/lab): hosts a and b have no VIP on lo;
// it is routed into a TUN device (GatewayLab::use_userstack) where rendr-agent --method
// userstack terminates each connection in its lwIP and hands it, bridged, to the registered
// server through the embed API. The gateway stays native (eBPF steering). Stock clients in the
// peer namespace see a plain TCP server.
#include "lab/agent_stack.hpp"
#include "lab/gateway_lab.hpp"
#include "lab/lab_util.hpp"
#include "support/netns.hpp"  // unique_prefix

#include <rendr/common/json.hpp>

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace rendr;

namespace {

struct UsLab {
  std::unique_ptr<lab::GatewayLab> gw;
  std::unique_ptr<lab::AgentStack> stack;
  std::string sha;
};

std::vector<std::string> us_args() {
  return {"--method", "userstack", "--tun", "rtun0", "--service-port", "http=8080"};
}

// make_lab: both hosts on the userstack method, rendr-fileserver registered as "http" on each
// (its own listener on loopback only: every VIP connection reaches it through the agent).
UsLab make_lab(const std::string& prefix, std::uint64_t mib) {
  UsLab l;
  auto g = lab::GatewayLab::create(prefix);
  REQUIRE(g.ok());
  l.gw = std::move(*g);
  for (auto h : {lab::Host::a, lab::Host::b}) {
    auto st = l.gw->use_userstack(h);
    INFO((st ? "" : st.error().message()));
    REQUIRE(st.ok());
  }
  lab::AgentStackOptions so;
  so.agent_bin = RENDR_AGENT_BIN;
  so.rendrctl_bin = RENDRCTL_BIN;
  so.agent_args = {{"a", us_args()}, {"b", us_args()}};
  auto s = lab::AgentStack::start(*l.gw, so);
  INFO((s ? "" : s.error().message()));
  REQUIRE(s.ok());
  l.stack = std::move(*s);
  const std::string dir = l.stack->dir();
  REQUIRE(lab::run_in(l.gw->ns("a"), "head -c " + std::to_string(mib << 20) +
                                         " /dev/urandom > " + dir + "/big").ok());
  auto sha = lab::output_in(l.gw->ns("a"), "sha256sum " + dir + "/big | cut -c1-64");
  REQUIRE(sha.ok());
  l.sha = sha->substr(0, 64);
  for (const char* h : {"a", "b"}) {
    const std::string lg = std::string("fs-") + h;
    REQUIRE(l.stack->spawn(h, {RENDR_FILESERVER_BIN, "--agent", l.stack->sock(h), "--service",
                               "http", "--root", dir, "--listen", "127.0.0.1:8080"},
                           lg).ok());
    REQUIRE(l.stack->wait_log(lg, "ready", 10000));
  }
  return l;
}

std::string sh_out(const std::string& ns, const std::string& cmd) {
  auto r = lab::output_in(ns, cmd + "; echo \"EXIT=$?\"");
  return r ? *r : "EXIT=-1 " + r.error().message();
}

int exit_of(const std::string& out) {
  auto p = out.rfind("EXIT=");
  return p == std::string::npos ? -1 : std::atoi(out.c_str() + p + 5);
}

// tcp_counter reads one Tcp counter of /proc/net/snmp in namespace |ns| (-1 if missing).
long long tcp_counter(const std::string& ns, const std::string& name) {
  auto out = lab::output_in(ns, "grep '^Tcp:' /proc/net/snmp");
  if (!out) {
    return -1;
  }
  std::istringstream in(*out);
  std::string names;
  std::string values;
  std::getline(in, names);
  std::getline(in, values);
  std::istringstream n(names);
  std::istringstream v(values);
  std::string a;
  std::string b;
  while (n >> a && v >> b) {
    if (a == name) {
      return std::atoll(b.c_str());
    }
  }
  return -1;
}

std::string agent_status(const UsLab& l, const std::string& agent) {
  auto r = lab::output_in(l.gw->ns(agent),
                          std::string(RENDRCTL_BIN) + " status --agent " + l.stack->sock(agent) +
                              " --json");
  return r ? *r : r.error().message();
}

off_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : 0;
}

}  // namespace

TEST_CASE("curl downloads from an unmodified embed server through the userstack agent",
          "[.userstack_agent][userstack_agent][netns]") {
  constexpr std::uint64_t kMiB = 64;
  UsLab l = make_lab(test::unique_prefix("usa"), kMiB);
  const std::string st0 = agent_status(l, "a");
  INFO(st0);
  CHECK(json_scalar(st0, "method") == "userstack");

  const std::string out = l.stack->dir() + "/got";
  const long long rst0 = tcp_counter(l.gw->ns("peer"), "EstabResets");
  std::string result;
  // ~64 MB/s: the download lasts about a second, long enough to see the flow in the status.
  std::thread t([&] {
    result = sh_out(l.gw->ns("peer"), "curl -sS --fail --limit-rate 64M -o " + out +
                                          " http://" + lab::GatewayLab::kVip4 + ":8080/big");
  });
  for (int i = 0; i < 200 && file_size(out) < (4 << 20); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  const std::string mid = agent_status(l, "a");
  t.join();
  INFO(result);
  INFO(mid);
  REQUIRE(exit_of(result) == 0);
  auto sha = lab::output_in(l.gw->ns("peer"), "sha256sum " + out + " | cut -c1-64");
  REQUIRE(sha.ok());
  CHECK(sha->substr(0, 64) == l.sha);
  CHECK(tcp_counter(l.gw->ns("peer"), "EstabResets") == rst0);
  // Mid-transfer the status listed the flow with its lwIP state and queues.
  CHECK(mid.find("\"userstack\"") != std::string::npos);
  CHECK(mid.find(":8080->10.0.1.2:") != std::string::npos);
  CHECK(mid.find("\"state\":\"ESTABLISHED\"") != std::string::npos);
  CHECK(mid.find("\"send_queue\"") != std::string::npos);
  CHECK(json_scalar(agent_status(l, "a"), "accepted") == "1");

  // A port no service is configured for: the connection is reset, nothing is served.
  const std::string bad = sh_out(l.gw->ns("peer"), std::string("curl -sS --max-time 5 http://") +
                                                       lab::GatewayLab::kVip4 + ":9090/big");
  INFO(bad);
  CHECK(exit_of(bad) != 0);
  CHECK(json_scalar(agent_status(l, "a"), "refused") == "1");
}

TEST_CASE("an explicit method that is not available fails the agent's start with the reason",
          "[.userstack_agent][userstack_agent][netns]") {
  UsLab l = make_lab(test::unique_prefix("usm"), 1);
  // b's TUN is attached by its running agent: a second userstack agent there cannot attach.
  auto r = lab::output_in(l.gw->ns("b"),
                          std::string(RENDR_AGENT_BIN) + " --name b --cert " + l.stack->dir() +
                              "/b.pem --key " + l.stack->dir() + "/b.key --ca " +
                              l.stack->dir() + "/ca.pem --control " + l.stack->dir() +
                              "/b2.sock --method userstack --tun rtun0; echo EXIT=$?");
  REQUIRE(r.ok());
  INFO(*r);
  CHECK(exit_of(*r) == 1);
  CHECK(r->find("--method userstack is not available here") != std::string::npos);
  CHECK(r->find("rtun0") != std::string::npos);
  // A device that does not exist.
  auto m = lab::output_in(l.gw->ns("b"),
                          std::string(RENDR_AGENT_BIN) + " --name b --cert " + l.stack->dir() +
                              "/b.pem --key " + l.stack->dir() + "/b.key --ca " +
                              l.stack->dir() + "/ca.pem --control " + l.stack->dir() +
                              "/b3.sock --method userstack --tun nosuchtun0; echo EXIT=$?");
  REQUIRE(m.ok());
  INFO(*m);
  CHECK(exit_of(*m) == 1);
  CHECK(m->find("nosuchtun0") != std::string::npos);
}
