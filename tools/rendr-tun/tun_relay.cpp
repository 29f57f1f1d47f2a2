// SPDX-License-Identifier: Apache-2.0
#include "tun_relay.hpp"

#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <mutex>
#include <span>
#include <system_error>
#include <thread>
#include <vector>

namespace rendr::tun {

namespace {
constexpr std::size_t kBuf = 64 * 1024;  // per direction
}  // namespace

RelayResult relay(Conn& conn, int fd, RelayProgress progress,
                  const std::function<void(const Error&)>& on_conn_error) {
  RelayResult r;
  std::once_flag failed;
  std::atomic<bool> conn_failed_flag{false};
  const auto conn_failed = [&](const Error& e) {
    std::call_once(failed, [&] {
      conn_failed_flag.store(true);
      if (on_conn_error) {
        on_conn_error(e);
      }
      ::shutdown(fd, SHUT_RDWR);  // ends the other direction's blocking call
    });
  };
  // Conn -> fd on a helper thread; fd -> Conn here.
  std::thread down([&] {
    (void)::pthread_setname_np(::pthread_self(), "tun-relay-down");  // per-thread CPU reports
    // Uninitialised: a short flow should not pay for zeroing (and faulting in) 64 KiB.
    std::unique_ptr<std::byte[]> mem(new std::byte[kBuf]);
    std::span<std::byte> buf(mem.get(), kBuf);
    while (true) {
      auto n = conn.read_some(buf);
      if (!n) {
        r.down = std::move(n).take_error();
        conn_failed(r.down.error());
        return;
      }
      if (*n == 0) {
        break;  // the far side half-closed (or closed): pass the FIN on
      }
      std::size_t off = 0;
      while (off < *n) {
        const ssize_t w = ::send(fd, buf.data() + off, *n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
          continue;
        }
        if (w <= 0) {
          r.down = errno_error("relay: send");
          break;
        }
        off += static_cast<std::size_t>(w);
        r.from_conn += static_cast<std::uint64_t>(w);
        if (progress.from_conn != nullptr) {
          progress.from_conn->fetch_add(static_cast<std::uint64_t>(w), std::memory_order_relaxed);
        }
      }
      if (!r.down) {
        break;
      }
    }
    ::shutdown(fd, SHUT_WR);
  });
  std::unique_ptr<std::byte[]> mem(new std::byte[kBuf]);
  std::span<std::byte> buf(mem.get(), kBuf);
  while (true) {
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      r.up = errno_error("relay: recv");
      break;
    }
    if (n == 0) {
      if (!conn_failed_flag.load()) {
        r.up = conn.shutdown_write();  // the app half-closed: the far side reads EOF
      }
      break;
    }
    if (auto st = conn.write(std::span(buf).first(static_cast<std::size_t>(n))); !st) {
      r.up = std::move(st);
      conn_failed(r.up.error());
      break;
    }
    r.to_conn += static_cast<std::uint64_t>(n);
    if (progress.to_conn != nullptr) {
      progress.to_conn->fetch_add(static_cast<std::uint64_t>(n), std::memory_order_relaxed);
    }
  }
  if (!r.up) {
    ::shutdown(fd, SHUT_RD);
  }
  down.join();
  r.conn_failed = conn_failed_flag.load();
  (void)conn.close();
  return r;
}

}  // namespace rendr::tun
