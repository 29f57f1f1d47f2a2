// SPDX-License-Identifier: Apache-2.0
// rendr-agent: per-host daemon. See docs/native-migration.md.
#include "agent.hpp"

#include <cstdio>

int main(int argc, char** argv) {
  bool help = false;
  auto cfg = rendr::agents::parse_agent_args(argc, argv, help);
  if (help) {
    std::fputs(rendr::agents::agent_usage().c_str(), stdout);
    return 0;
  }
  if (!cfg) {
    std::fprintf(stderr, "rendr-agent: %s\n", cfg.error().message().c_str());
    return 2;
  }
  return rendr::agents::run_agent(*cfg);
}
