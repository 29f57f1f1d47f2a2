// SPDX-License-Identifier: Apache-2.0
// Endpoint — an IPv4 or IPv6 address plus port (and IPv6 scope id), as a plain value. Used for
// the 4-tuple of a connection in snapshots, BPF map keys and CLI input. Conversions to and from
// sockaddr live here so no module hand-rolls them. Pure, no I/O.
#pragma once

#include <rendr/common/result.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include <sys/socket.h>

namespace rendr {

enum class IpFamily : std::uint8_t { v4 = 4, v6 = 6 };

struct Endpoint {
  IpFamily family = IpFamily::v4;
  // Address in network byte order; IPv4 uses the first 4 bytes, the rest stay zero.
  std::array<std::uint8_t, 16> addr{};
  std::uint16_t port = 0;  // host byte order
  std::uint32_t scope_id = 0;  // IPv6 link-local interface index, else 0

  friend bool operator==(const Endpoint&, const Endpoint&) = default;

  [[nodiscard]] int af() const { return family == IpFamily::v4 ? AF_INET : AF_INET6; }
  // to_string renders "10.0.0.1:443" or "[fd00::1]:443" (with "%<scope>" when scoped).
  [[nodiscard]] std::string to_string() const;
  [[nodiscard]] std::string address_string() const;
  // to_sockaddr fills |ss| and returns the length to pass to bind/connect.
  [[nodiscard]] socklen_t to_sockaddr(sockaddr_storage& ss) const;

  // from_sockaddr converts AF_INET/AF_INET6 addresses; an IPv4-mapped IPv6 address stays IPv6.
  [[nodiscard]] static Result<Endpoint> from_sockaddr(const sockaddr* sa, socklen_t len);
  // parse accepts "a.b.c.d:port", "[v6]:port" and "[v6%scope]:port" (numeric scope only).
  [[nodiscard]] static Result<Endpoint> parse(std::string_view text);
  // parse_address accepts a bare address ("10.0.0.1", "fd00::1") with |port|.
  [[nodiscard]] static Result<Endpoint> parse_address(std::string_view text, std::uint16_t port);
};

// FourTuple: local and remote endpoint of one TCP connection, as seen from the socket owner.
struct FourTuple {
  Endpoint local;
  Endpoint remote;
  friend bool operator==(const FourTuple&, const FourTuple&) = default;
  [[nodiscard]] std::string to_string() const { return local.to_string() + "->" + remote.to_string(); }
  // of_socket reads a connected socket's tuple as its owner sees it (getsockname/getpeername).
  // Errors: the errno of either call (ENOTCONN, ENOTSOCK, ...), EAFNOSUPPORT for a non-IP socket.
  [[nodiscard]] static Result<FourTuple> of_socket(int fd);
  // parse accepts to_string()'s form "local->remote" (also with ',' or ' ' as separator).
  [[nodiscard]] static Result<FourTuple> parse(std::string_view text);
};

}  // namespace rendr
