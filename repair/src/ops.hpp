// SPDX-License-Identifier: Apache-2.0
// Private: the syscall helpers checkpoint (repair.cpp) and restore (restore.cpp) share - one socket's
// options, queues and names through the Sys seam, with errors that name the step.
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>
#include <rendr/repair/sys.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

namespace rendr::repair::detail {

inline constexpr const char* kCapHint =
    "TCP_REPAIR needs CAP_NET_ADMIN in the socket's network namespace and this process lacks it; "
    "run as root or grant CAP_NET_ADMIN (`rendrctl status` shows what this host can do)";

inline Error sys_error(const std::string& step, int err = errno) {
  if (err == EPERM) {
    return errno_error(step + ": " + kCapHint, err);
  }
  return errno_error(step, err);
}

// unreadable: a read that failed, as an EIO refusal naming |what| and the first failure of
// |reads| (Results).
template <typename... R>
Error unreadable(const std::string& what, const R&... reads) {
  std::string why;
  ((why.empty() && !reads.ok() ? why = reads.error().message() : why), ...);
  return make_error(std::errc::io_error, what + " (" + why + ")");
}

class Ops {
 public:
  Ops(Sys& sys, int fd) : sys_(sys), fd_(fd) {}

  Status set(int level, int name, int v, const char* what) {
    if (sys_.setsockopt(fd_, level, name, &v, sizeof v) != 0) {
      return sys_error(what);
    }
    return {};
  }
  Result<int> get(int level, int name, const char* what) {
    int v = 0;
    socklen_t len = sizeof v;
    if (sys_.getsockopt(fd_, level, name, &v, &len) != 0) {
      return sys_error(what);
    }
    return v;
  }
  Result<int> ioctl(unsigned long req, const char* what) {
    int v = 0;
    if (sys_.ioctl_int(fd_, req, &v) != 0) {
      return sys_error(what);
    }
    return v;
  }
  // select_queue sets TCP_REPAIR_QUEUE, skipping the syscall when |q| is already selected
  // through this Ops (the option is a plain assignment in the kernel, so a repeat is a no-op).
  Status select_queue(int q) {
    if (q == queue_) {
      return {};
    }
    auto st = set(IPPROTO_TCP, TCP_REPAIR_QUEUE, q, "TCP_REPAIR_QUEUE");
    queue_ = st.ok() ? q : -1;
    return st;
  }
  [[nodiscard]] int selected_queue() const { return queue_; }
  Result<std::uint32_t> queue_seq(int q) {
    RENDR_TRY(select_queue(q));
    auto v = get(IPPROTO_TCP, TCP_QUEUE_SEQ, "get TCP_QUEUE_SEQ");
    if (!v) {
      return std::move(v).take_error();
    }
    return static_cast<std::uint32_t>(*v);
  }
  Result<tcp_info> info() {
    tcp_info ti{};
    socklen_t len = sizeof ti;
    if (sys_.getsockopt(fd_, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) {
      return sys_error("TCP_INFO");
    }
    return ti;
  }
  Result<Endpoint> name(bool peer) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    auto* sa = reinterpret_cast<sockaddr*>(&ss);
    int rc = peer ? sys_.getpeername(fd_, sa, &len) : sys_.getsockname(fd_, sa, &len);
    if (rc != 0) {
      return sys_error(peer ? "getpeername (is the socket connected?)" : "getsockname");
    }
    return Endpoint::from_sockaddr(sa, len);
  }
  // peek reads up to |max| bytes of the selected queue without consuming them.
  Result<std::vector<std::byte>> peek(std::size_t max) {
    if (max == 1) {
      // The common idle case (queue reported empty, peeking one byte to prove it): no heap
      // buffer unless that byte exists.
      std::byte b{};
      ssize_t n = sys_.recv(fd_, &b, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n < 0 && errno != EAGAIN) {
        return sys_error("peek queue");
      }
      return n > 0 ? std::vector<std::byte>{b} : std::vector<std::byte>{};
    }
    std::vector<std::byte> buf(max);
    if (max == 0) {
      return buf;
    }
    ssize_t n = sys_.recv(fd_, buf.data(), max, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN) {
        n = 0;
      } else {
        return sys_error("peek queue");
      }
    }
    buf.resize(static_cast<std::size_t>(n));
    return buf;
  }
  // write_queue feeds |data| into the selected queue in repair mode, halving the chunk on
  // memory pressure (the kernel allocates one linear skb per call).
  Status write_queue(std::span<const std::byte> data, const char* what) {
    std::size_t chunk = 1U << 20;
    std::size_t off = 0;
    while (off < data.size()) {
      std::size_t n = std::min(chunk, data.size() - off);
      ssize_t w = sys_.send(fd_, data.data() + off, n, MSG_DONTWAIT);
      if (w < 0) {
        if ((errno == ENOMEM || errno == ENOBUFS || errno == EAGAIN) && chunk > 1024) {
          chunk /= 2;
          continue;
        }
        return sys_error(what);
      }
      off += static_cast<std::size_t>(w);
    }
    return {};
  }

  Sys& sys_;
  int fd_;
  int queue_ = -1;  // TCP_REPAIR_QUEUE last set through this Ops; -1 = unknown
};

inline std::uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

inline void pause_us(long us) {
  timespec ts{0, us * 1000};
  nanosleep(&ts, nullptr);
}

// unmap_v4 maps IPv4-mapped IPv6 tuples to plain IPv4 for raw injection.
inline void unmap_v4(Endpoint& e) {
  static constexpr std::uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  if (e.family == IpFamily::v6 && std::memcmp(e.addr.data(), kPrefix, 12) == 0) {
    std::array<std::uint8_t, 16> a{};
    std::memcpy(a.data(), e.addr.data() + 12, 4);
    e.addr = a;
    e.family = IpFamily::v4;
  }
}

}  // namespace rendr::repair::detail

namespace rendr::repair {

// OptionDefaults: the socket options a fresh TCP socket reports in one netns (several follow
// per-netns sysctls: tcp_keepalive_*, ip_default_ttl, tcp_congestion_control). Restore sets an
// option only where the saved value differs, since setting the default again changes nothing.
struct OptionDefaults {
  std::uint64_t netns = 0;  // SO_NETNS_COOKIE
  bool v6 = false;
  std::uint32_t keepidle = 0;
  std::uint32_t keepintvl = 0;
  std::uint32_t keepcnt = 0;
  std::uint32_t ttl = 0;  // IP_TTL or IPV6_UNICAST_HOPS
  std::string congestion;
};

}  // namespace rendr::repair
