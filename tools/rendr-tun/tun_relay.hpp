// SPDX-License-Identifier: Apache-2.0
// relay: bridges one application TCP byte stream (a stream socket: the userstack pump's end of
// an app flow terminated in lwIP, or the egress's connection to the origin) and one engine
// Conn, both ways, on the Conn's io thread - no thread per flow: each direction is one read in
// flight and, while its bytes are written on, none (the backpressure of both sides). Half-close
// is carried through (fd EOF -> Conn::shutdown_write, Conn EOF -> shutdown(fd, SHUT_WR)).
//
// When the engine flow fails (a refusal, the migration budget: anything but EOF)
// hooks.on_conn_error runs once, on the io thread, before the fd is touched: the ingress resets
// the app's flow there, so the app sees a reset rather than a FIN. The fd is then shut down
// both ways so that the other direction ends too. Once both directions ended the Conn is closed
// (Admin::async_close) and hooks.on_done runs (io thread); the Conn and the fd go after it.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>
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

struct RelayHooks {
  RelayProgress progress;
  std::function<void(const Error&)> on_conn_error;
  std::function<void(const RelayResult&)> on_done;
};

// start_relay takes |conn| and |fd| (a connected stream socket, made non-blocking here) and
// starts relaying on the Conn's io thread; returns at once (any thread).
void start_relay(ConnPtr conn, UniqueFd fd, RelayHooks hooks);

}  // namespace rendr::tun
