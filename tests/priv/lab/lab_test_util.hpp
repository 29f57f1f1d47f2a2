// SPDX-License-Identifier: Apache-2.0
// Helpers for the lab tests: running rendr-lab, reading its JSON with python3,
// a guard that removes a prefix's namespaces whatever happens.
#pragma once

#include "lab/lab_util.hpp"
#include "support/netns.hpp"  // unique_prefix

#include <catch2/catch.hpp>

#include <unistd.h>

#include <string>

namespace rendr::test {

struct LabCleanup {
  explicit LabCleanup(std::string p) : prefix(std::move(p)) { (void)lab::remove_lab(prefix); }
  ~LabCleanup() { (void)lab::remove_lab(prefix); }
  std::string prefix;
};

struct CmdResult {
  int rc = -1;
  std::string out;
};

inline CmdResult sh(const std::string& cmd) {
  CmdResult r;
  r.rc = lab::shell(cmd, &r.out);
  return r;
}

inline CmdResult rendr_lab(const std::string& args) {
  return sh(std::string(RENDR_LAB_BIN) + " " + args);
}

// json_get evaluates a python expression over the JSON document |json| (bound to d).
inline std::string json_get(const std::string& json, const std::string& expr) {
  auto r = sh("printf '%s' " + lab::shell_quote(json) +
              " | python3 -c " +
              lab::shell_quote("import json,sys; d=json.load(sys.stdin); print(" + expr + ")"));
  INFO(r.out);
  REQUIRE(r.rc == 0);
  while (!r.out.empty() && r.out.back() == '\n') {
    r.out.pop_back();
  }
  return r.out;
}

// in_ns runs |cmd| in namespace |ns| and returns its exit status.
inline int in_ns(const std::string& ns, const std::string& cmd) {
  return lab::shell("ip netns exec " + ns + " sh -c " + lab::shell_quote(cmd) + " >/dev/null");
}

inline bool pings(const std::string& ns, const std::string& addr) {
  const bool v6 = addr.find(':') != std::string::npos;
  return in_ns(ns, std::string("ping ") + (v6 ? "-6 " : "") + "-c1 -W1 -q " + addr) == 0;
}

}  // namespace rendr::test
