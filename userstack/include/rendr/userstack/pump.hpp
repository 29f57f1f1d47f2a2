// SPDX-License-Identifier: Apache-2.0
// Pump — hands an lwIP Connection to a server as a plain stream fd, without a thread of its
// own: one end of a socketpair(AF_UNIX, SOCK_STREAM) is the server's, the other is pumped to
// and from the Connection by step(), with backpressure both ways (a slow server closes the TCP
// receive window; a slow peer stops the server's writes). EOF maps to FIN both ways
// (shutdown(SHUT_WR) <-> Connection::shutdown_write); a reset ends the pump.
//
// Who calls step(): a PumpSet (one epoll for many pumps, run from the owner's event loop - the
// userstack keeper), or a Bridge (bridge.hpp: one thread per pump). step() never blocks.
//
//   PumpSet set = PumpSet::create().value();
//   auto p = Pump::start(std::move(conn)).value();
//   UniqueFd server_fd = p->take_fd();           // give it to the server
//   set.add(*p);                                 // (check p->state()), then poll set.fd():
//   for (Pump* done : set.run()) { set.remove(*done); /* destroy it */ }
//
// Owns its Connection (closed like a kernel socket when the Pump is destroyed); must be
// destroyed before the Stack. Methods: one thread at a time (stats() from any thread).
#pragma once

#include <rendr/common/block_pool.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/tcp_snapshot.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/userstack/stack.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace rendr::userstack {

// BridgeState — what a stopped pump hands back (detach()), so its connection can be moved
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

inline constexpr std::size_t kPumpBuffer = 256U << 10;

class Pump {
 public:
  // What step() left: still pumping; both directions finished (EOF and FIN passed both ways,
  // every byte handed over); the TCP connection was reset; the server closed its end while the
  // pump held bytes for it (the Connection is reset then: those bytes were never read).
  enum class State { running, done, reset, server_gone };

  // start creates the socketpair. Errors: socketpair/fcntl errno.
  [[nodiscard]] static Result<std::unique_ptr<Pump>> start(ConnectionPtr conn,
                                                           std::size_t buffer = kPumpBuffer);
  // resume pumps a moved connection for a server that kept its fd: |st| comes from detach()
  // (pump end, flags) with |st|.conn replaced by the restored Connection; bytes still in
  // |st|.to_server / from_server are delivered first. Errors: EINVAL (no connection or end).
  [[nodiscard]] static Result<std::unique_ptr<Pump>> resume(BridgeState st,
                                                            std::size_t buffer = kPumpBuffer);
  ~Pump();
  Pump(const Pump&) = delete;
  Pump& operator=(const Pump&) = delete;

  // step moves the bytes it can now, both ways, and returns; once not running it does nothing.
  // A busy flow yields after a bounded amount (more() is then true: step it again soon,
  // whether or not its fds fire).
  State step();
  [[nodiscard]] bool more() const { return more_; }
  [[nodiscard]] State state() const { return state_; }
  // The fds step() waits on: the pump end (readable/writable) and the Connection's event fd.
  [[nodiscard]] int pump_fd() const { return mine_.get(); }
  [[nodiscard]] int event_fd() const;
  // wants: the poll events on pump_fd() worth waiting for now (for a level-triggered loop).
  [[nodiscard]] short wants() const;
  // close_pump_end closes the pump's end (the server reads EOF / its writes fail): what a
  // finished pump does when no set holds it (a PumpSet's owner destroys it instead).
  void close_pump_end() { mine_.reset(); }

  // detach hands back the Connection, the pump end and the bytes in flight (once; the Pump is
  // empty afterwards). Remove it from its PumpSet first. Errors: EALREADY (already detached).
  [[nodiscard]] Result<BridgeState> detach();
  // take_fd gives the server's end away (once; empty after resume()).
  [[nodiscard]] UniqueFd take_fd() { return std::move(server_fd_); }
  [[nodiscard]] BridgeStats stats() const;
  // info: the Connection's view (state, queues) while the Pump holds it (nullopt after
  // detach()). Connection::info takes lwIP's core lock.
  [[nodiscard]] std::optional<ConnectionInfo> info() const;
  [[nodiscard]] const FourTuple& tuple() const { return tuple_; }

 private:
  Pump(ConnectionPtr conn, UniqueFd mine, UniqueFd server, std::size_t buf);

  // Buffer: uninitialised (zeroing 2 x 256 KiB, faulting every page in, was a third of
  // rendr-tun ingress's CPU per short flow; a short flow touches a page or two), and of the
  // default size taken from and given back to a small process-wide pool: unmapping one costs a
  // TLB shootdown on every CPU, 100-150 us on a 2-vCPU host - inside a move's frozen window,
  // where the source's pump ends and the target's starts.
  class Buffer {
   public:
    explicit Buffer(std::size_t n);
    ~Buffer();
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    [[nodiscard]] std::byte* data() const { return p_; }
    [[nodiscard]] std::size_t size() const { return n_; }

   private:
    BlockPool::Block block_;               // kPumpBuffer: from the pumps' pool
    std::unique_ptr<std::byte[]> other_;   // any other size
    std::byte* p_ = nullptr;
    std::size_t n_;
  };
  Buffer in_;   // Connection -> server
  Buffer out_;  // server -> Connection
  std::size_t in_off_ = 0, in_len_ = 0, out_off_ = 0, out_len_ = 0;
  bool in_eof_ = false, out_eof_ = false, in_shut_ = false, out_shut_ = false;
  State state_ = State::running;
  bool more_ = false;
  static constexpr int kRounds = 8;  // per step(): up to 8 buffers each way

  ConnectionPtr conn_;
  FourTuple tuple_;
  UniqueFd mine_;
  UniqueFd server_fd_;
  std::atomic<std::uint64_t> to_server_{0};
  std::atomic<std::uint64_t> from_server_{0};
  std::atomic<bool> reset_{false};
  std::atomic<bool> done_{false};
};

// PumpSet — one epoll over many pumps (edge-triggered on both of each pump's fds), so one
// thread serves them all: poll fd() from the owner's loop and call run() when it is readable.
// Holds pointers only: the owner keeps each Pump alive until it removed it.
class PumpSet {
 public:
  // create makes the epoll. Errors: epoll_create1 errno.
  [[nodiscard]] static Result<PumpSet> create();
  // fd is readable while a pump of the set has something to do.
  [[nodiscard]] int fd() const { return ep_.get(); }
  // add registers |p| and steps it once (bytes may already wait): check p.state() after it.
  // Errors: epoll_ctl errno.
  [[nodiscard]] Status add(Pump& p);
  // remove unregisters |p| (before it is detached or destroyed); harmless when not added.
  void remove(Pump& p);
  // run steps each pump whose fds fired since the last run, without blocking, and returns
  // those of them that are not running (each once per call; still registered: remove them).
  [[nodiscard]] std::vector<Pump*> run();
  [[nodiscard]] std::size_t size() const { return count_; }

 private:
  PumpSet(UniqueFd ep, UniqueFd again) : ep_(std::move(ep)), again_(std::move(again)) {}
  void step(Pump& p, std::vector<Pump*>& stopped);
  void wake();
  UniqueFd ep_;
  UniqueFd again_;              // in the epoll: readable while pumps that yielded wait
  std::vector<Pump*> more_;     // pumps that yielded with work left
  std::size_t count_ = 0;
};

}  // namespace rendr::userstack
