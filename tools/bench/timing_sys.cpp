// SPDX-License-Identifier: Apache-2.0
#include "timing_sys.hpp"

#include "stats.hpp"

#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>

#include <cerrno>

namespace rendr::bench {
namespace {

std::string level_name(int level) {
  switch (level) {
    case SOL_SOCKET: return "SOL_SOCKET";
    case IPPROTO_TCP: return "TCP";
    case IPPROTO_IP: return "IP";
    case IPPROTO_IPV6: return "IPV6";
    default: return std::to_string(level);
  }
}

std::string opt_name(int level, int name) {
  if (level == IPPROTO_TCP) {
    switch (name) {
      case TCP_NODELAY: return "TCP_NODELAY";
      case TCP_MAXSEG: return "TCP_MAXSEG";
      case TCP_CORK: return "TCP_CORK";
      case TCP_KEEPIDLE: return "TCP_KEEPIDLE";
      case TCP_KEEPINTVL: return "TCP_KEEPINTVL";
      case TCP_KEEPCNT: return "TCP_KEEPCNT";
      case TCP_INFO: return "TCP_INFO";
      case TCP_CONGESTION: return "TCP_CONGESTION";
      case TCP_USER_TIMEOUT: return "TCP_USER_TIMEOUT";
      case TCP_REPAIR: return "TCP_REPAIR";
      case TCP_REPAIR_QUEUE: return "TCP_REPAIR_QUEUE";
      case TCP_QUEUE_SEQ: return "TCP_QUEUE_SEQ";
      case TCP_REPAIR_OPTIONS: return "TCP_REPAIR_OPTIONS";
      case TCP_TIMESTAMP: return "TCP_TIMESTAMP";
      case TCP_NOTSENT_LOWAT: return "TCP_NOTSENT_LOWAT";
      case TCP_REPAIR_WINDOW: return "TCP_REPAIR_WINDOW";
      default: break;
    }
  } else if (level == SOL_SOCKET) {
    switch (name) {
      case SO_TYPE: return "SO_TYPE";
      case SO_PROTOCOL: return "SO_PROTOCOL";
      case SO_KEEPALIVE: return "SO_KEEPALIVE";
      case SO_SNDBUF: return "SO_SNDBUF";
      case SO_RCVBUF: return "SO_RCVBUF";
      case SO_SNDBUFFORCE: return "SO_SNDBUFFORCE";
      case SO_RCVBUFFORCE: return "SO_RCVBUFFORCE";
      case SO_MARK: return "SO_MARK";
      case SO_LINGER: return "SO_LINGER";
#ifdef SO_NETNS_COOKIE
      case SO_NETNS_COOKIE: return "SO_NETNS_COOKIE";
#endif
      default: break;
    }
  } else if (level == IPPROTO_IP) {
    switch (name) {
      case IP_TOS: return "IP_TOS";
      case IP_TTL: return "IP_TTL";
      case IP_FREEBIND: return "IP_FREEBIND";
      case IP_TRANSPARENT: return "IP_TRANSPARENT";
      default: break;
    }
  }
  return level_name(level) + "/" + std::to_string(name);
}

std::string ioctl_name(unsigned long req) {
  switch (req) {
    case SIOCINQ: return "SIOCINQ";
    case SIOCOUTQ: return "SIOCOUTQ";
    case SIOCOUTQNSD: return "SIOCOUTQNSD";
    default: return std::to_string(req);
  }
}

}  // namespace

template <typename F>
auto TimingSys::timed(const char* call, std::string detail, F&& f) {
  if (!enabled_) {
    return f();
  }
  const std::uint64_t t0 = now_ns();
  auto r = f();
  const std::uint64_t t1 = now_ns();
  const int saved = errno;
  auto& s = table_[{call, std::move(detail)}];
  ++s.calls;
  s.ns += t1 - t0;
  errno = saved;
  return r;
}

int TimingSys::socket(int d, int t, int p) {
  return timed("socket", (t & SOCK_RAW) == SOCK_RAW ? "raw" : "stream",
               [&] { return inner_.socket(d, t, p); });
}
int TimingSys::close(int fd) {
  return timed("close", "", [&] { return inner_.close(fd); });
}
int TimingSys::setsockopt(int fd, int l, int n, const void* v, socklen_t len) {
  std::string detail = opt_name(l, n);
  if (l == IPPROTO_TCP && (n == TCP_REPAIR || n == TCP_REPAIR_QUEUE) && len == sizeof(int)) {
    detail += "=" + std::to_string(*static_cast<const int*>(v));
  }
  return timed("setsockopt", std::move(detail), [&] { return inner_.setsockopt(fd, l, n, v, len); });
}
int TimingSys::getsockopt(int fd, int l, int n, void* v, socklen_t* len) {
  return timed("getsockopt", opt_name(l, n), [&] { return inner_.getsockopt(fd, l, n, v, len); });
}
int TimingSys::ioctl_int(int fd, unsigned long req, int* out) {
  return timed("ioctl", ioctl_name(req), [&] { return inner_.ioctl_int(fd, req, out); });
}
ssize_t TimingSys::recv(int fd, void* b, std::size_t n, int f) {
  return timed("recv", (f & MSG_PEEK) != 0 ? "peek" : "", [&] { return inner_.recv(fd, b, n, f); });
}
ssize_t TimingSys::send(int fd, const void* b, std::size_t n, int f) {
  return timed("send", "", [&] { return inner_.send(fd, b, n, f); });
}
ssize_t TimingSys::sendto(int fd, const void* b, std::size_t n, int f, const sockaddr* to,
                          socklen_t tl) {
  return timed("sendto", "raw inject", [&] { return inner_.sendto(fd, b, n, f, to, tl); });
}
int TimingSys::bind(int fd, const sockaddr* a, socklen_t l) {
  return timed("bind", "", [&] { return inner_.bind(fd, a, l); });
}
int TimingSys::connect(int fd, const sockaddr* a, socklen_t l) {
  return timed("connect", "", [&] { return inner_.connect(fd, a, l); });
}
int TimingSys::shutdown(int fd, int how) {
  return timed("shutdown", "", [&] { return inner_.shutdown(fd, how); });
}
int TimingSys::getsockname(int fd, sockaddr* a, socklen_t* l) {
  return timed("getsockname", "", [&] { return inner_.getsockname(fd, a, l); });
}
int TimingSys::getpeername(int fd, sockaddr* a, socklen_t* l) {
  return timed("getpeername", "", [&] { return inner_.getpeername(fd, a, l); });
}
int TimingSys::get_fl(int fd) {
  return timed("fcntl", "F_GETFL", [&] { return inner_.get_fl(fd); });
}
int TimingSys::set_fl(int fd, int flags) {
  return timed("fcntl", "F_SETFL", [&] { return inner_.set_fl(fd, flags); });
}

}  // namespace rendr::bench
