// SPDX-License-Identifier: Apache-2.0
// EchoServer: the accept handler of a userstack test - every connection is bridged to a
// socketpair fd and a plain blocking echo loop serves it (as an unmodified server would).
#pragma once

#include <rendr/userstack/bridge.hpp>
#include <rendr/userstack/stack.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace rendr::test {

class EchoServer {
 public:
  explicit EchoServer(userstack::Stack& stack) {
    stack.set_accept_handler([this](userstack::ConnectionPtr c) { serve(std::move(c)); });
  }
  ~EchoServer() {
    std::vector<std::unique_ptr<userstack::Bridge>> bridges;
    {
      std::lock_guard<std::mutex> g(mu_);
      bridges.swap(bridges_);
    }
    bridges.clear();  // closes the pump ends: every echo loop sees EOF
    for (auto& t : threads_) {
      t.join();
    }
  }
  [[nodiscard]] std::size_t accepted() const { return accepted_; }

 private:
  void serve(userstack::ConnectionPtr c) {
    auto b = userstack::Bridge::start(std::move(c));
    if (!b) {
      return;
    }
    int fd = b.value()->take_fd().release();
    std::lock_guard<std::mutex> g(mu_);
    ++accepted_;
    bridges_.push_back(std::move(b).value());
    threads_.emplace_back([fd] {
      std::vector<char> buf(256 * 1024);
      for (;;) {
        ssize_t n = ::read(fd, buf.data(), buf.size());
        if (n <= 0) {
          break;
        }
        for (ssize_t off = 0; off < n;) {
          ssize_t w = ::write(fd, buf.data() + off, static_cast<std::size_t>(n - off));
          if (w <= 0) {
            ::close(fd);
            return;
          }
          off += w;
        }
      }
      ::shutdown(fd, SHUT_WR);
      ::close(fd);
    });
  }

  std::mutex mu_;
  std::vector<std::unique_ptr<userstack::Bridge>> bridges_;
  std::vector<std::thread> threads_;
  std::atomic<std::size_t> accepted_{0};
};

}  // namespace rendr::test
