// SPDX-License-Identifier: Apache-2.0
#include "ebpf_util.hpp"

#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace rendr::test {
namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

Endpoint from_ss(const sockaddr_storage& ss, socklen_t len) {
  auto e = Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
  if (!e) {
    throw std::runtime_error(e.error().message());
  }
  return *e;
}

}  // namespace

UniqueFd listen_tcp(const Endpoint& ep) {
  auto fd = UniqueFd::socket(ep.af(), SOCK_STREAM, IPPROTO_TCP);
  if (!fd) {
    throw std::runtime_error(fd.error().message());
  }
  int on = 1;
  (void)::setsockopt(fd->get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  sockaddr_storage ss{};
  socklen_t len = ep.to_sockaddr(ss);
  if (::bind(fd->get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    fail("bind " + ep.to_string());
  }
  if (::listen(fd->get(), 16) != 0) {
    fail("listen");
  }
  return std::move(*fd);
}

Result<UniqueFd> connect_tcp(const Endpoint& ep) {
  auto fd = UniqueFd::socket(ep.af(), SOCK_STREAM | SOCK_NONBLOCK, IPPROTO_TCP);
  if (!fd) {
    return fd.error();
  }
  sockaddr_storage ss{};
  socklen_t len = ep.to_sockaddr(ss);
  if (::connect(fd->get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    if (errno != EINPROGRESS) {
      return errno_error("connect " + ep.to_string());
    }
    pollfd p{fd->get(), POLLOUT, 0};
    if (::poll(&p, 1, 5000) != 1) {
      return errno_error("connect " + ep.to_string() + ": timeout", ETIMEDOUT);
    }
    int err = socket_error(fd->get());
    if (err != 0) {
      return errno_error("connect " + ep.to_string(), err);
    }
  }
  return std::move(*fd);
}

UniqueFd accept_tcp(int listener, int timeout_ms) {
  if (!readable(listener, timeout_ms)) {
    throw std::runtime_error("accept: no connection within deadline");
  }
  int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0) {
    fail("accept4");
  }
  return UniqueFd(fd);
}

Endpoint local_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    fail("getsockname");
  }
  return from_ss(ss, len);
}

Endpoint peer_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    fail("getpeername");
  }
  return from_ss(ss, len);
}

bool readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  int r = ::poll(&p, 1, timeout_ms);
  if (r < 0) {
    fail("poll");
  }
  return r == 1;
}

void send_all(int fd, std::span<const std::byte> data, int timeout_ms) {
  std::size_t off = 0;
  while (off < data.size()) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, timeout_ms) != 1) {
      throw std::runtime_error("send: no progress within deadline");
    }
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN) {
      fail("send");
    }
    if (n > 0) {
      off += static_cast<std::size_t>(n);
    }
  }
}

std::vector<std::byte> recv_exact(int fd, std::size_t n, int timeout_ms) {
  std::vector<std::byte> out(n);
  std::size_t off = 0;
  while (off < n) {
    if (!readable(fd, timeout_ms)) {
      throw std::runtime_error("recv: got " + std::to_string(off) + " of " + std::to_string(n) +
                               " bytes before the deadline");
    }
    ssize_t r = ::recv(fd, out.data() + off, n - off, MSG_DONTWAIT);
    if (r == 0) {
      throw std::runtime_error("recv: EOF after " + std::to_string(off) + " bytes");
    }
    if (r < 0 && errno != EAGAIN) {
      fail("recv");
    }
    if (r > 0) {
      off += static_cast<std::size_t>(r);
    }
  }
  return out;
}

int socket_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    fail("SO_ERROR");
  }
  return err;
}

int ifindex_of(const std::string& name) {
  unsigned idx = ::if_nametoindex(name.c_str());
  if (idx == 0) {
    fail("if_nametoindex " + name);
  }
  return static_cast<int>(idx);
}

}  // namespace rendr::test
