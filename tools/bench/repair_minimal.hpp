// SPDX-License-Identifier: Apache-2.0
// The reference for `rendr-bench repair`'s idle_vs_minimal_ratio: the fewest syscalls that
// checkpoint and restore an idle ESTABLISHED IPv4/IPv6 socket correctly (sequence numbers,
// addresses, MSS, window scale / SACK / timestamps, the repair window, and the two options the
// bench's sockets carry: SO_REUSEADDR, which leaving repair mode clears, and TCP_NODELAY), with
// no other option save, no read-backs, no ACK kick. It refuses a socket with queued data (it
// does not save queues). What does not change while the flow runs - the addresses and those two
// options - is read before the freeze (minimal_prepare), under the rule rendr's checkpoint
// follows with read_options() and a known tuple.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include "stats.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cstdint>
#include <functional>

namespace rendr::bench {

// Read before the freeze: the addresses and the options a restore must set again.
struct MinimalPrep {
  sockaddr_storage local{};
  sockaddr_storage remote{};
  socklen_t local_len = 0;
  socklen_t remote_len = 0;
  bool reuseaddr = false;
  bool nodelay = false;
};

struct MinimalSnapshot {
  MinimalPrep prep;
  std::uint32_t send_seq = 0;
  std::uint32_t recv_seq = 0;
  std::uint32_t mss = 0;
  std::uint32_t timestamp = 0;
  tcp_info info{};
  tcp_repair_window window{};
};

// minimal_prepare reads |fd|'s addresses, SO_REUSEADDR and TCP_NODELAY (not in repair mode).
[[nodiscard]] Result<MinimalPrep> minimal_prepare(int fd);
// minimal_checkpoint puts |fd| into repair mode and reads what an idle restore needs. The fd
// stays in repair mode: closing it afterwards is silent.
[[nodiscard]] Result<MinimalSnapshot> minimal_checkpoint(int fd, const MinimalPrep& prep);
// minimal_restore rebuilds the connection in a new socket and leaves repair mode.
[[nodiscard]] Result<UniqueFd> minimal_restore(const MinimalSnapshot& s);

// Alternated: rendr's idle checkpoint+restore and the minimal recipe's, iteration by iteration
// on two connections, so both see the same machine state (idle_vs_minimal_ratio).
struct Alternated {
  Samples rendr;
  Samples minimal;
  std::uint64_t iterations = 0;
  [[nodiscard]] double ratio() {
    const double m = minimal.percentile_us(50);
    return m > 0 ? rendr.percentile_us(50) / m : 0;
  }
};
// run_alternated runs |warmup| + |iters| rounds; each round runs |rendr_step| (one rendr
// checkpoint+restore with its own check; returns its timed ns) and the minimal recipe on the
// connection |server| / |client| (checked with a ping-pong), in alternating order. With
// |prepare_first| minimal_prepare runs before the timed window (as rendr's option and address
// reads do with --options-first), else inside it.
[[nodiscard]] Result<Alternated> run_alternated(
    std::uint64_t warmup, std::uint64_t iters, bool prepare_first,
    const std::function<Result<std::uint64_t>(std::uint8_t)>& rendr_step, UniqueFd& server,
    int client, const std::function<void(std::uint64_t)>& tick);

}  // namespace rendr::bench
