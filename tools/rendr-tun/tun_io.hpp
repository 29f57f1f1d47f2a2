// SPDX-License-Identifier: Apache-2.0
// IoThread: the io_context rendr-tun runs its engine flows and relays on (every Dialer of the
// ingress, the egress's listener), and the one thread that runs it, named for per-thread CPU
// reports. Stops and joins on destruction.
#pragma once

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>

#include <pthread.h>

#include <string>
#include <thread>

namespace rendr::tun {

struct IoThread {
  explicit IoThread(std::string name)
      : t([this, n = std::move(name)] {
          (void)::pthread_setname_np(::pthread_self(), n.c_str());
          io.run();
        }) {}
  ~IoThread() {
    work.reset();
    io.stop();
    t.join();
  }
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  asio::io_context io{1};  // one thread runs it
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  std::thread t;
};

}  // namespace rendr::tun
