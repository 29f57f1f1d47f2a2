// SPDX-License-Identifier: Apache-2.0
#include <rendr/engine/core/silence.hpp>

#include <algorithm>

namespace rendr::engine {

SilenceVerdict judge_silence(const SilenceInput& in) {
  if (!in.first_unanswered) {
    return {SilenceKind::heard, std::nullopt};
  }
  const TimePoint due = *in.first_unanswered + in.window;
  if (in.now < due) {
    return {SilenceKind::not_yet, due};
  }
  // The reprieves below end here: a path that stays silent is failed within two windows.
  const TimePoint hard = *in.first_unanswered + 2 * in.window;
  if (in.now >= hard) {
    return {SilenceKind::silent, std::nullopt};
  }
  if (in.pending_bytes > 0) {
    return {SilenceKind::pending, std::min(in.now + kPendingRecheck, hard)};
  }
  if (in.own_lateness >= kStarvedLateness) {
    return {SilenceKind::starved, std::min(in.now + in.own_lateness, hard)};
  }
  return {SilenceKind::silent, std::nullopt};
}

void TimerLateness::record_fire(TimePoint deadline, TimePoint ran) {
  const Duration late = ran > deadline ? ran - deadline : Duration::zero();
  ++fired_;
  last_late_ = late;
  max_late_ = std::max(max_late_, late);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(late).count();
  std::size_t b = 0;
  while (b < kEdgesMs.size() && ms >= kEdgesMs[b]) {
    ++b;
  }
  ++hist_[b];
}

void TimerLateness::record_handler(Duration took) {
  max_handler_ = std::max(max_handler_, took);
}

void TimerLateness::record_armed_late(Duration by, DeadlineKind kind) {
  ++armed_late_;
  max_armed_late_ = std::max(max_armed_late_, by);
  const auto k = static_cast<std::size_t>(kind);
  ++armed_late_by_kind_[k];
  max_armed_late_by_kind_[k] = std::max(max_armed_late_by_kind_[k], by);
}

void TimerLateness::record_lock_wait(Duration waited) {
  max_lock_wait_ = std::max(max_lock_wait_, waited);
}

}  // namespace rendr::engine
