// SPDX-License-Identifier: Apache-2.0
#include <rendr/engine/core/path_quality.hpp>

#include <algorithm>
#include <bit>

namespace rendr::engine {

using std::chrono::milliseconds;

void PathEstimator::on_rtt_sample(Duration rtt, bool loaded) {
  if (rtt < Duration::zero()) {
    rtt = Duration::zero();
  }
  all_srtt_ = all_samples_ == 0 ? rtt : (7 * all_srtt_ + rtt) / 8;
  all_samples_ += 1;
  if (loaded) {
    return;
  }
  if (samples_ == 0) {
    srtt_ = rtt;
    min_ = rtt;
    jitter_ = Duration::zero();  // as the reference: jitter grows from measured differences
  } else {
    const Duration diff = rtt > latest_ ? rtt - latest_ : latest_ - rtt;
    jitter_ = (3 * jitter_ + diff) / 4;
    srtt_ = (7 * srtt_ + rtt) / 8;
    min_ = std::min(min_, rtt);
  }
  latest_ = rtt;
  samples_ += 1;
}

void PathEstimator::on_clean_rtt(Duration rtt) {
  clean_[clean_next_] = std::max(rtt, Duration::zero());
  clean_next_ = (clean_next_ + 1) % kCleanWindow;
  clean_count_ = std::min(clean_count_ + 1, kCleanWindow);
}

std::optional<Duration> PathEstimator::clean_rtt() const {
  if (clean_count_ == 0) {
    return std::nullopt;
  }
  return *std::min_element(clean_.begin(), clean_.begin() + static_cast<std::ptrdiff_t>(clean_count_));
}

void PathEstimator::on_probe_outcome(bool answered) {
  outcomes_ = (outcomes_ << 1) | (answered ? 0U : 1U);
  outcome_count_ = std::min(outcome_count_ + 1, kLossWindow);
}

std::uint16_t PathEstimator::loss_ppt() const {
  if (outcome_count_ == 0) {
    return 0;
  }
  const std::uint32_t mask =
      outcome_count_ >= 32 ? 0xFFFFFFFFU : ((1U << static_cast<unsigned>(outcome_count_)) - 1);
  const int lost = std::popcount(outcomes_ & mask);
  return static_cast<std::uint16_t>(lost * 1000 / outcome_count_);
}

double PathEstimator::score_ms() const {
  const auto ms = [](Duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
  // 10 ms per percent of loss = 1 ms per part per thousand.
  return ms(srtt_) + ms(jitter_) + static_cast<double>(loss_ppt());
}

Duration PathEstimator::fresh_window(Duration interval, Duration lo, Duration hi) const {
  Duration w = 3 * interval;
  if (all_samples_ > 0) {
    w = std::max(w, 4 * window_rtt() + 2 * jitter_ + interval);
  }
  return std::clamp(w, lo, std::max(lo, hi));
}

Duration PathEstimator::stall_timeout(Duration lo, Duration hi) const {
  Duration w = milliseconds(100);
  if (all_samples_ > 0) {
    w = std::max(w, 4 * window_rtt() + 2 * jitter_);
  }
  return std::clamp(w, lo, std::max(lo, hi));
}

Duration PathEstimator::rto(Duration lo, Duration hi) const {
  if (all_samples_ == 0) {
    return lo;
  }
  return std::clamp(window_rtt() + 4 * jitter_, lo, std::max(lo, hi));
}

}  // namespace rendr::engine
