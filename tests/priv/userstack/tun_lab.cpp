// SPDX-License-Identifier: Apache-2.0
#include "tun_lab.hpp"

#include "support/require_result.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace rendr::test {

TunLab::TunLab() : ns_(Netns::create("userstack")) {
  ns_.must(std::string("ip tuntap add dev ") + kTun + " mode tun && ip link set " + kTun +
           " up && ip addr add 10.77.0.1/32 dev " + kTun + " && ip route add 198.18.0.0/24 dev " +
           kTun + " src 10.77.0.1" + " && ip -6 addr add fd77::1/128 dev " + kTun + " nodad" +
           " && ip -6 route add fd99::/64 dev " + kTun + " src fd77::1");
  scope_ = std::make_unique<NetnsScope>(ns_);
}

TunLab::~TunLab() { scope_.reset(); }

StackLab::StackLab(userstack::StackOptions options) {
  options.tun.name = kTun;
  auto s = userstack::Stack::start(options);
  REQUIRE_OK(s);
  stack_ = std::move(s).value();
}

StackLab::~StackLab() = default;

long long TunLab::resets() const {
  return snmp_counter(ns_, "Tcp", "EstabResets") + snmp_counter(ns_, "Tcp", "OutRsts");
}

EchoResult echo_client(const Endpoint& vip, std::uint64_t total, std::uint32_t seed,
                       std::chrono::seconds timeout) {
  EchoResult r;
  auto t0 = std::chrono::steady_clock::now();
  auto deadline = t0 + timeout;
  Pattern pat(seed);
  int fd = ::socket(vip.af(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    r.error = std::string("socket: ") + std::strerror(errno);
    return r;
  }
  sockaddr_storage ss{};
  socklen_t len = vip.to_sockaddr(ss);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    r.error = std::string("connect ") + vip.to_string() + ": " + std::strerror(errno);
    ::close(fd);
    return r;
  }
  ::fcntl(fd, F_SETFL, O_NONBLOCK);
  std::vector<std::byte> out(256 * 1024);
  std::vector<std::byte> in(256 * 1024);
  bool shut = false;
  while (std::chrono::steady_clock::now() < deadline) {
    bool progress = false;
    if (r.sent < total) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), total - r.sent));
      pat.fill(r.sent, std::span<std::byte>(out.data(), n));
      ssize_t w = ::send(fd, out.data(), n, MSG_NOSIGNAL);
      if (w > 0) {
        r.sent += static_cast<std::uint64_t>(w);
        progress = true;
      } else if (w < 0 && errno != EAGAIN) {
        r.reset = true;
        r.error = std::string("send: ") + std::strerror(errno);
        break;
      }
    } else if (!shut) {
      ::shutdown(fd, SHUT_WR);
      shut = true;
    }
    ssize_t n = ::recv(fd, in.data(), in.size(), 0);
    if (n > 0) {
      if (r.first_bad < 0) {
        long long m = pat.mismatch(
            r.received, std::span<const std::byte>(in.data(), static_cast<std::size_t>(n)));
        if (m >= 0) {
          r.first_bad = static_cast<long long>(r.received) + m;
        }
      }
      r.received += static_cast<std::uint64_t>(n);
      progress = true;
    } else if (n == 0) {
      r.eof = true;
      break;
    } else if (errno != EAGAIN) {
      r.reset = true;
      r.error = std::string("recv: ") + std::strerror(errno);
      break;
    }
    if (!progress) {
      pollfd pf{fd, POLLIN, 0};
      if (r.sent < total) {
        pf.events |= POLLOUT;
      }
      ::poll(&pf, 1, 100);
    }
  }
  if (!r.eof && r.error.empty()) {
    r.error = "timed out";
  }
  ::close(fd);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace rendr::test
