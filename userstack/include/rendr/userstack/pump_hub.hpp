// SPDX-License-Identifier: Apache-2.0
// PumpHub — one thread that pumps many connections (a PumpSet), for code that hands connections
// to servers from many threads of its own (rendr-tun's per-flow threads): what a Bridge does,
// without a thread per connection.
//
//   auto hub = rendr::userstack::PumpHub::start().value();
//   UniqueFd server_fd;
//   auto t = hub->attach(std::move(conn), server_fd).value();   // give server_fd away
//   ...
//   hub->wait(*t);     // the pump ended by itself (both directions finished, or a reset)
//   hub->abort(*t);    // or: stop it and reset the connection (the app sees a RST)
//
// A ticket's pump is destroyed (its connection closed like a kernel socket) by the first of:
// its end (after wait() returned), abort(), release(), or the hub's destruction. Must be
// destroyed before the Stack. Thread-safe.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/userstack/pump.hpp>

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

namespace rendr::userstack {

class PumpHub {
 public:
  // Ticket: one attached connection's outcome (filled by the hub's thread).
  struct Ticket {
    std::mutex mu;
    std::condition_variable cv;
    bool ended = false;
    Pump::State state = Pump::State::running;
    BridgeStats stats;
  };

  // start creates the PumpSet and the thread. Errors: epoll/eventfd errno.
  [[nodiscard]] static Result<std::unique_ptr<PumpHub>> start();
  ~PumpHub();
  PumpHub(const PumpHub&) = delete;
  PumpHub& operator=(const PumpHub&) = delete;

  // attach pumps |conn| and sets |server_fd| to the server's end. Errors: socketpair, epoll.
  [[nodiscard]] Result<std::shared_ptr<Ticket>> attach(ConnectionPtr conn, UniqueFd& server_fd,
                                                       std::size_t buffer = kPumpBuffer);
  // wait blocks until |t|'s pump ended (by itself, abort() or release()).
  void wait(Ticket& t);
  // abort stops |t|'s pump and resets its connection; release stops it and closes the
  // connection gracefully. Both return once done (at once if it had ended).
  void abort(Ticket& t) { finish(t, true); }
  void release(Ticket& t) { finish(t, false); }
  [[nodiscard]] std::size_t size();

 private:
  explicit PumpHub(PumpSet set);
  void run();
  // call runs |f| on the hub's thread and waits for it; false when the hub is stopping.
  bool call(const std::function<void()>& f);
  void finish(Ticket& t, bool reset);
  void end(Pump& p, Pump::State why);  // hub thread

  PumpSet set_;
  UniqueFd wake_;
  std::mutex mu_;
  std::deque<std::function<void()>> calls_;
  bool stop_ = false;
  // Hub thread only:
  std::map<Pump*, std::pair<std::unique_ptr<Pump>, std::shared_ptr<Ticket>>> pumps_;
  std::map<Ticket*, Pump*> by_ticket_;
  std::thread thread_;
};

}  // namespace rendr::userstack
