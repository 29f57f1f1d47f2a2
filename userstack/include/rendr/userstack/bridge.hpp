// SPDX-License-Identifier: Apache-2.0
// Bridge — a Pump (pump.hpp) with a thread of its own: hands an lwIP Connection to a server as
// a plain stream fd and pumps it until both directions finished, a reset, or stop(). For code
// that serves a few connections and has no event loop (rendr-tun's per-flow threads, tests);
// a process that serves many runs its pumps in one PumpSet instead (the userstack keeper).
//
//   auto b = rendr::userstack::Bridge::start(std::move(conn));
//   UniqueFd server_fd = b.value()->take_fd();  // give it to the server
//
// Owns its Connection; must be destroyed before the Stack. stop() ends the pump early (the
// Connection is then closed gracefully). Methods: one thread at a time.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/userstack/pump.hpp>

#include <atomic>
#include <memory>
#include <optional>
#include <thread>

namespace rendr::userstack {

class Bridge {
 public:
  // start creates the socketpair and the pump thread. Errors: socketpair/eventfd errno.
  [[nodiscard]] static Result<std::unique_ptr<Bridge>> start(ConnectionPtr conn,
                                                             std::size_t buffer = kPumpBuffer);
  ~Bridge();
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  // resume pumps a moved connection for a server that kept its fd (Pump::resume).
  [[nodiscard]] static Result<std::unique_ptr<Bridge>> resume(BridgeState st,
                                                              std::size_t buffer = kPumpBuffer);

  // detach stops the pump and hands back the Connection, the pump end and the bytes in
  // flight (once; the Bridge is empty afterwards). Errors: EALREADY (already detached).
  [[nodiscard]] Result<BridgeState> detach();

  // take_fd gives the server's end away (once).
  [[nodiscard]] UniqueFd take_fd() { return pump_->take_fd(); }
  void stop();
  // wait blocks until the pump ended by itself: both directions finished (EOF and FIN passed
  // both ways, every byte handed to the Connection) or a reset. Call it once the server has
  // shut down its writing side and read EOF, else it may wait for the peer indefinitely;
  // destroying (stop) instead discards what the pump still holds.
  void wait();
  [[nodiscard]] BridgeStats stats() const { return pump_->stats(); }
  // info: the Connection's view (state, queues) while the Bridge holds it (nullopt after
  // detach()). Safe while the pump runs: Connection::info takes lwIP's core lock.
  [[nodiscard]] std::optional<ConnectionInfo> info() const { return pump_->info(); }
  [[nodiscard]] const FourTuple& tuple() const { return pump_->tuple(); }

 private:
  Bridge(std::unique_ptr<Pump> pump, UniqueFd stop_efd);
  static Result<std::unique_ptr<Bridge>> run_pump(Result<std::unique_ptr<Pump>> pump);
  void run();

  std::unique_ptr<Pump> pump_;
  UniqueFd stop_efd_;
  std::atomic<bool> stop_req_{false};
  std::thread thread_;
};

}  // namespace rendr::userstack
