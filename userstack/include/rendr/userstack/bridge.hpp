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
#include <rendr/common/tcp_snapshot.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/userstack/stack.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

namespace rendr::userstack {

// BridgeState — what a stopped Bridge hands back (detach()), so its connection can be moved
// while the server keeps its fd: the pump's end of the socketpair and the bytes in the pump's
// hands, which a snapshot must carry (account_bridge()).
struct BridgeState {
  ConnectionPtr conn;
  UniqueFd pump_end;
  std::vector<std::byte> to_server;    // read from the Connection, not yet written to the server
  std::vector<std::byte> from_server;  // read from the server, not yet taken by the Connection
  bool peer_eof = false;               // the Connection reported EOF (peer FIN) ...
  bool server_told_eof = false;        // ... and the pump end was shut down for writing
  bool server_eof = false;             // the server shut down its writing side ...
  bool conn_shut = false;              // ... and shutdown_write() was called on the Connection
};

// account_bridge moves the pump's bytes into |snap| (taken from |st|.conn): |to_server| is
// unread receive data that precedes the Connection's own (recv_seq moves back), |from_server|
// is unsent send data after it. Call it between Stack::snapshot() and shipping the snapshot.
void account_bridge(TcpSnapshot& snap, BridgeState& st);

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

  // resume pumps a moved connection for a server that kept its fd: |st| comes from detach()
  // (pump end, flags) with |st|.conn replaced by the restored Connection; bytes still in
  // |st|.to_server / from_server are delivered first.
  [[nodiscard]] static Result<std::unique_ptr<Bridge>> resume(BridgeState st,
                                                              std::size_t buffer = 256U << 10);

  // detach stops the pump and hands back the Connection, the pump end and the bytes in
  // flight (once; the Bridge is empty afterwards). Errors: EALREADY (already detached).
  [[nodiscard]] Result<BridgeState> detach();

  // take_fd gives the server's end away (once).
  [[nodiscard]] UniqueFd take_fd() { return std::move(server_fd_); }
  void stop();
  // wait blocks until the pump ended by itself: both directions finished (EOF and FIN passed
  // both ways, every byte handed to the Connection) or a reset. Call it once the server has
  // shut down its writing side and read EOF, else it may wait for the peer indefinitely;
  // destroying (stop) instead discards what the pump still holds.
  void wait();
  [[nodiscard]] BridgeStats stats() const;
  // info: the Connection's view (state, queues) while the Bridge holds it (nullopt after
  // detach()). Safe while the pump runs: Connection::info takes lwIP's core lock.
  [[nodiscard]] std::optional<ConnectionInfo> info() const;
  [[nodiscard]] const FourTuple& tuple() const { return tuple_; }

 private:
  Bridge(ConnectionPtr conn, UniqueFd mine, UniqueFd server, UniqueFd stop_efd, std::size_t buf);
  void run();
  void start_thread();

  // Buffers left uninitialised: zeroing 2 x 256 KiB (and faulting every page in) was a third
  // of rendr-tun ingress's CPU per short flow; a short flow touches a page or two.
  template <typename T>
  struct NoInit : std::allocator<T> {
    template <typename U>
    struct rebind {
      using other = NoInit<U>;
    };
    template <typename U>
    void construct(U* p) noexcept {
      ::new (static_cast<void*>(p)) U;
    }
    template <typename U, typename... A>
    void construct(U* p, A&&... a) {
      ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
    }
  };
  using Buffer = std::vector<std::byte, NoInit<std::byte>>;
  // Pump state (the pump thread's while it runs; detach() reads it after joining).
  Buffer in_;   // Connection -> server
  Buffer out_;  // server -> Connection
  std::size_t in_off_ = 0, in_len_ = 0, out_off_ = 0, out_len_ = 0;
  bool in_eof_ = false, out_eof_ = false, in_shut_ = false, out_shut_ = false;

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
  std::atomic<bool> stop_req_{false};
  std::thread thread_;
};

}  // namespace rendr::userstack
