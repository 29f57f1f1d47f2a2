// SPDX-License-Identifier: Apache-2.0
#include <pthread.h>
#include <rendr/userstack/bridge.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace rendr::userstack {

Result<std::unique_ptr<Bridge>> Bridge::start(ConnectionPtr conn, std::size_t buffer) {
  return run_pump(Pump::start(std::move(conn), buffer));
}

Result<std::unique_ptr<Bridge>> Bridge::resume(BridgeState st, std::size_t buffer) {
  return run_pump(Pump::resume(std::move(st), buffer));
}

Result<std::unique_ptr<Bridge>> Bridge::run_pump(Result<std::unique_ptr<Pump>> pump) {
  if (!pump) {
    return pump.error();
  }
  UniqueFd stop(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!stop) {
    return errno_error("userstack bridge: eventfd");
  }
  std::unique_ptr<Bridge> b(new Bridge(std::move(*pump), std::move(stop)));
  b->thread_ = std::thread([p = b.get()] {
    (void)::pthread_setname_np(::pthread_self(), "us-bridge");  // per-thread CPU reports
    p->run();
  });
  return b;
}

Bridge::Bridge(std::unique_ptr<Pump> pump, UniqueFd stop_efd)
    : pump_(std::move(pump)), stop_efd_(std::move(stop_efd)) {}

Bridge::~Bridge() { stop(); }

void Bridge::wait() {
  if (thread_.joinable()) {
    thread_.join();
  }
}

void Bridge::stop() {
  if (thread_.joinable()) {
    stop_req_ = true;
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(stop_efd_.get(), &one, sizeof one);
    thread_.join();
  }
}

Result<BridgeState> Bridge::detach() {
  stop();
  return pump_->detach();
}

void Bridge::run() {
  while (!stop_req_) {
    if (pump_->step() != Pump::State::running) {
      // Finished or failed: close the pump end so the server sees EOF (or its writes fail).
      pump_->close_pump_end();
      return;
    }
    if (pump_->more()) {
      continue;  // yielded with work left
    }
    pollfd pf[3] = {{pump_->pump_fd(), pump_->wants(), 0},
                    {pump_->event_fd(), POLLIN, 0},
                    {stop_efd_.get(), POLLIN, 0}};
    ::poll(pf, 3, 1000);
    if ((pf[2].revents & POLLIN) != 0) {
      return;  // stopped: the pump end stays open (detach() may hand it on)
    }
  }
}

}  // namespace rendr::userstack
