// SPDX-License-Identifier: Apache-2.0
// rendr-bench — benchmarks for rendr (composition root: argument parsing + library calls).
//   rendr-bench <subcommand> [--json] [options]
// Human-readable report on stdout; with --json the last stdout line is one JSON object.
// Progress and errors go to stderr.
#include "subcommand.hpp"

#include <cstdio>
#include <cstring>
#include <span>
#include <string_view>

namespace {

using rendr::bench::Subcommand;

constexpr Subcommand kSubcommands[] = {
    {"repair", "TCP_REPAIR checkpoint+restore latency (idle, queued) and a 10k-socket batch",
     &rendr::bench::run_repair},
    {"migrate", "native migration through rendr-agent: downtime (1 ms echo), bulk ratio, batch",
     &rendr::bench::run_migrate},
    {"engine", "framing engine in the multipath lab: throughput, G1, failover vs MPTCP, memory",
     &rendr::bench::run_engine},
    {"hostile", "HELLO flood with a legit client, unauthorized agent actions, slowloris, faults",
     &rendr::bench::run_hostile},
    {"userstack", "lwIP over TUN: one flow each way vs the kernel, snapshot+restore latency",
     &rendr::bench::run_userstack},
    {"ingress", "rendr-tun: e2e vs raw throughput, failover stall as the app sees it, flows/s",
     &rendr::bench::run_ingress},
    {"echo-server", "(internal) echo server for `migrate`, registered with an agent",
     &rendr::bench::run_echo_server},
    {"hostile-listener", "(internal) engine echo listener for `hostile`",
     &rendr::bench::run_hostile_listener},
};

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: rendr-bench <subcommand> [--json] [options]\n"
               "       rendr-bench <subcommand> --help\n\n"
               "Benchmarks for rendr. The report goes to stdout; with --json the last line of\n"
               "stdout is one JSON object with the results. Progress and errors go to stderr.\n\n"
               "subcommands:\n");
  for (const auto& s : kSubcommands) {
    std::fprintf(out, "  %-10s %s\n", s.name, s.summary);
  }
  std::fprintf(out,
               "\nexit status: 0 ok, 1 run failed, 2 bad command line, 3 a target was missed\n"
               "(only with --check-targets)\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return rendr::bench::kExitUsage;
  }
  std::string_view cmd = argv[1];
  if (cmd == "-h" || cmd == "--help" || cmd == "help") {
    usage(stdout);
    return rendr::bench::kExitOk;
  }
  for (const auto& s : kSubcommands) {
    if (cmd == s.name) {
      return s.run(std::span<char* const>(argv + 2, static_cast<std::size_t>(argc - 2)));
    }
  }
  std::fprintf(stderr, "rendr-bench: unknown subcommand '%s'\n\n", argv[1]);
  usage(stderr);
  return rendr::bench::kExitUsage;
}
