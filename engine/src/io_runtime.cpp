// SPDX-License-Identifier: Apache-2.0
// IoRuntime: the io_context a Dialer or Listener runs its flows on, and its thread.
#include "driver_internal.hpp"

#include <asio/error.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>

#include <pthread.h>

#include <algorithm>
#include <type_traits>
#include <utility>
#include <variant>

namespace rendr::detail {

// ---------------------------------------------------------------------------------------------
// IoRuntime

std::shared_ptr<IoRuntime> IoRuntime::owned(std::string name) {
  std::shared_ptr<IoRuntime> rt(new IoRuntime());
  auto io = std::make_shared<asio::io_context>(1);
  rt->io_shared_ = io;
  rt->io_ = io.get();
  rt->work_ = std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(
      io->get_executor());
  rt->thread_ = std::thread([io, name = std::move(name)] {
    // Named so operators can tell rendr's io threads apart in top -H, perf and /proc (the
    // kernel keeps 15 characters).
    (void)::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str());
    io->run();
  });
  return rt;
}

std::shared_ptr<IoRuntime> IoRuntime::external(asio::io_context& io) {
  std::shared_ptr<IoRuntime> rt(new IoRuntime());
  rt->io_ = &io;
  return rt;
}

IoRuntime::~IoRuntime() {
  if (!thread_.joinable()) {
    return;
  }
  work_.reset();
  io_->stop();
  // The last owner may be a handler running on the io thread itself: then the thread finishes
  // the handler, returns from run() and destroys the io_context it co-owns.
  if (thread_.get_id() == std::this_thread::get_id()) {
    thread_.detach();
  } else {
    thread_.join();
  }
}

}  // namespace rendr::detail
