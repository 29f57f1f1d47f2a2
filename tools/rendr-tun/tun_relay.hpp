// SPDX-License-Identifier: Apache-2.0
// relay: bridges one application TCP byte stream and one engine Conn, both ways, on the Conn's
// io thread - no thread per flow: each direction is one read in flight and, while its bytes are
// written on, none (the backpressure of both sides). Half-close is carried through (app EOF ->
// Conn::shutdown_write, Conn EOF -> the app side's FIN). The application's side is either
//   - an lwIP Connection of the userstack (the ingress: the app's flow terminated from the TUN;
//     read, written and shut down directly, woken by its waker), or
//   - a connected stream socket (the egress's connection to the origin).
//
// When the engine flow fails (a refusal, the migration budget: anything but EOF) the app side
// is failed at once - an lwIP Connection is reset, so the app sees a reset rather than a FIN; a
// socket is shut down both ways - and hooks.on_conn_error runs once (io thread) to count it.
// Once both directions ended the Conn is closed (Admin::async_close) and hooks.on_done runs
// (io thread); the Conn and the app side go after it (a Connection closes as a kernel socket
// would: FIN after what it still has to send).
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/engine/conn.hpp>
#include <rendr/userstack/stack.hpp>

#include <asio/posix/stream_descriptor.hpp>

#include <atomic>
#include <cstdint>
#include <functional>

namespace rendr::tun {

struct RelayResult {
  std::uint64_t to_conn = 0;    // bytes app -> Conn
  std::uint64_t from_conn = 0;  // bytes Conn -> app
  Status up;                    // first error app -> Conn, if any
  Status down;                  // first error Conn -> app, if any
  bool conn_failed = false;     // the engine flow failed (the app side was failed)
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

// start_relay takes |conn| and the app side and starts relaying on the Conn's io thread;
// returns at once (any thread). |fd|: a connected stream socket (made non-blocking here).
void start_relay(ConnPtr conn, UniqueFd fd, RelayHooks hooks);
// The same with the socket already registered on the Conn's io_context (the egress connected it
// there: no second registration).
void start_relay(ConnPtr conn, asio::posix::stream_descriptor sd, RelayHooks hooks);
// |app|: an lwIP connection whose input runs on the Conn's io thread (the relay wakes through
// Connection::set_waker).
void start_relay(ConnPtr conn, userstack::ConnectionPtr app, RelayHooks hooks);

}  // namespace rendr::tun
