// SPDX-License-Identifier: Apache-2.0
#include <rendr/engine/errors.hpp>
#include <rendr/engine/core/scheduler.hpp>

#include <algorithm>
#include <string>

namespace rendr::engine {

std::string_view to_string(Mode m) {
  switch (m) {
    case Mode::prime: return "prime";
    case Mode::bond: return "bond";
    case Mode::race: return "race";
  }
  return "unknown";
}

Status check_mode_switch(Mode from, Mode to) {
  if ((from == Mode::race && to == Mode::bond) || (from == Mode::bond && to == Mode::race)) {
    return make_error(errc::mode_switch_illegal, std::string("set_mode ") +
                                                     std::string(to_string(from)) + " -> " +
                                                     std::string(to_string(to)));
  }
  return {};
}

std::optional<PathId> PrimeSelector::tick(PathId active, std::span<const PathScore> candidates,
                                          TimePoint now) {
  std::optional<double> current;
  const PathScore* best = nullptr;
  for (const auto& c : candidates) {
    if (c.id == active) {
      current = c.score_ms;
    } else if (c.score_ms && (best == nullptr || *c.score_ms < *best->score_ms)) {
      best = &c;
    }
  }
  // best < current / (1 + h), i.e. current > best * (1 + h).
  if (!current || best == nullptr || !(*best->score_ms < *current / (1.0 + p_.hysteresis))) {
    tracked_.reset();
    return std::nullopt;
  }
  if (tracked_ != best->id) {
    tracked_ = best->id;
    tracked_since_ = now;
  }
  if (now - tracked_since_ < p_.dwell) {
    return std::nullopt;
  }
  if (last_quality_switch_ && now - *last_quality_switch_ < p_.cooldown) {
    return std::nullopt;
  }
  const PathId target = best->id;
  note_switch(now, true);
  return target;
}

void PrimeSelector::note_switch(TimePoint now, bool quality) {
  tracked_.reset();
  if (quality) {
    last_quality_switch_ = now;
  }
}

std::optional<PathId> PrimeSelector::best_for_failover(std::span<const PathScore> candidates) {
  const PathScore* best = nullptr;
  for (const auto& c : candidates) {
    if (best == nullptr) {
      best = &c;
      continue;
    }
    const bool c_has = c.score_ms.has_value();
    const bool b_has = best->score_ms.has_value();
    if (c_has != b_has) {
      if (c_has) {
        best = &c;
      }
      continue;
    }
    if (c_has && *c.score_ms != *best->score_ms) {
      if (*c.score_ms < *best->score_ms) {
        best = &c;
      }
      continue;
    }
    if (c.id < best->id) {
      best = &c;
    }
  }
  if (best == nullptr) {
    return std::nullopt;
  }
  return best->id;
}

bool BondCursor::stuck(const BondPath& p, std::optional<Duration> best) const {
  if (!p.rtt || !best) {
    return false;
  }
  // Both a ratio and an absolute margin: on sub-millisecond paths (a LAN, a lab's veth) the
  // ratio alone is reached by scheduling noise (254 us against 54 us skipped a healthy path and
  // cost a third of the bond's throughput); a path is stuck when it is slower by more than that.
  return static_cast<double>(p.rtt->count()) > static_cast<double>(best->count()) * stuck_mult_ &&
         *p.rtt - *best > kStuckMargin;
}

std::optional<Duration> BondCursor::best_rtt(std::span<const BondPath> paths) {
  std::optional<Duration> best;
  for (const auto& p : paths) {
    if (p.rtt && (!best || *p.rtt < *best)) {
      best = p.rtt;
    }
  }
  return best;
}

bool BondCursor::stuck(const BondPath& p, std::span<const BondPath> paths) const {
  return stuck(p, best_rtt(paths));
}

PathId BondCursor::next(std::span<const BondPath> paths) {
  const std::optional<Duration> best = best_rtt(paths);
  if (left_ > 0) {
    const auto it = std::find_if(paths.begin(), paths.end(),
                                 [this](const BondPath& p) { return p.id == pinned_; });
    if (it != paths.end() && !stuck(*it, best)) {
      left_ -= 1;
      return pinned_;
    }
    if (it != paths.end()) {
      stuck_skips_ += 1;  // the pinned path became stuck mid-pin: break the pin
    }
  }
  const std::size_t n = paths.size();
  std::size_t chosen = cursor_ % n;
  bool found = false;
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t idx = (cursor_ + i) % n;
    if (stuck(paths[idx], best)) {
      stuck_skips_ += 1;
      continue;
    }
    chosen = idx;
    found = true;
    break;
  }
  if (!found) {
    chosen = cursor_ % n;  // every path is stuck: use the cursor position anyway
  }
  cursor_ = chosen + 1;
  pinned_ = paths[chosen].id;
  left_ = pin_ - 1;
  return pinned_;
}

}  // namespace rendr::engine
