// SPDX-License-Identifier: Apache-2.0
// Scheduler decisions, pure and I/O-free: which path(s) carry the next frame.
//   prime: one active path; a quality switch needs a candidate whose score beats the active
//          one's by the hysteresis margin, continuously for `dwell`, and at least `cooldown`
//          after the previous quality switch. Death of the active path bypasses all three.
//   race:  every frame on every usable path; the receiver dedups by SEQ.
//   bond:  round robin over usable paths (sorted by id) with N-frame pinning; a path whose RTT
//          exceeds k x the best RTT is skipped (a path without an RTT sample never is).
// The flow core owns one PrimeSelector and one BondCursor and calls them with a snapshot of its
// paths; neither keeps references to paths.
//
// Engine core (rendr::engine_core, <rendr/engine/core/...>): not part of the embedder API.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/engine/core/path_quality.hpp>
#include <rendr/engine/types.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace rendr::engine {

// check_mode_switch: prime <-> race and prime <-> bond are allowed; race <-> bond is refused
// with mode_switch_illegal (race has no per-path ordering, bond relies on it).
[[nodiscard]] Status check_mode_switch(Mode from, Mode to);

struct PathScore {
  PathId id = 0;
  std::optional<double> score_ms;  // empty: no RTT evidence yet
};

class PrimeSelector {
 public:
  struct Params {
    double hysteresis = 0.25;
    Duration dwell = std::chrono::seconds(5);
    Duration cooldown = std::chrono::seconds(30);
  };
  explicit PrimeSelector(Params p) : p_(p) {}

  // tick evaluates |candidates| (usable paths, including |active|) and returns the path to
  // switch to when the hysteresis, dwell and cooldown rules are all met; then it records the
  // switch (cooldown starts) and forgets the candidate. Without evidence for the active path
  // or any challenger it never switches.
  [[nodiscard]] std::optional<PathId> tick(PathId active, std::span<const PathScore> candidates,
                                           TimePoint now);
  // note_switch records a switch made elsewhere (explicit migrate) so tracking restarts.
  void note_switch(TimePoint now, bool quality);
  // best_for_failover picks the path to use when the active one died: lowest score, paths
  // without evidence after those with, ties by lowest id. Empty when |candidates| is empty.
  [[nodiscard]] static std::optional<PathId> best_for_failover(
      std::span<const PathScore> candidates);

  [[nodiscard]] std::optional<PathId> tracked() const { return tracked_; }

 private:
  Params p_;
  std::optional<PathId> tracked_;
  TimePoint tracked_since_{};
  std::optional<TimePoint> last_quality_switch_;
};

struct BondPath {
  PathId id = 0;
  std::optional<Duration> rtt;  // latest clean probe RTT (PathEstimator::clean_rtt); empty = none (never stuck)
};

class BondCursor {
 public:
  BondCursor(std::size_t pin, double stuck_multiplier)
      : pin_(pin == 0 ? 1 : pin), stuck_mult_(stuck_multiplier <= 1.0 ? 3.0 : stuck_multiplier) {}

  // next picks the path for one frame from |paths| (sorted by id, non-empty).
  [[nodiscard]] PathId next(std::span<const BondPath> paths);
  void set_pin(std::size_t pin) { pin_ = pin == 0 ? 1 : pin; }
  [[nodiscard]] std::uint64_t stuck_skips() const { return stuck_skips_; }
  // A path is stuck when its RTT exceeds the multiplier x the best one AND the best by more
  // than this margin (differences below it are noise, not a stuck path).
  static constexpr Duration kStuckMargin = std::chrono::milliseconds(2);
  // stuck: is |p| stuck against the best RTT of |paths|? (What next() skips.)
  [[nodiscard]] bool stuck(const BondPath& p, std::span<const BondPath> paths) const;

 private:
  [[nodiscard]] bool stuck(const BondPath& p, std::optional<Duration> best) const;
  [[nodiscard]] static std::optional<Duration> best_rtt(std::span<const BondPath> paths);

  std::size_t pin_;
  double stuck_mult_;
  PathId pinned_ = 0;
  std::size_t left_ = 0;
  std::size_t cursor_ = 0;
  std::uint64_t stuck_skips_ = 0;
};

}  // namespace rendr::engine
