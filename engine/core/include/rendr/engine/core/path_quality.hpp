// SPDX-License-Identifier: Apache-2.0
// Per-path quality estimates from probe round trips: smoothed RTT, jitter, loss over the last
// probes, and the windows derived from them (freshness before a silent path is declared dead,
// write-stall timeout, retransmission timeout on unreliable carriers). Pure value type; the
// flow core feeds it. Times are steady_clock based; tests use made-up time points.
//
// Engine core (rendr::engine_core, <rendr/engine/core/...>): not part of the embedder API.
#pragma once

#include <rendr/engine/types.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <optional>

namespace rendr::engine {

class PathEstimator {
 public:
  static constexpr int kLossWindow = 32;

  // on_rtt_sample folds in one probe round trip: srtt is an EWMA (1/8), jitter follows
  // (3 * jitter + |rtt - previous rtt|) / 4, min_rtt is the minimum seen. A |loaded| sample
  // (the probe queued behind this side's own backlog on the carrier) measures our own queue,
  // not the path: it only feeds the timing windows (window_rtt), never srtt / jitter / score,
  // so prime does not flee a path it is saturating itself.
  void on_rtt_sample(Duration rtt, bool loaded = false);
  // on_clean_rtt records a round trip of a probe sent while none of our bytes were unacknowledged
  // on the path: nothing of ours queued ahead of it, so it measures the path (and the hosts'
  // scheduling). clean_rtt is the least of the last kCleanWindow of them: bond's stuck rule
  // compares it. An unloaded sample (under self_load_bytes ahead) still includes up to 16 KiB
  // of our own queue, 3.3 ms at 40 Mbit/s; a single clean one can catch a thread woken 5 ms
  // late. Either made the lab's bond gate skip a healthy path for a whole dispatch burst
  // (20 pins of 8 frames: 1.65-1.80x instead of 2.0x).
  static constexpr std::size_t kCleanWindow = 3;
  void on_clean_rtt(Duration rtt);
  [[nodiscard]] std::optional<Duration> clean_rtt() const;
  // on_probe_outcome records a probe as answered or lost (sliding window of kLossWindow).
  void on_probe_outcome(bool answered);

  [[nodiscard]] bool has_rtt() const { return samples_ > 0; }
  [[nodiscard]] Duration srtt() const { return srtt_; }
  [[nodiscard]] Duration latest_rtt() const { return latest_; }
  [[nodiscard]] Duration min_rtt() const { return min_; }
  [[nodiscard]] Duration jitter() const { return jitter_; }
  // window_rtt: EWMA over every sample, loaded or not (what freshness / stall / RTO scale by).
  [[nodiscard]] Duration window_rtt() const { return std::max(srtt_, all_srtt_); }
  // loss_ppt: lost probes per thousand over the window (0 with no outcomes yet).
  [[nodiscard]] std::uint16_t loss_ppt() const;
  // score_ms: prime's cost, lower is better: rtt + jitter + 10 ms per % loss.
  [[nodiscard]] double score_ms() const;

  // fresh_window = clamp(max(3 * interval, 4 * rtt + 2 * jitter + interval), lo, hi): how long a
  // path may stay silent while probes are outstanding before it is declared dead.
  [[nodiscard]] Duration fresh_window(Duration interval, Duration lo, Duration hi) const;
  // stall_timeout = clamp(max(100 ms, 4 * rtt + 2 * jitter), lo, hi): how long queued output may
  // wait for the carrier to take it before the path counts as stalled.
  [[nodiscard]] Duration stall_timeout(Duration lo, Duration hi) const;
  // rto = clamp(srtt + 4 * jitter, lo, hi) (lo without a sample): retransmission timeout for
  // frames sent on unreliable carriers.
  [[nodiscard]] Duration rto(Duration lo, Duration hi) const;

 private:
  Duration srtt_{0};
  Duration latest_{0};
  Duration min_{0};
  Duration jitter_{0};
  Duration all_srtt_{0};
  std::array<Duration, kCleanWindow> clean_{};  // ring, newest at clean_next_ - 1
  std::size_t clean_count_ = 0;
  std::size_t clean_next_ = 0;
  std::uint64_t samples_ = 0;
  std::uint64_t all_samples_ = 0;
  std::uint32_t outcomes_ = 0;  // bit i: outcome i (1 = lost), newest in bit 0
  int outcome_count_ = 0;
};

}  // namespace rendr::engine
