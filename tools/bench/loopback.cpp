// SPDX-License-Identifier: Apache-2.0
#include "loopback.hpp"

#include "stats.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace rendr::bench {
namespace {

Status set_int(int fd, int level, int name, int v, const char* what) {
  if (::setsockopt(fd, level, name, &v, sizeof v) != 0) {
    return errno_error(what);
  }
  return {};
}

sockaddr_in loopback_addr(std::uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sa;
}

// wait_for polls |fd| for |events| until |deadline_ns|; ETIMEDOUT when it passes.
Status wait_for(int fd, short events, std::uint64_t deadline_ns) {
  for (;;) {
    const std::uint64_t now = now_ns();
    if (now >= deadline_ns) {
      return make_error(std::errc::timed_out, "no progress before the deadline");
    }
    pollfd p{fd, events, 0};
    int ms = static_cast<int>((deadline_ns - now) / 1'000'000ULL) + 1;
    int rc = ::poll(&p, 1, ms);
    if (rc > 0) {
      return {};
    }
    if (rc < 0 && errno != EINTR) {
      return errno_error("poll");
    }
  }
}

Result<int> ioctl_int(int fd, unsigned long req, const char* what) {
  int v = 0;
  if (::ioctl(fd, req, &v) != 0) {
    return errno_error(what);
  }
  return v;
}

}  // namespace

Status enter_private_netns() {
  if (::unshare(CLONE_NEWNET) != 0) {
    int err = errno;
    return errno_error(err == EPERM ? "unshare(CLONE_NEWNET): creating a private network "
                                      "namespace needs CAP_SYS_ADMIN; run as root"
                                    : "unshare(CLONE_NEWNET)",
                       err);
  }
  auto s = UniqueFd::socket(AF_INET, SOCK_DGRAM, 0);
  if (!s) {
    return std::move(s).take_error().with_context("bring lo up");
  }
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(s->get(), SIOCGIFFLAGS, &ifr) != 0) {
    return errno_error("bring lo up: SIOCGIFFLAGS");
  }
  ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
  if (::ioctl(s->get(), SIOCSIFFLAGS, &ifr) != 0) {
    return errno_error("bring lo up: SIOCSIFFLAGS");
  }
  return {};
}

void raise_nofile_to_hard() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

Status raise_nofile(std::uint64_t want) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    return errno_error("getrlimit(RLIMIT_NOFILE)");
  }
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur >= want) {
    return {};
  }
  rlimit next = rl;
  next.rlim_cur = want;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
    next.rlim_max = want;
  }
  if (::setrlimit(RLIMIT_NOFILE, &next) != 0) {
    int err = errno;
    return errno_error("setrlimit(RLIMIT_NOFILE, " + std::to_string(want) + ")" +
                           (err == EPERM ? ": raising the hard limit needs CAP_SYS_RESOURCE" : ""),
                       err);
  }
  return {};
}

