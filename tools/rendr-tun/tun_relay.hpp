// SPDX-License-Identifier: Apache-2.0
// relay: bridges one application TCP byte stream (a socket fd: the userstack Bridge's end of an
// app flow terminated in lwIP, or the egress's connection to the origin) and one engine Conn,
// both ways, with half-close carried through (fd EOF -> Conn::shutdown_write, Conn EOF ->
// shutdown(fd, SHUT_WR)) and backpressure from the blocking calls on each side. Returns when
// both directions ended; the Conn is closed then, the fd is the caller's.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/engine/conn.hpp>

#include <cstdint>

namespace rendr::tun {

struct RelayResult {
  std::uint64_t to_conn = 0;    // bytes fd -> Conn
  std::uint64_t from_conn = 0;  // bytes Conn -> fd
  Status up;                    // first error fd -> Conn, if any
  Status down;                  // first error Conn -> fd, if any
};

[[nodiscard]] RelayResult relay(Conn& conn, int fd);

}  // namespace rendr::tun
