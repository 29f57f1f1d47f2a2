// SPDX-License-Identifier: Apache-2.0
// rendr-demo --tun (demo_tun.cpp): stock curl through rendr-tun in the ingress lab while the
// active path is silently dropped and later re-added.
#pragma once

#include <cstdint>
#include <string>

namespace rendr::demo {

struct TunDemoOptions {
  std::string tun_bin;       // rendr-tun
  std::string prefix;        // lab namespaces <prefix>-app, -egress, -origin
  std::uint64_t size_mib = 256;
  std::uint64_t rate_mib = 32;  // curl --limit-rate in MiB/s, 0 = unlimited
  bool json = false;
  bool keep = false;
};

// run_tun_demo runs the demo and returns the process exit status (0: every byte arrived,
// SHA-256 equal, no reset, and the drop hit the flow's path; 1: not; 2: could not run).
[[nodiscard]] int run_tun_demo(const TunDemoOptions& o);

}  // namespace rendr::demo
