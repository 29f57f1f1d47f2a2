// SPDX-License-Identifier: Apache-2.0
#include <pthread.h>
#include <rendr/userstack/pump_hub.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <future>

namespace rendr::userstack {

Result<std::unique_ptr<PumpHub>> PumpHub::start() {
  auto set = PumpSet::create();
  if (!set) {
    return set.error();
  }
  std::unique_ptr<PumpHub> h(new PumpHub(std::move(*set)));
  if (!h->wake_) {
    return errno_error("userstack pump hub: eventfd");
  }
  h->thread_ = std::thread([p = h.get()] {
    (void)::pthread_setname_np(::pthread_self(), "us-pumps");  // per-thread CPU reports
    p->run();
  });
  return h;
}

PumpHub::PumpHub(PumpSet set)
    : set_(std::move(set)), wake_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}

PumpHub::~PumpHub() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  const std::uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
  if (thread_.joinable()) {
    thread_.join();
  }
}

bool PumpHub::call(const std::function<void()>& f) {
  std::promise<void> done;
  auto fut = done.get_future();
  {
    std::lock_guard lk(mu_);
    if (stop_) {
      return false;
    }
    calls_.emplace_back([&] {
      f();
      done.set_value();
    });
  }
  const std::uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
  fut.wait();
  return true;
}

Result<std::shared_ptr<PumpHub::Ticket>> PumpHub::attach(ConnectionPtr conn, UniqueFd& server_fd,
                                                         std::size_t buffer) {
  auto p = Pump::start(std::move(conn), buffer);
  if (!p) {
    return p.error();
  }
  server_fd = (*p)->take_fd();
  auto t = std::make_shared<Ticket>();
  Status added;
  std::unique_ptr<Pump> pump = std::move(*p);
  const bool ran = call([&] {
    Pump& raw = *pump;
    added = set_.add(raw);
    if (!added) {
      return;
    }
    by_ticket_[t.get()] = &raw;
    pumps_[&raw] = {std::move(pump), t};
    if (raw.state() != Pump::State::running) {
      end(raw, raw.state());
    }
  });
  if (!ran) {
    return make_error(std::errc::operation_canceled, "userstack pump hub: stopping");
  }
  if (!added) {
    return added.error();
  }
  return t;
}

void PumpHub::wait(Ticket& t) {
  std::unique_lock lk(t.mu);
  t.cv.wait(lk, [&] { return t.ended; });
}

void PumpHub::finish(Ticket& t, bool reset) {
  (void)call([&] {
    auto it = by_ticket_.find(&t);
    if (it == by_ticket_.end()) {
      return;  // ended already
    }
    Pump& p = *it->second;
    set_.remove(p);
    if (reset) {
      if (auto st = p.detach(); st && st->conn) {
        st->conn->abort();
      }
    }
    end(p, reset ? Pump::State::reset : p.state());
  });
}

std::size_t PumpHub::size() {
  std::size_t n = 0;
  (void)call([&] { n = pumps_.size(); });
  return n;
}

void PumpHub::end(Pump& p, Pump::State why) {
  set_.remove(p);
  auto it = pumps_.find(&p);
  if (it == pumps_.end()) {
    return;
  }
  std::shared_ptr<Ticket> t = it->second.second;
  const BridgeStats stats = p.stats();
  by_ticket_.erase(t.get());
  pumps_.erase(it);  // the Pump goes: its connection closes as a socket would
  std::lock_guard lk(t->mu);
  t->ended = true;
  t->state = why;
  t->stats = stats;
  t->cv.notify_all();
}

void PumpHub::run() {
  for (;;) {
    pollfd pf[2] = {{wake_.get(), POLLIN, 0}, {set_.fd(), POLLIN, 0}};
    ::poll(pf, 2, 1000);
    if ((pf[0].revents & POLLIN) != 0) {
      std::uint64_t v = 0;
      (void)!::read(wake_.get(), &v, sizeof v);
    }
    std::deque<std::function<void()>> calls;
    bool stop = false;
    {
      std::lock_guard lk(mu_);
      calls.swap(calls_);
      stop = stop_;
    }
    for (auto& f : calls) {
      f();
    }
    if (stop) {
      break;
    }
    if ((pf[1].revents & POLLIN) != 0) {
      for (Pump* p : set_.run()) {
        end(*p, p->state());
      }
    }
  }
  // Stopping: every pump still here goes (connections closed); waiters are released.
  while (!pumps_.empty()) {
    Pump& p = *pumps_.begin()->first;
    end(p, p.state());
  }
}

}  // namespace rendr::userstack
