// SPDX-License-Identifier: Apache-2.0
// The migration part of `rendr-bench userstack`: connections moved by rendr-agent between hosts
// of a gateway lab (named netns rbus-*), measured the way `rendr-bench migrate` measures native
// downtime (bench/migrate_downtime.hpp: a 1 ms echo from the peer, per move the worst round
// trip around it):
//   mixed lab (a native, b userstack): a -> b moves are native -> userstack (n2u), b -> a moves
//   userstack -> native (u2n); per move the longest gap the peer's echo sees;
//   userstack lab (a and b userstack): userstack -> userstack downtime.
#pragma once

#include <rendr/common/result.hpp>

#include <string>
#include <vector>

namespace rendr::bench {

struct UserstackMoves {
  std::vector<double> n2u_ms;       // per native -> userstack move: the peer's worst echo RTT
  std::vector<double> u2n_ms;       // per userstack -> native move
  std::vector<double> u2u_ms;       // per userstack -> userstack move
  std::vector<double> frozen_ms;    // every committed move: the agent's freeze-to-commit time
  double baseline_p99_ms = 0;       // echo RTT p99 before the first move (userstack lab)
  std::uint64_t bytes_lost = 0;     // echo bytes lost or out of order, both labs
  std::string failures;             // "" when every move committed and every echo came back
};

// measure_userstack_moves builds each lab in turn (needs root: netns, eBPF, TCP_REPAIR, TUN),
// runs rendr-agent (|agent_bin|, |rendrctl_bin|) and an echo server (this executable's hidden
// echo-server subcommand) on both hosts, and moves the echoed connection |moves| times per lab.
// Errors: a lab or its agents did not come up.
[[nodiscard]] Result<UserstackMoves> measure_userstack_moves(int moves);

}  // namespace rendr::bench
