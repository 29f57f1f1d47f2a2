// SPDX-License-Identifier: Apache-2.0
// Reclaim, I/O-free: what a restarted source agent does with a connection its previous run had
// frozen for a move and then died on. The server's embed Session keeps its duplicate of such a
// connection (the socket is in repair mode: only an agent can resume it) and hands it to the
// next agent that answers (MsgType::reclaim). That agent cannot know from the socket where the
// move got to, so it asks every host peer (QUERY by tuple; a target that still has the move
// staged aborts it first) and then finishes the move one way or the other:
//
//   query_peers --some peer committed it--> release (close silently; the server forgets it)
//   query_peers --every peer: not here-->   steer_back (when a gateway is configured) --> thaw
//                                           (leave repair mode; returned to the server)
//   query_peers --a peer did not answer-->  wait, then query_peers again, until the budget ends:
//                                           hold (still frozen, reported: only an operator who
//                                           knows that peer's state may decide)
//   steer_back failed -->                   wait and retry within the budget, then thaw anyway
//                                           (a connection the gateway still sends elsewhere is
//                                           lost; one that thaws may still live)
//   thaw failed -->                         lost (reported)
//
//   Reclaim r(2, true, now, 30s, 1s);
//   for (ReclaimNext n = r.next(); !r.done(); n = r.next()) {
//     ... run n.step (the I/O) and feed on_answers / on_steer / on_thaw / on_waited ...
//   }
#pragma once

#include <chrono>
#include <cstddef>
#include <span>
#include <string>

namespace rendr::agents {

// What one host peer said about the tuple.
enum class PeerVerdict : unsigned char {
  committed,    // the move committed there: the connection lives on that host
  not_here,     // never staged there, or aborted (also: aborted now, on this query)
  unreachable,  // no answer (down, or the channel failed): its state is unknown
};

enum class ReclaimStep : unsigned char {
  query_peers,  // ask every host peer about the tuple
  wait,         // sleep until the step's deadline, then call on_waited
  steer_back,   // ask the gateway to steer the tuple to this host again
  thaw,         // leave repair mode, lift the freeze, hand the fd back to the server
  release,      // close silently (no FIN, no RST), tell the server the export is done
  hold,         // done: keep it frozen (indeterminate)
  finished,     // done
};
[[nodiscard]] const char* to_string(ReclaimStep s);

class Reclaim {
 public:
  using Clock = std::chrono::steady_clock;

  struct Next {
    ReclaimStep step = ReclaimStep::query_peers;
    Clock::time_point deadline{};  // wait: when to go on
  };

  // |peers|: host peers to ask (0: nobody can have it, go to the steer-back at once);
  // |gateway|: whether a gateway steers this host's flows; |budget|: how long unreachable peers
  // or a failing gateway are retried, from |now|; |retry|: the pause between tries.
  Reclaim(std::size_t peers, bool gateway, Clock::time_point now, Clock::duration budget,
          Clock::duration retry);

  [[nodiscard]] Next next() const { return next_; }
  [[nodiscard]] bool done() const {
    return next_.step == ReclaimStep::hold || next_.step == ReclaimStep::finished;
  }
  // outcome: "released" | "returned" | "returned (steer back: <why>)" | "held: <why>" |
  // "lost: <why>" once done, else "".
  [[nodiscard]] const std::string& outcome() const { return outcome_; }
  [[nodiscard]] unsigned queries() const { return queries_; }

  // on_answers: one verdict per peer (in any order) for query_peers.
  void on_answers(std::span<const PeerVerdict> answers, Clock::time_point now);
  void on_steer(bool ok, const std::string& why, Clock::time_point now);
  void on_thaw(bool ok, const std::string& why);
  // on_released: the release step ran (it cannot fail: a silent close).
  void on_released();
  // on_waited: the wait step's deadline passed.
  void on_waited(Clock::time_point now);

 private:
  void retry_or(Clock::time_point now, ReclaimStep after_wait, Next give_up, std::string why);

  std::size_t peers_;
  bool gateway_;
  Clock::time_point deadline_;
  Clock::duration retry_;
  Next next_;
  ReclaimStep after_wait_ = ReclaimStep::query_peers;
  std::string outcome_;
  std::string last_problem_;
  std::string warning_;  // a steer back given up on: thawed anyway
  unsigned queries_ = 0;
};

}  // namespace rendr::agents
