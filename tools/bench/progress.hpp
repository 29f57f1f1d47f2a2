// SPDX-License-Identifier: Apache-2.0
// Progress lines on stderr for long runs: one line when a phase starts, at most one per second
// while it runs, one when it ends. stdout stays reserved for the report (and the JSON line).
#pragma once

#include "stats.hpp"

#include <cstdint>
#include <cstdio>
#include <string>

namespace rendr::bench {

class Progress {
 public:
  Progress(std::string tool, bool quiet) : tool_(std::move(tool)), quiet_(quiet) {}

  void begin(const std::string& phase, std::uint64_t total) {
    phase_ = phase;
    total_ = total;
    start_ = now_ns();
    last_ = start_;
    note(phase_ + ": start (" + std::to_string(total) + ")");
  }
  void tick(std::uint64_t done) {
    if (quiet_) {
      return;
    }
    const std::uint64_t t = now_ns();
    if (t - last_ >= 1'000'000'000ULL) {
      last_ = t;
      note(phase_ + ": " + std::to_string(done) + "/" + std::to_string(total_));
    }
  }
  void end(const std::string& summary = {}) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.2f s", static_cast<double>(now_ns() - start_) / 1e9);
    note(phase_ + ": done in " + buf + (summary.empty() ? "" : ", " + summary));
  }
  void note(const std::string& line) const {
    if (!quiet_) {
      std::fprintf(stderr, "%s: %s\n", tool_.c_str(), line.c_str());
    }
  }

 private:
  std::string tool_;
  bool quiet_;
  std::string phase_;
  std::uint64_t total_ = 0;
  std::uint64_t start_ = 0;
  std::uint64_t last_ = 0;
};

}  // namespace rendr::bench
