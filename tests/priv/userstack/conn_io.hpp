// SPDX-License-Identifier: Apache-2.0
// Blocking-with-deadline helpers over a userstack Connection (tests only).
#pragma once

#include <rendr/userstack/stack.hpp>

#include <poll.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

namespace rendr::test {

inline std::vector<std::byte> conn_read_exact(
    userstack::Connection& c, std::size_t n,
    std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
  std::vector<std::byte> out(n);
  std::size_t got = 0;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (got < n) {
    c.clear_event();
    auto r = c.read(std::span<std::byte>(out.data() + got, n - got));
    if (r && *r == 0) {
      throw std::runtime_error("conn_read_exact: EOF after " + std::to_string(got));
    }
    if (r) {
      got += *r;
      continue;
    }
    if (r.error().code != std::errc::resource_unavailable_try_again) {
      throw std::runtime_error("conn_read_exact: " + r.error().message());
    }
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error("conn_read_exact: timeout after " + std::to_string(got));
    }
    pollfd pf{c.event_fd(), POLLIN, 0};
    ::poll(&pf, 1, 20);
  }
  return out;
}

inline void conn_write_all(userstack::Connection& c, std::span<const std::byte> data,
                           std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
  std::size_t off = 0;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (off < data.size()) {
    c.clear_event();
    auto r = c.write(data.subspan(off));
    if (r) {
      off += *r;
      continue;
    }
    if (r.error().code != std::errc::resource_unavailable_try_again) {
      throw std::runtime_error("conn_write_all: " + r.error().message());
    }
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error("conn_write_all: timeout after " + std::to_string(off));
    }
    pollfd pf{c.event_fd(), POLLIN, 0};
    ::poll(&pf, 1, 20);
  }
}

// conn_expect_eof waits for the peer's FIN with nothing left to read.
inline void conn_expect_eof(userstack::Connection& c,
                            std::chrono::milliseconds timeout = std::chrono::milliseconds(10000)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::byte b{};
  for (;;) {
    c.clear_event();
    auto r = c.read(std::span<std::byte>(&b, 1));
    if (r && *r == 0) {
      return;
    }
    if (r) {
      throw std::runtime_error("conn_expect_eof: unexpected data");
    }
    if (r.error().code != std::errc::resource_unavailable_try_again) {
      throw std::runtime_error("conn_expect_eof: " + r.error().message());
    }
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error("conn_expect_eof: timeout");
    }
    pollfd pf{c.event_fd(), POLLIN, 0};
    ::poll(&pf, 1, 20);
  }
}

// wait_recv_queue waits until |c| holds |n| unread bytes.
inline void wait_recv_queue(userstack::Connection& c, std::uint32_t n,
                            std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (c.info().recv_queue < n) {
    if (std::chrono::steady_clock::now() > deadline) {
      throw std::runtime_error("wait_recv_queue: have " + std::to_string(c.info().recv_queue) +
                               " of " + std::to_string(n));
    }
    pollfd pf{c.event_fd(), POLLIN, 0};
    ::poll(&pf, 1, 20);
    c.clear_event();
  }
}

}  // namespace rendr::test
