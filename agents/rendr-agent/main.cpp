// SPDX-License-Identifier: Apache-2.0
// rendr-agent: per-host daemon. See docs/native-migration.md. `rendr-agent --userstack-keeper`
// is the userstack keeper the agent starts itself (us_keeper.hpp); not for operators.
#include "agent.hpp"
#include "us_keeper.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

int keeper_main(int argc, char** argv) {
  rendr::agents::KeeperOptions o;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--tun") {
      o.tun = v;
    } else if (k == "--tun-clone") {
      o.tun_clone = v;
    } else if (k == "--freeze-grace-ms") {
      o.freeze_grace_ms = std::strtoull(v, nullptr, 10);
    } else if (k == "--ready-fd") {
      o.ready_fd = std::atoi(v);
    } else {
      std::fprintf(stderr, "rendr-agent --userstack-keeper: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (o.tun.empty()) {
    std::fprintf(stderr, "rendr-agent --userstack-keeper: --tun is required\n");
    return 2;
  }
  return rendr::agents::run_keeper(o);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "--userstack-keeper") == 0) {
    return keeper_main(argc, argv);
  }
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
