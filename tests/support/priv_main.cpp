// SPDX-License-Identifier: Apache-2.0
// main() for privileged test executables (STYLE T3). Before running any test it probes, by
// trying, what RENDR_PRIV_NEEDS lists (netns, tcp_repair, bpf, tun) and nothing else. If a
// probe fails it prints one "SKIP <binary>: needs ..." line and exits 77 - unless CI=true or
// RENDR_REQUIRE_PRIV=1, where a skip would hide bugs: then it prints "FAIL" and exits 1.
// Listing (ctest discovery) never probes. Catch2's implementation: catch_impl.cpp.
#include "support/catch_run.hpp"

#include <rendr/agents/capabilities.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#ifndef RENDR_PRIV_NEEDS
#define RENDR_PRIV_NEEDS "netns"
#endif

namespace {

bool listing(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--list", 0) == 0 || a == "-l" || a == "-h" || a == "--help" || a == "-?") {
      return true;
    }
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (!listing(argc, argv)) {
    // Probe only what this binary declares (RENDR_PRIV_NEEDS), with the one capability probe
    // (rendr/agents/capabilities.hpp); "bpf" is a tc program.
    std::vector<std::string> caps;
    const std::string needs = RENDR_PRIV_NEEDS;
    std::size_t pos = 0;
    while (pos <= needs.size()) {
      std::size_t comma = needs.find(',', pos);
      const std::string n =
          needs.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      pos = comma == std::string::npos ? needs.size() + 1 : comma + 1;
      if (!n.empty()) {
        caps.push_back(n == "bpf" ? "ebpf_sched_cls" : n);
      }
    }
    rendr::agents::ProbeOptions opts;
    opts.only = caps;
    const auto report = rendr::agents::probe_capabilities(opts);
    std::string missing;
    for (const auto& cap : caps) {
      if (!report.ok(cap)) {
        missing += (missing.empty() ? "" : ", ") + cap + " (" + report.detail(cap) + ")";
      }
    }
    if (!missing.empty()) {
      const char* ci = std::getenv("CI");
      const char* req = std::getenv("RENDR_REQUIRE_PRIV");
      bool required = (ci != nullptr && std::string(ci) == "true") ||
                      (req != nullptr && std::string(req) == "1");
      std::printf("%s %s: needs %s; run as root or via vm-tests\n", required ? "FAIL" : "SKIP",
                  argv[0], missing.c_str());
      return required ? 1 : 77;
    }
  }
  return rendr::test::run_catch(argc, argv);
}
