// SPDX-License-Identifier: Apache-2.0
// Loopback socket helpers for the benchmarks: a private network namespace with lo up, listeners
// and connected pairs on 127.0.0.1, bounded blocking I/O (poll with a deadline), queue sizes.
// Everything returns Result; nothing here throws.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

namespace rendr::bench {

// enter_private_netns moves the calling process (it must still be single-threaded) into a new,
// empty network namespace and brings lo up. EPERM names CAP_SYS_ADMIN.
[[nodiscard]] Status enter_private_netns();

// raise_nofile makes sure at least |want| descriptors can be open (soft and, if needed, hard
// limit); EPERM names CAP_SYS_RESOURCE.
[[nodiscard]] Status raise_nofile(std::uint64_t want);
// raise_nofile_to_hard raises the soft descriptor limit to the hard one (best effort: needs no
// privilege, and a failure leaves the limit as it was).
void raise_nofile_to_hard();

struct ListenOptions {
  std::uint16_t port = 0;       // 0 = kernel picks
  int rcvbuf_force = 0;         // SO_RCVBUFFORCE inherited by accepted sockets (0 = default)
  int sndbuf_force = 0;         // SO_SNDBUFFORCE inherited by accepted sockets
  int backlog = 4096;
};
[[nodiscard]] Result<UniqueFd> listen_loopback(const ListenOptions& o);
[[nodiscard]] Result<std::uint16_t> local_port(int fd);

struct ConnectOptions {
  int rcvbuf = 0;  // SO_RCVBUF before connect (0 = default): small values close the window early
  bool nodelay = true;
};
[[nodiscard]] Result<UniqueFd> connect_loopback(std::uint16_t port, const ConnectOptions& o);
// accept_one waits (bounded) for one connection on |listener|.
[[nodiscard]] Result<UniqueFd> accept_one(int listener, int timeout_ms = 5000);

// write_exact / read_exact move exactly |data.size()| bytes or fail after |timeout_ms| without
// progress (ETIMEDOUT), on EOF (ECONNRESET-like EPIPE) or on a socket error.
[[nodiscard]] Status write_exact(int fd, std::span<const std::byte> data, int timeout_ms = 5000);
[[nodiscard]] Status read_exact(int fd, std::span<std::byte> data, int timeout_ms = 5000);

// ping_pong sends one byte |a| -> |b| and one back, checking their values: proves both directions
// of the stream still work and that no stray byte is waiting in either receive queue.
[[nodiscard]] Status ping_pong(int a, int b, std::uint8_t tag, int timeout_ms = 5000);

// Queue sizes (SIOCINQ: unread bytes; SIOCOUTQ: unacknowledged + unsent bytes).
[[nodiscard]] Result<int> inq(int fd);
[[nodiscard]] Result<int> outq(int fd);

}  // namespace rendr::bench
