// SPDX-License-Identifier: Apache-2.0
#include "bench/userstack_moves.hpp"

#include "bench/migrate_downtime.hpp"
#include "lab/agent_stack.hpp"
#include "lab/gateway_lab.hpp"

#include <unistd.h>

#include <cstdio>

namespace rendr::bench {
namespace {

constexpr std::uint16_t kEchoPort = 9000;

// run_lab moves the echoed connection |moves| times between a and b; |userstack| names the
// hosts that serve with the userstack method (the others are native).
Result<DowntimeResult> run_lab(const std::vector<lab::Host>& userstack, int moves) {
  auto labr = lab::GatewayLab::create("rbus");
  if (!labr) {
    return std::move(labr).take_error();
  }
  lab::GatewayLab& lab = **labr;
  lab::AgentStackOptions so;
  so.agent_bin = RENDR_AGENT_BIN;
  so.rendrctl_bin = RENDRCTL_BIN;
  so.freeze_grace_ms = 500;
  for (lab::Host h : userstack) {
    RENDR_TRY(lab.use_userstack(h));
    so.agent_args[h == lab::Host::a ? "a" : "b"] = {"--method", "userstack", "--tun", "rtun0",
                                                    "--service-port", "echo=9000"};
  }
  auto str = lab::AgentStack::start(lab, so);
  if (!str) {
    return std::move(str).take_error();
  }
  lab::AgentStack& stack = **str;
  char self[4096] = {};
  if (::readlink("/proc/self/exe", self, sizeof self - 1) <= 0) {
    return errno_error("readlink /proc/self/exe");
  }
  for (lab::Host h : {lab::Host::a, lab::Host::b}) {
    const std::string name = h == lab::Host::a ? "a" : "b";
    bool us = false;
    for (lab::Host u : userstack) {
      us = us || u == h;
    }
    // A userstack host's VIP is routed into its TUN, not local: its server listens on
    // loopback and gets the VIP's connections from its agent (Adopt).
    const std::string listen = std::string(us ? "127.0.0.1" : lab::GatewayLab::kVip4) + ":" +
                               std::to_string(kEchoPort);
    const std::string lg = "echo-" + name;
    (void)stack.spawn(name, {self, "echo-server", stack.sock(name), listen}, lg);
    if (!stack.wait_log(lg, "ready", 10000)) {
      return make_error(std::errc::timed_out, "echo server on " + name + " did not start: " +
                                                  stack.log(lg));
    }
  }
  return measure_downtime(lab, stack, kEchoPort, moves);
}

}  // namespace

Result<UserstackMoves> measure_userstack_moves(int moves) {
  UserstackMoves r;
  auto mixed = run_lab({lab::Host::b}, moves);
  if (!mixed) {
    return std::move(mixed).take_error().with_context("mixed lab (a native, b userstack)");
  }
  for (std::size_t i = 0; i < mixed->downtime_ms.size() && i < mixed->from.size(); ++i) {
    (mixed->from[i] == "a" ? r.n2u_ms : r.u2n_ms).push_back(mixed->downtime_ms[i]);
  }
  r.frozen_ms = mixed->frozen_ms;
  r.bytes_lost = mixed->bytes_lost;
  r.failures = mixed->failures.empty() ? "" : "mixed: " + mixed->failures;
  auto us = run_lab({lab::Host::a, lab::Host::b}, moves);
  if (!us) {
    return std::move(us).take_error().with_context("userstack lab (a and b userstack)");
  }
  r.u2u_ms = us->downtime_ms;
  r.frozen_ms.insert(r.frozen_ms.end(), us->frozen_ms.begin(), us->frozen_ms.end());
  r.baseline_p99_ms = us->baseline_p99_ms;
  r.bytes_lost += us->bytes_lost;
  if (!us->failures.empty()) {
    r.failures += "userstack: " + us->failures;
  }
  return r;
}

}  // namespace rendr::bench
