// SPDX-License-Identifier: Apache-2.0
// Reclaim: the I/O-free core of a restarted agent finishing a move its previous run froze.
#include <rendr/agents/reclaim.hpp>

namespace rendr::agents {

const char* to_string(ReclaimStep s) {
  switch (s) {
    case ReclaimStep::query_peers: return "query_peers";
    case ReclaimStep::wait: return "wait";
    case ReclaimStep::steer_back: return "steer_back";
    case ReclaimStep::thaw: return "thaw";
    case ReclaimStep::release: return "release";
    case ReclaimStep::hold: return "hold";
    case ReclaimStep::finished: return "finished";
  }
  return "?";
}

Reclaim::Reclaim(std::size_t peers, bool gateway, Clock::time_point now, Clock::duration budget,
                 Clock::duration retry)
    : peers_(peers), gateway_(gateway), deadline_(now + budget), retry_(retry) {
  if (peers_ == 0) {
    next_.step = gateway_ ? ReclaimStep::steer_back : ReclaimStep::thaw;
  }
}

void Reclaim::retry_or(Clock::time_point now, ReclaimStep after_wait, Next give_up,
                       std::string why) {
  last_problem_ = std::move(why);
  if (now + retry_ <= deadline_) {
    after_wait_ = after_wait;
    next_ = Next{ReclaimStep::wait, now + retry_};
    return;
  }
  next_ = give_up;
  if (give_up.step == ReclaimStep::hold) {
    outcome_ = "held: " + last_problem_;
  } else {
    warning_ = last_problem_;
  }
}

void Reclaim::on_answers(std::span<const PeerVerdict> answers, Clock::time_point now) {
  if (next_.step != ReclaimStep::query_peers) {
    return;
  }
  ++queries_;
  std::size_t unreachable = 0;
  for (PeerVerdict v : answers) {
    if (v == PeerVerdict::committed) {
      // One host has it live: whatever the others say, this copy is stale.
      next_ = Next{ReclaimStep::release, {}};
      return;
    }
    if (v == PeerVerdict::unreachable) {
      ++unreachable;
    }
  }
  // A missing answer counts as unreachable: never thaw on a partial picture.
  if (answers.size() < peers_) {
    unreachable += peers_ - answers.size();
  }
  if (unreachable != 0) {
    retry_or(now, ReclaimStep::query_peers, Next{ReclaimStep::hold, {}},
             std::to_string(unreachable) + " peer(s) did not answer: the move may have " +
                 "committed there");
    return;
  }
  next_ = Next{gateway_ ? ReclaimStep::steer_back : ReclaimStep::thaw, {}};
}

void Reclaim::on_steer(bool ok, const std::string& why, Clock::time_point now) {
  if (next_.step != ReclaimStep::steer_back) {
    return;
  }
  if (ok) {
    next_ = Next{ReclaimStep::thaw, {}};
    return;
  }
  retry_or(now, ReclaimStep::steer_back, Next{ReclaimStep::thaw, {}}, "steer back: " + why);
}

void Reclaim::on_thaw(bool ok, const std::string& why) {
  if (next_.step != ReclaimStep::thaw) {
    return;
  }
  next_ = Next{ReclaimStep::finished, {}};
  if (!ok) {
    outcome_ = "lost: " + why;
  } else {
    outcome_ = warning_.empty() ? std::string("returned") : "returned (" + warning_ + ")";
  }
}

void Reclaim::on_released() {
  if (next_.step != ReclaimStep::release) {
    return;
  }
  next_ = Next{ReclaimStep::finished, {}};
  outcome_ = "released";
}

void Reclaim::on_waited(Clock::time_point now) {
  if (next_.step != ReclaimStep::wait || now < next_.deadline) {
    return;
  }
  next_ = Next{after_wait_, {}};
}

}  // namespace rendr::agents
