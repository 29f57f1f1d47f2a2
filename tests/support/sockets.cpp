// SPDX-License-Identifier: Apache-2.0
#include "support/sockets.hpp"

#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace rendr::test {
namespace {
[[noreturn]] void fail(const std::string& m) { throw std::runtime_error(m); }
}  // namespace

UniqueFd listen_tcp(const Endpoint& ep) {
  auto fd = UniqueFd::socket(ep.af(), SOCK_STREAM, IPPROTO_TCP);
  if (!fd) {
    fail(fd.error().message());
  }
  int one = 1;
  ::setsockopt(fd->get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage ss{};
  socklen_t len = ep.to_sockaddr(ss);
  if (::bind(fd->get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 ||
      ::listen(fd->get(), 128) != 0) {
    fail("listen on " + ep.to_string() + ": " + std::strerror(errno));
  }
  return std::move(*fd);
}

UniqueFd listen_on(const Netns& ns, const Endpoint& ep) {
  NetnsScope scope(ns);
  return listen_tcp(ep);
}

UniqueFd connect_from(const Netns& ns, const Endpoint& ep) {
  NetnsScope scope(ns);
  auto fd = UniqueFd::socket(ep.af(), SOCK_STREAM, 0);
  if (!fd) {
    fail(fd.error().message());
  }
  timeval tv{5, 0};
  ::setsockopt(fd->get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_storage ss{};
  socklen_t len = ep.to_sockaddr(ss);
  if (::connect(fd->get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    fail("connect to " + ep.to_string() + ": " + std::strerror(errno));
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

UniqueFd connect_bound(const Endpoint& from, const Endpoint& to) {
  UniqueFd fd(::socket(to.af(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    fail(std::string("socket: ") + std::strerror(errno));
  }
  sockaddr_storage ss{};
  socklen_t len = from.to_sockaddr(ss);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    fail("bind " + from.to_string() + ": " + std::strerror(errno));
  }
  timeval tv{5, 0};
  ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  len = to.to_sockaddr(ss);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    fail("connect " + to.to_string() + ": " + std::strerror(errno));
  }
  return fd;
}

UniqueFd accept_one(int listener, int timeout_ms) {
  pollfd p{listener, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) {
    fail("accept: no connection within " + std::to_string(timeout_ms) + " ms");
  }
  int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) {
    fail(std::string("accept: ") + std::strerror(errno));
  }
  return UniqueFd(fd);
}

bool readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  int r = ::poll(&p, 1, timeout_ms);
  if (r < 0) {
    fail(std::string("poll: ") + std::strerror(errno));
  }
  return r == 1;
}

namespace {
Endpoint from_ss(const sockaddr_storage& ss, socklen_t len) {
  auto e = Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
  if (!e) {
    fail(e.error().message());
  }
  return *e;
}
}  // namespace

Endpoint local_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    fail(std::string("getsockname: ") + std::strerror(errno));
  }
  return from_ss(ss, len);
}

Endpoint peer_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    fail(std::string("getpeername: ") + std::strerror(errno));
  }
  return from_ss(ss, len);
}

int socket_error(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    fail(std::string("SO_ERROR: ") + std::strerror(errno));
  }
  return err;
}

void set_nonblocking(int fd, bool on) {
  int fl = ::fcntl(fd, F_GETFL);
  ::fcntl(fd, F_SETFL, on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK));
}

void write_all(int fd, std::span<const std::byte> data, int timeout_ms) {
  std::size_t off = 0;
  while (off < data.size()) {
    pollfd p{fd, POLLOUT, 0};
    int r = ::poll(&p, 1, timeout_ms);
    if (r != 1) {
      fail("write_all: no progress for " + std::to_string(timeout_ms) + " ms at " +
           std::to_string(off) + "/" + std::to_string(data.size()));
    }
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN) {
        continue;
      }
      fail(std::string("write_all: ") + std::strerror(errno));
    }
    off += static_cast<std::size_t>(n);
  }
}

std::vector<std::byte> read_exact(int fd, std::size_t n, int timeout_ms) {
  std::vector<std::byte> out(n);
  std::size_t off = 0;
  while (off < n) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) != 1) {
      fail("read_exact: no data for " + std::to_string(timeout_ms) + " ms at " +
           std::to_string(off) + "/" + std::to_string(n));
    }
    ssize_t r = ::recv(fd, out.data() + off, n - off, MSG_DONTWAIT);
    if (r == 0) {
      fail("read_exact: EOF at " + std::to_string(off) + "/" + std::to_string(n));
    }
    if (r < 0) {
      if (errno == EAGAIN) {
        continue;
      }
      fail(std::string("read_exact: ") + std::strerror(errno) + " at " + std::to_string(off));
    }
    off += static_cast<std::size_t>(r);
  }
  return out;
}

void expect_eof(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) {
    fail("expect_eof: nothing within timeout");
  }
  char c = 0;
  ssize_t r = ::recv(fd, &c, 1, MSG_DONTWAIT);
  if (r != 0) {
    fail("expect_eof: got " + std::to_string(r) + (r < 0 ? std::string(" ") + std::strerror(errno) : ""));
  }
}

int send_queue(int fd) {
  int n = 0;
  (void)::ioctl(fd, SIOCOUTQ, &n);
  return n;
}

int in_flight(int fd) {
  int unsent = 0;
  (void)::ioctl(fd, SIOCOUTQNSD, &unsent);
  return send_queue(fd) - unsent;
}

int inq(int fd) {
  int n = 0;
  (void)::ioctl(fd, SIOCINQ, &n);
  return n;
}

std::uint32_t total_retrans(int fd) {
  tcp_info ti{};
  socklen_t len = sizeof ti;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) {
    return 0;
  }
  return ti.tcpi_total_retrans;
}

void wait_inq(int fd, int n, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int have = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    ::ioctl(fd, FIONREAD, &have);
    if (have >= n) {
      return;
    }
    ::poll(nullptr, 0, 2);
  }
  fail("wait_inq: " + std::to_string(have) + " of " + std::to_string(n) + " bytes arrived");
}

std::size_t write_until_full(int fd, const Pattern& p, std::uint64_t offset) {
  std::vector<std::byte> buf(64 * 1024);
  std::size_t total = 0;
  for (int rounds = 0; rounds < 100000; ++rounds) {
    p.fill(offset + total, buf);
    ssize_t n = ::send(fd, buf.data(), buf.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN) {
        return total;
      }
      fail(std::string("write_until_full: ") + std::strerror(errno));
    }
    total += static_cast<std::size_t>(n);
  }
  fail("write_until_full: socket never filled");
}

FourTuple tuple_of(int fd) {
  auto t = FourTuple::of_socket(fd);
  if (!t) {
    throw std::runtime_error("tuple_of: " + t.error().message());
  }
  return *t;
}

std::vector<std::byte> pattern_bytes(const Pattern& p, std::uint64_t offset, std::size_t n) {
  std::vector<std::byte> v(n);
  p.fill(offset, v);
  return v;
}

}  // namespace rendr::test
