// SPDX-License-Identifier: Apache-2.0
// What the built-in carriers share (docs/wire.md "Carrier framing"): the StreamCarrier
// defaults, socket addresses for stats, address parsing and the bounded non-blocking connect.
#include "carriers.hpp"

#include <rendr/common/endpoint.hpp>
#include <rendr/common/unique_fd.hpp>

#include <asio/read.hpp>
#include <asio/write.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace rendr {

void StreamCarrier::async_write_gather(std::span<const std::span<const std::byte>> pieces,
                                       IoHandler handler) {
  auto buf = std::make_shared<std::vector<std::byte>>();
  for (const auto& p : pieces) {
    buf->insert(buf->end(), p.begin(), p.end());
  }
  async_write(*buf, [buf, h = std::move(handler)](std::error_code ec, std::size_t n) { h(ec, n); });
}

namespace detail {

std::string fd_local(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return {};
  }
  auto e = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  return e ? e->to_string() : std::string{};
}

std::string fd_remote(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return {};
  }
  auto e = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  return e ? e->to_string() : std::string{};
}

namespace {

Result<Endpoint> parse_any(const std::string& text, std::uint16_t default_port) {
  auto e = Endpoint::parse(text);
  if (e) {
    return e;
  }
  return Endpoint::parse_address(text, default_port);
}

}  // namespace

std::string endpoint_string(const asio::ip::address& a, std::uint16_t port) {
  if (a.is_v6()) {
    return "[" + a.to_string() + "]:" + std::to_string(port);
  }
  return a.to_string() + ":" + std::to_string(port);
}

Result<asio::ip::udp::endpoint> parse_udp_endpoint(const std::string& text) {
  auto e = Endpoint::parse(text);
  if (!e) {
    return std::move(e).take_error();
  }
  sockaddr_storage ss{};
  const socklen_t len = e->to_sockaddr(ss);
  asio::ip::udp::endpoint ep;
  std::memcpy(ep.data(), &ss, len);
  return ep;
}

Result<asio::ip::tcp::endpoint> parse_tcp_endpoint(const std::string& text) {
  auto e = Endpoint::parse(text);
  if (!e) {
    return std::move(e).take_error();
  }
  sockaddr_storage ss{};
  const socklen_t len = e->to_sockaddr(ss);
  asio::ip::tcp::endpoint ep;
  std::memcpy(ep.data(), &ss, len);
  return ep;
}

// start_connect_fd: a non-blocking socket of |type| (bound to spec.local when given) whose
// connect to |spec.address| is under way (or done); |remote| is that address.
Result<UniqueFd> start_connect_fd(const PathSpec& spec, int type, Endpoint& remote_out) {
  auto remote = Endpoint::parse(spec.address);
  if (!remote) {
    return std::move(remote).take_error().with_context("path address \"" + spec.address + "\"");
  }
  remote_out = *remote;
  auto fd = UniqueFd::socket(remote->af(), type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (!fd) {
    return std::move(fd).take_error();
  }
  if (!spec.local.empty()) {
    auto local = parse_any(spec.local, 0);
    if (!local) {
      return std::move(local).take_error().with_context("path local \"" + spec.local + "\"");
    }
    sockaddr_storage ls{};
    const socklen_t llen = local->to_sockaddr(ls);
    if (::bind(fd->get(), reinterpret_cast<sockaddr*>(&ls), llen) != 0) {
      return errno_error("bind " + local->to_string());
    }
  }
  sockaddr_storage rs{};
  const socklen_t rlen = remote->to_sockaddr(rs);
  if (::connect(fd->get(), reinterpret_cast<sockaddr*>(&rs), rlen) != 0 && errno != EINPROGRESS) {
    return errno_error("connect " + remote->to_string());
  }
  return fd;
}

Status connect_result(int fd, const Endpoint& remote) {
  int err = 0;
  socklen_t elen = sizeof err;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) {
    return errno_error("getsockopt SO_ERROR");
  }
  if (err != 0) {
    return errno_error("connect " + remote.to_string(), err);
  }
  return {};
}

Result<UniqueFd> connect_fd(const PathSpec& spec, int type, Deadline deadline) {
  Endpoint remote;
  auto fd = start_connect_fd(spec, type, remote);
  if (!fd) {
    return fd;
  }
  for (;;) {  // writable = connected or failed (an immediate connect is writable at once)
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      return make_error(std::errc::timed_out, "connect " + remote.to_string());
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    pollfd p{fd->get(), POLLOUT, 0};
    const int rc = ::poll(&p, 1, static_cast<int>(std::min<long long>(left + 1, 1000)));
    if (rc < 0 && errno != EINTR) {
      return errno_error("poll connect");
    }
    if (rc > 0) {
      break;
    }
  }
  if (auto st = connect_result(fd->get(), remote); !st) {
    return std::move(st).take_error();
  }
  return fd;
}

}  // namespace detail

}  // namespace rendr
