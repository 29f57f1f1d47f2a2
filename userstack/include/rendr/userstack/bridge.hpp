// SPDX-License-Identifier: Apache-2.0
// Bridge — hands an lwIP Connection to a server as a plain stream fd: one end of a
// socketpair(AF_UNIX, SOCK_STREAM) is the server's, the other is pumped to and from the
// Connection by the Bridge's own thread, with backpressure both ways (a slow server closes the
// TCP receive window; a slow peer stops the server's writes). EOF maps to FIN both ways
// (shutdown(SHUT_WR) <-> Connection::shutdown_write); a reset closes the server's end.
//
//   auto b = rendr::userstack::Bridge::start(std::move(conn));
//   UniqueFd server_fd = b.value()->take_fd();  // give it to the server
//
// Owns its Connection; must be destroyed before the Stack. stop() ends the pump early (the
// Connection is then closed gracefully). Methods: one thread at a time.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/userstack/stack.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

namespace rendr::userstack {

struct BridgeStats {
  std::uint64_t to_server = 0;    // bytes lwIP -> server
  std::uint64_t from_server = 0;  // bytes server -> lwIP
  bool reset = false;             // the TCP connection was reset
  bool done = false;              // both directions finished
};

class Bridge {
 public:
  // start creates the socketpair and the pump thread. Errors: socketpair/eventfd errno.
  [[nodiscard]] static Result<std::unique_ptr<Bridge>> start(ConnectionPtr conn,
                                                            std::size_t buffer = 256U << 10);
  ~Bridge();
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  // take_fd gives the server's end away (once).
  [[nodiscard]] UniqueFd take_fd() { return std::move(server_fd_); }
  void stop();
  [[nodiscard]] BridgeStats stats() const;
  [[nodiscard]] const FourTuple& tuple() const { return tuple_; }

 private:
  Bridge(ConnectionPtr conn, UniqueFd mine, UniqueFd server, UniqueFd stop_efd, std::size_t buf);
  void run();

  ConnectionPtr conn_;
  FourTuple tuple_;
  UniqueFd mine_;
  UniqueFd server_fd_;
  UniqueFd stop_efd_;
  std::size_t buf_size_;
  std::atomic<std::uint64_t> to_server_{0};
  std::atomic<std::uint64_t> from_server_{0};
  std::atomic<bool> reset_{false};
  std::atomic<bool> done_{false};
  std::thread thread_;
};

}  // namespace rendr::userstack
