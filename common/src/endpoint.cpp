// SPDX-License-Identifier: Apache-2.0
#include <rendr/common/endpoint.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <charconv>
#include <cstring>

namespace rendr {

std::string Endpoint::address_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(af(), addr.data(), buf, sizeof buf);
  return buf;
}

std::string Endpoint::to_string() const {
  if (family == IpFamily::v4) {
    return address_string() + ":" + std::to_string(port);
  }
  std::string s = "[" + address_string();
  if (scope_id != 0) {
    s += "%" + std::to_string(scope_id);
  }
  return s + "]:" + std::to_string(port);
}

socklen_t Endpoint::to_sockaddr(sockaddr_storage& ss) const {
  std::memset(&ss, 0, sizeof ss);
  if (family == IpFamily::v4) {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    std::memcpy(&sin.sin_addr, addr.data(), 4);
    std::memcpy(&ss, &sin, sizeof sin);
    return sizeof sin;
  }
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(port);
  sin6.sin6_scope_id = scope_id;
  std::memcpy(&sin6.sin6_addr, addr.data(), 16);
  std::memcpy(&ss, &sin6, sizeof sin6);
  return sizeof sin6;
}

Result<Endpoint> Endpoint::from_sockaddr(const sockaddr* sa, socklen_t len) {
  Endpoint e;
  if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    sockaddr_in sin{};
    std::memcpy(&sin, sa, sizeof sin);
    e.family = IpFamily::v4;
    std::memcpy(e.addr.data(), &sin.sin_addr, 4);
    e.port = ntohs(sin.sin_port);
    return e;
  }
  if (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    sockaddr_in6 sin6{};
    std::memcpy(&sin6, sa, sizeof sin6);
    e.family = IpFamily::v6;
    std::memcpy(e.addr.data(), &sin6.sin6_addr, 16);
    e.port = ntohs(sin6.sin6_port);
    e.scope_id = sin6.sin6_scope_id;
    return e;
  }
  return make_error(std::errc::address_family_not_supported,
                    "endpoint: socket address family " + std::to_string(sa->sa_family) +
                        " is neither AF_INET nor AF_INET6");
}

Result<Endpoint> Endpoint::parse_address(std::string_view text, std::uint16_t port) {
  Endpoint e;
  e.port = port;
  std::string s(text);
  auto pct = s.find('%');
  if (pct != std::string::npos) {
    std::string scope = s.substr(pct + 1);
    s.resize(pct);
    auto [p, ec] = std::from_chars(scope.data(), scope.data() + scope.size(), e.scope_id);
    if (ec != std::errc() || p != scope.data() + scope.size()) {
      return make_error(std::errc::invalid_argument,
                        "endpoint: scope id '" + scope + "' is not a number");
    }
  }
  if (::inet_pton(AF_INET, s.c_str(), e.addr.data()) == 1 && pct == std::string::npos) {
    e.family = IpFamily::v4;
    return e;
  }
  if (::inet_pton(AF_INET6, s.c_str(), e.addr.data()) == 1) {
    e.family = IpFamily::v6;
    return e;
  }
  return make_error(std::errc::invalid_argument,
                    "endpoint: '" + std::string(text) + "' is not an IPv4 or IPv6 address");
}

Result<Endpoint> Endpoint::parse(std::string_view text) {
  std::string_view host;
  std::string_view port_s;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return make_error(std::errc::invalid_argument,
                        "endpoint: '" + std::string(text) + "' must look like [addr]:port");
    }
    host = text.substr(1, close - 1);
    port_s = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) {
      return make_error(std::errc::invalid_argument,
                        "endpoint: '" + std::string(text) +
                            "' must look like a.b.c.d:port or [v6addr]:port");
    }
    host = text.substr(0, colon);
    port_s = text.substr(colon + 1);
  }
  unsigned port = 0;
  auto [p, ec] = std::from_chars(port_s.data(), port_s.data() + port_s.size(), port);
  if (ec != std::errc() || p != port_s.data() + port_s.size() || port > 65535 || port_s.empty()) {
    return make_error(std::errc::invalid_argument,
                      "endpoint: port '" + std::string(port_s) + "' is not in 0..65535");
  }
  return parse_address(host, static_cast<std::uint16_t>(port));
}

Result<FourTuple> FourTuple::parse(std::string_view text) {
  std::size_t sep = text.find("->");
  std::size_t skip = 2;
  if (sep == std::string_view::npos) {
    sep = text.find_first_of(", ");
    skip = 1;
  }
  if (sep == std::string_view::npos) {
    return make_error(std::errc::invalid_argument,
                      "4-tuple '" + std::string(text) +
                          "': expected LOCAL->REMOTE, e.g. 10.99.0.1:80->10.0.1.2:41000");
  }
  auto l = Endpoint::parse(text.substr(0, sep));
  if (!l) {
    return std::move(l).take_error().with_context("4-tuple local side");
  }
  auto r = Endpoint::parse(text.substr(sep + skip));
  if (!r) {
    return std::move(r).take_error().with_context("4-tuple remote side");
  }
  if (l->family != r->family) {
    return make_error(std::errc::invalid_argument,
                      "4-tuple '" + std::string(text) + "' mixes IPv4 and IPv6");
  }
  return FourTuple{*l, *r};
}

Result<FourTuple> FourTuple::of_socket(int fd) {
  sockaddr_storage l{};
  sockaddr_storage r{};
  socklen_t ll = sizeof l;
  socklen_t rl = sizeof r;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&l), &ll) != 0) {
    return errno_error("getsockname");
  }
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&r), &rl) != 0) {
    return errno_error("getpeername (is the socket connected?)");
  }
  auto le = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&l), ll);
  auto re = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&r), rl);
  if (!le || !re) {
    return make_error(std::errc::address_family_not_supported, "not an IP socket");
  }
  return FourTuple{*le, *re};
}

}  // namespace rendr
