// SPDX-License-Identifier: Apache-2.0
// rendr-bench subcommands. Each one is a function that parses its own options (after the
// subcommand name) and returns the process exit status; main() only dispatches. To add one
// (migrate, engine, ...), write run_<name>() in its own file and list it in kSubcommands
// (main.cpp).
#pragma once

#include <span>

namespace rendr::bench {

// Exit statuses shared by all subcommands.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;       // the run failed (error on stderr)
inline constexpr int kExitUsage = 2;        // bad command line
inline constexpr int kExitTargetMissed = 3;  // --check-targets and a target was missed

struct Subcommand {
  const char* name;
  const char* summary;
  int (*run)(std::span<char* const> args);
};

// run_repair: `rendr-bench repair` (repair_bench.cpp).
int run_repair(std::span<char* const> args);
int run_migrate(std::span<char* const> args);
// run_engine: `rendr-bench engine` (engine_bench.cpp).
int run_engine(std::span<char* const> args);
// echo-server SOCK ADDR:PORT: the migrate benchmark's echo server (internal).
int run_echo_server(std::span<char* const> args);
int run_hostile(std::span<char* const> args);
// run_userstack: `rendr-bench userstack` (userstack_bench.cpp).
int run_userstack(std::span<char* const> args);
int run_hostile_listener(std::span<char* const> args);
// run_ingress: `rendr-bench ingress` (ingress_bench.cpp).
int run_ingress(std::span<char* const> args);

}  // namespace rendr::bench
