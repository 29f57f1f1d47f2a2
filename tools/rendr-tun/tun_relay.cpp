// SPDX-License-Identifier: Apache-2.0
#include "tun_relay.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <thread>
#include <vector>

namespace rendr::tun {

RelayResult relay(Conn& conn, int fd) {
  RelayResult r;
  // Conn -> fd on a helper thread; fd -> Conn here.
  std::thread down([&] {
    std::vector<std::byte> buf(64 * 1024);
    while (true) {
      auto n = conn.read_some(buf);
      if (!n) {
        r.down = std::move(n).take_error();
        break;
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
      }
      if (!r.down) {
        break;
      }
    }
    ::shutdown(fd, SHUT_WR);
  });
  std::vector<std::byte> buf(64 * 1024);
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
      r.up = conn.shutdown_write();  // the app half-closed: the far side reads EOF
      break;
    }
    if (auto st = conn.write(std::span(buf).first(static_cast<std::size_t>(n))); !st) {
      r.up = std::move(st);
      break;
    }
    r.to_conn += static_cast<std::uint64_t>(n);
  }
  if (!r.up) {
    ::shutdown(fd, SHUT_RD);
  }
  down.join();
  (void)conn.close();
  return r;
}

}  // namespace rendr::tun
