// SPDX-License-Identifier: Apache-2.0
// The silence decision and the io thread's timer-lateness accounting (docs/engine.md "How
// silence is decided"). Pure: times and counts in, a verdict out; the flow core asks
// judge_silence before it fails a path for silence, the Asio shell feeds TimerLateness.
//
// Why: a path is silent when nothing came back for the freshness window after a probe. The
// window is measured on our own thread, so a thread that did not get to run (CPU starvation,
// a long handler, a lock held by an application thread) sees "nothing heard" although the
// reply may be waiting unread in the socket, or the peer - on a busy host, just as starved -
// is about to answer. Such a path is given a short, bounded reprieve: never past two windows.
//
// Engine core (rendr::engine_core, <rendr/engine/core/...>): not part of the embedder API.
#pragma once

#include <rendr/engine/types.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

namespace rendr::engine {

// A timer that ran at least this late says our thread was starved (asio's steady_timer is
// otherwise punctual to well under a millisecond on this kernel).
inline constexpr Duration kStarvedLateness = std::chrono::milliseconds(20);
// How soon a path whose socket holds unread input is judged again (the reads run first).
inline constexpr Duration kPendingRecheck = std::chrono::milliseconds(5);

struct SilenceInput {
  TimePoint now{};
  std::optional<TimePoint> first_unanswered;  // first probe sent since the last reception
  Duration window{0};                         // the path's freshness window
  Duration own_lateness{0};       // how late our thread ran this check (now - its deadline)
  std::size_t pending_bytes = 0;  // unread input waiting on the path's socket
};

enum class SilenceKind {
  heard,    // something came back after the last probe: not silent
  not_yet,  // the window has not run out
  pending,  // the window ran out, but the socket holds unread input: read it first
  starved,  // the window ran out while our own thread was late: give the peer that long
  silent,   // fail the path
};

struct SilenceVerdict {
  SilenceKind kind = SilenceKind::heard;
  std::optional<TimePoint> recheck;  // not_yet / pending / starved: when to judge again
};

// judge_silence: heard without an unanswered probe; not_yet before first_unanswered + window;
// from then on silent, except that unread input (pending, judged again kPendingRecheck later)
// or a thread late by >= kStarvedLateness (starved, judged again own_lateness later) postpone
// it - but never past first_unanswered + 2 * window, so a real blackhole is still failed within
// two windows plus the lateness of the check that decides it.
[[nodiscard]] SilenceVerdict judge_silence(const SilenceInput& in);

// TimerLateness: how late a flow's timer handlers ran (deadline vs the moment the handler ran)
// and how long the io thread's handlers for the flow took. Buckets of the histogram, by
// lateness: < 1 ms, < 5 ms, < 20 ms, < 100 ms, < 500 ms, >= 500 ms.
class TimerLateness {
 public:
  static constexpr std::size_t kBuckets = 6;
  static constexpr std::array<std::int64_t, kBuckets - 1> kEdgesMs{1, 5, 20, 100, 500};

  // record_fire: a timer due at |deadline| ran at |ran| (a handler early by clock skew counts 0).
  void record_fire(TimePoint deadline, TimePoint ran);
  // record_handler: an io-thread handler of the flow took |took| (under the flow's lock).
  void record_handler(Duration took);
  // record_lock_wait: an io-thread handler waited |waited| for the flow's lock.
  void record_lock_wait(Duration waited);
  // record_armed_late: a timer was armed for a deadline already |by| in the past (the shell
  // then measures the handler's lateness from the arming, not from the deadline).
  void record_armed_late(Duration by, DeadlineKind kind);

  [[nodiscard]] std::uint64_t fired() const { return fired_; }
  [[nodiscard]] Duration max_late() const { return max_late_; }
  [[nodiscard]] Duration last_late() const { return last_late_; }
  [[nodiscard]] Duration max_handler() const { return max_handler_; }
  [[nodiscard]] Duration max_lock_wait() const { return max_lock_wait_; }
  [[nodiscard]] std::uint64_t armed_late() const { return armed_late_; }
  [[nodiscard]] Duration max_armed_late() const { return max_armed_late_; }
  [[nodiscard]] const std::array<std::uint64_t, kDeadlineKinds>& armed_late_by_kind() const {
    return armed_late_by_kind_;
  }
  [[nodiscard]] const std::array<Duration, kDeadlineKinds>& max_armed_late_by_kind() const {
    return max_armed_late_by_kind_;
  }
  [[nodiscard]] const std::array<std::uint64_t, kBuckets>& histogram() const { return hist_; }

 private:
  std::uint64_t fired_ = 0;
  Duration max_late_{0};
  Duration last_late_{0};
  Duration max_handler_{0};
  Duration max_lock_wait_{0};
  std::uint64_t armed_late_ = 0;
  Duration max_armed_late_{0};
  std::array<std::uint64_t, kDeadlineKinds> armed_late_by_kind_{};
  std::array<Duration, kDeadlineKinds> max_armed_late_by_kind_{};
  std::array<std::uint64_t, kBuckets> hist_{};
};

}  // namespace rendr::engine