Result<UniqueFd> listen_loopback(const ListenOptions& o) {
  auto fd = UniqueFd::socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  if (!fd) {
    return std::move(fd).take_error().with_context("listen socket");
  }
  RENDR_TRY(set_int(fd->get(), SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR"));
  if (o.rcvbuf_force > 0) {
    RENDR_TRY(set_int(fd->get(), SOL_SOCKET, SO_RCVBUFFORCE, o.rcvbuf_force, "SO_RCVBUFFORCE"));
  }
  if (o.sndbuf_force > 0) {
    RENDR_TRY(set_int(fd->get(), SOL_SOCKET, SO_SNDBUFFORCE, o.sndbuf_force, "SO_SNDBUFFORCE"));
  }
  sockaddr_in sa = loopback_addr(o.port);
  if (::bind(fd->get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    return errno_error("bind 127.0.0.1:" + std::to_string(o.port));
  }
  if (::listen(fd->get(), o.backlog) != 0) {
    return errno_error("listen");
  }
  return std::move(*fd);
}

Result<std::uint16_t> local_port(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
    return errno_error("getsockname");
  }
  return ntohs(sa.sin_port);
}

Result<UniqueFd> connect_loopback(std::uint16_t port, const ConnectOptions& o) {
  auto fd = UniqueFd::socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  if (!fd) {
    return std::move(fd).take_error().with_context("client socket");
  }
  if (o.rcvbuf > 0) {
    RENDR_TRY(set_int(fd->get(), SOL_SOCKET, SO_RCVBUF, o.rcvbuf, "SO_RCVBUF"));
  }
  if (o.nodelay) {
    RENDR_TRY(set_int(fd->get(), IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY"));
  }
  sockaddr_in sa = loopback_addr(port);
  // Loopback handshakes complete inside connect(); no timeout handling needed.
  if (::connect(fd->get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    return errno_error("connect 127.0.0.1:" + std::to_string(port));
  }
  return std::move(*fd);
}

Result<UniqueFd> accept_one(int listener, int timeout_ms) {
  RENDR_TRY_CTX(wait_for(listener, POLLIN, now_ns() + static_cast<std::uint64_t>(timeout_ms) *
                                                         1'000'000ULL),
                "accept");
  int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) {
    return errno_error("accept");
  }
  UniqueFd owned(fd);
  RENDR_TRY(set_int(fd, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY"));
  return owned;
}

Status write_exact(int fd, std::span<const std::byte> data, int timeout_ms) {
  const auto budget = static_cast<std::uint64_t>(timeout_ms) * 1'000'000ULL;
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      return errno_error("send (" + std::to_string(data.size() - off) + " bytes left)");
    }
    RENDR_TRY_CTX(wait_for(fd, POLLOUT, now_ns() + budget),
                  "send (" + std::to_string(data.size() - off) + " bytes left)");
  }
  return {};
}

Status read_exact(int fd, std::span<std::byte> data, int timeout_ms) {
  const auto budget = static_cast<std::uint64_t>(timeout_ms) * 1'000'000ULL;
  std::size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::recv(fd, data.data() + off, data.size() - off, MSG_DONTWAIT);
    if (n > 0) {
      off += static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) {
      return make_error(std::errc::connection_reset,
                        "recv: EOF with " + std::to_string(data.size() - off) + " bytes missing");
    }
    if (errno != EAGAIN && errno != EINTR) {
      return errno_error("recv (" + std::to_string(data.size() - off) + " bytes missing)");
    }
    RENDR_TRY_CTX(wait_for(fd, POLLIN, now_ns() + budget),
                  "recv (" + std::to_string(data.size() - off) + " bytes missing)");
  }
  return {};
}

Status ping_pong(int a, int b, std::uint8_t tag, int timeout_ms) {
  std::byte out{tag};
  std::byte in{};
  RENDR_TRY_CTX(write_exact(a, {&out, 1}, timeout_ms), "ping");
  RENDR_TRY_CTX(read_exact(b, {&in, 1}, timeout_ms), "ping");
  if (in != out) {
    return make_error(std::errc::io_error, "ping: wrong byte arrived");
  }
  out = std::byte{static_cast<std::uint8_t>(~tag)};
  RENDR_TRY_CTX(write_exact(b, {&out, 1}, timeout_ms), "pong");
  RENDR_TRY_CTX(read_exact(a, {&in, 1}, timeout_ms), "pong");
  if (in != out) {
    return make_error(std::errc::io_error, "pong: wrong byte arrived");
  }
  for (int fd : {a, b}) {
    auto q = inq(fd);
    if (!q) {
      return std::move(q).take_error();
    }
    if (*q != 0) {
      return make_error(std::errc::io_error,
                        "ping-pong: " + std::to_string(*q) + " unexpected bytes queued");
    }
  }
  return {};
}

Result<int> inq(int fd) { return ioctl_int(fd, SIOCINQ, "SIOCINQ"); }
Result<int> outq(int fd) { return ioctl_int(fd, SIOCOUTQ, "SIOCOUTQ"); }

}  // namespace rendr::bench
