// SPDX-License-Identifier: Apache-2.0
// Latency samples and percentiles (nearest-rank), a monotonic clock in nanoseconds, and sample
// lists written into a bench result.
#pragma once

#include <rendr/common/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <string_view>
#include <vector>

namespace rendr::bench {

inline std::uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// percentile: nearest-rank percentile |p| in [0,100] of |v|; 0 when empty.
inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) {
    return 0;
  }
  std::sort(v.begin(), v.end());
  auto rank = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size()) + 0.999999);
  rank = std::clamp<std::size_t>(rank, 1, v.size());
  return v[rank - 1];
}

// write_rounded writes |v| as the JSON array |key| of |j|, each value rounded to |decimals|
// decimal places (every sample of a bench key, e.g. downtime_ms).
inline void write_rounded(JsonWriter& j, std::string_view key, const std::vector<double>& v,
                          int decimals) {
  const double scale = std::pow(10.0, decimals);
  j.begin_array(key);
  for (double x : v) {
    j.number(std::round(x * scale) / scale);
  }
  j.end_array();
}

// Samples collects durations in nanoseconds and reports them in microseconds.
class Samples {
 public:
  void reserve(std::size_t n) { ns_.reserve(n); }
  void add(std::uint64_t ns) {
    ns_.push_back(ns);
    sorted_ = false;
  }
  [[nodiscard]] std::size_t size() const { return ns_.size(); }
  [[nodiscard]] bool empty() const { return ns_.empty(); }
  // percentile_us: nearest-rank percentile |p| in [0,100]; 0 when empty.
  [[nodiscard]] double percentile_us(double p) {
    if (ns_.empty()) {
      return 0;
    }
    sort();
    auto rank = static_cast<std::size_t>(p / 100.0 * static_cast<double>(ns_.size()) + 0.999999);
    rank = std::clamp<std::size_t>(rank, 1, ns_.size());
    return static_cast<double>(ns_[rank - 1]) / 1000.0;
  }
  [[nodiscard]] double mean_us() const {
    if (ns_.empty()) {
      return 0;
    }
    long double sum = 0;
    for (auto v : ns_) {
      sum += v;
    }
    return static_cast<double>(sum / static_cast<long double>(ns_.size()) / 1000.0L);
  }
  [[nodiscard]] double max_us() {
    sort();
    return ns_.empty() ? 0 : static_cast<double>(ns_.back()) / 1000.0;
  }

 private:
  void sort() {
    if (!sorted_) {
      std::sort(ns_.begin(), ns_.end());
      sorted_ = true;
    }
  }
  std::vector<std::uint64_t> ns_;
  bool sorted_ = true;
};

}  // namespace rendr::bench
