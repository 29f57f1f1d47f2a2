// SPDX-License-Identifier: Apache-2.0
// relay: bridges one application TCP byte stream (a socket fd: the userstack Bridge's end of an
// app flow terminated in lwIP, or the egress's connection to the origin) and one engine Conn,
// both ways, with half-close carried through (fd EOF -> Conn::shutdown_write, Conn EOF ->
// shutdown(fd, SHUT_WR)) and backpressure from the blocking calls on each side. Returns when
// both directions ended; the Conn is closed then, the fd is the caller's.
//
// When the engine flow fails (a refusal, the migration budget: anything but EOF) |on_conn_error|
// runs once, on the thread that saw it, before the fd is touched: the ingress resets the app's
// flow there, so the app sees a reset rather than a FIN. The fd is then shut down both ways so
// that the other direction ends too.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/engine/conn.hpp>

#include <atomic>
#include <cstdint>
#include <functional>

namespace rendr::tun {

struct RelayResult {
  std::uint64_t to_conn = 0;    // bytes fd -> Conn
  std::uint64_t from_conn = 0;  // bytes Conn -> fd
  Status up;                    // first error fd -> Conn, if any
  Status down;                  // first error Conn -> fd, if any
  bool conn_failed = false;     // the engine flow failed (on_conn_error ran)
};

// RelayProgress: live byte counts for a status reader.
struct RelayProgress {
  std::atomic<std::uint64_t>* to_conn = nullptr;
  std::atomic<std::uint64_t>* from_conn = nullptr;
};

[[nodiscard]] RelayResult relay(Conn& conn, int fd, RelayProgress progress = {},
                                const std::function<void(const Error&)>& on_conn_error = {});

}  // namespace rendr::tun
