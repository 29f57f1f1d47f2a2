// SPDX-License-Identifier: Apache-2.0
#include <rendr/agents/drain.hpp>

namespace rendr::agents {

const char* to_string(DrainStop s) {
  switch (s) {
    case DrainStop::drained:
      return "drained";
    case DrainStop::stalled:
      return "stalled";
    case DrainStop::timed_out:
      return "timed_out";
    case DrainStop::disabled:
      return "disabled";
  }
  return "?";
}

DrainPlan::DrainPlan(DrainOptions o, std::size_t flows, Clock::time_point start)
    : o_(o), flows_(flows), start_(start), last_progress_(start) {}

std::optional<DrainStop> DrainPlan::observe(std::uint64_t queued, Clock::time_point now) {
  if (!seen_) {
    first_ = queued;
    seen_ = true;
  }
  if (o_.max.count() <= 0) {
    return DrainStop::disabled;
  }
  if (queued <= o_.target_per_flow * flows_) {
    return DrainStop::drained;
  }
  if (queued < least_) {
    least_ = queued;
    last_progress_ = now;
  }
  if (now - start_ >= o_.max) {
    return DrainStop::timed_out;
  }
  if (now - last_progress_ >= o_.stalled) {
    return DrainStop::stalled;  // a closed window or a peer that does not read: waiting won't help
  }
  return std::nullopt;
}

}  // namespace rendr::agents
