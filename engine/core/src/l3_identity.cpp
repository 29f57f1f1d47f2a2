// SPDX-License-Identifier: Apache-2.0
// The L3 identity value (rendr/engine/types.hpp) and its 40-byte wire record (wire.hpp,
// docs/wire.md "L3 identity"): building one from address strings, checking it, and the strict
// record codec (a record decodes only when it re-encodes to exactly its bytes).
#include <rendr/engine/errors.hpp>
#include <rendr/engine/types.hpp>

#include <rendr/engine/core/wire.hpp>

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <string>

namespace rendr::engine {
namespace {

constexpr std::uint8_t kProtoIcmp = 1;
constexpr std::uint8_t kProtoTcp = 6;
constexpr std::uint8_t kProtoUdp = 17;
constexpr std::uint8_t kProtoIcmp6 = 58;

bool v4_mapped(const std::array<std::uint8_t, 16>& a) {
  return std::all_of(a.begin(), a.begin() + 10, [](std::uint8_t b) { return b == 0; }) &&
         a[10] == 0xff && a[11] == 0xff;
}

bool zero_tail(const std::array<std::uint8_t, 16>& a) {
  return std::all_of(a.begin() + 4, a.end(), [](std::uint8_t b) { return b == 0; });
}

struct Endpoint {
  std::uint8_t family = 0;
  std::array<std::uint8_t, 16> addr{};
  std::uint16_t port = 0;
};

Result<Endpoint> parse_endpoint(std::string_view s) {
  const auto bad = [&s](const char* why) {
    return rendr::make_error(std::errc::invalid_argument,
                             "L3 identity address \"" + std::string(s) + "\": " + why);
  };
  std::string host;
  std::string_view port;
  if (!s.empty() && s.front() == '[') {
    const auto close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      return bad("expected [ipv6]:port");
    }
    host = std::string(s.substr(1, close - 1));
    port = s.substr(close + 2);
  } else {
    const auto colon = s.rfind(':');
    if (colon == std::string_view::npos || s.find(':') != colon) {
      return bad("expected ipv4:port or [ipv6]:port");
    }
    host = std::string(s.substr(0, colon));
    port = s.substr(colon + 1);
  }
  Endpoint e;
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc{} || end != port.data() + port.size() || port.empty() || value > 65535) {
    return bad("bad port");
  }
  e.port = static_cast<std::uint16_t>(value);
  if (::inet_pton(AF_INET, host.c_str(), e.addr.data()) == 1) {
    e.family = 4;
  } else if (::inet_pton(AF_INET6, host.c_str(), e.addr.data()) == 1) {
    e.family = 6;
  } else {
    return bad("not an IPv4 or IPv6 address");
  }
  return e;
}

const char* proto_name(std::uint8_t p) {
  switch (p) {
    case kProtoIcmp: return "icmp";
    case kProtoTcp: return "tcp";
    case kProtoUdp: return "udp";
    case kProtoIcmp6: return "icmpv6";
    default: return "proto?";
  }
}

std::string endpoint_string(std::uint8_t family, const std::array<std::uint8_t, 16>& a,
                            std::uint16_t port) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family == 4) {
    ::inet_ntop(AF_INET, a.data(), buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(port);
  }
  ::inet_ntop(AF_INET6, a.data(), buf, sizeof buf);
  return "[" + std::string(buf) + "]:" + std::to_string(port);
}

// The reasons a value cannot be carried; empty = fine.
std::string l3_problem(const L3Identity& id) {
  if (id.family != 4 && id.family != 6) {
    return "family " + std::to_string(id.family) + " (4 or 6)";
  }
  switch (id.proto) {
    case kProtoTcp:
    case kProtoUdp: break;
    case kProtoIcmp:
      if (id.family != 4) {
        return "protocol 1 (ICMP) with family 6";
      }
      break;
    case kProtoIcmp6:
      if (id.family != 6) {
        return "protocol 58 (ICMPv6) with family 4";
      }
      break;
    default: return "protocol " + std::to_string(id.proto) + " (1, 6, 17 or 58)";
  }
  if (id.family == 4 && (!zero_tail(id.src) || !zero_tail(id.dst))) {
    return "IPv4 address with nonzero bytes after the first 4";
  }
  if (id.family == 6 && (v4_mapped(id.src) || v4_mapped(id.dst))) {
    return "IPv4-mapped IPv6 address (use family 4)";
  }
  return {};
}

}  // namespace

Status check_l3_identity(const L3Identity& id) {
  if (auto why = l3_problem(id); !why.empty()) {
    return rendr::make_error(std::errc::invalid_argument, "L3 identity: " + why);
  }
  return {};
}

Result<L3Identity> make_l3_identity(std::uint8_t proto, std::string_view src,
                                    std::string_view dst) {
  auto s = parse_endpoint(src);
  if (!s) {
    return std::move(s).take_error();
  }
  auto d = parse_endpoint(dst);
  if (!d) {
    return std::move(d).take_error();
  }
  if (s->family != d->family) {
    return rendr::make_error(std::errc::invalid_argument,
                             "L3 identity: source and destination of different families");
  }
  L3Identity id;
  id.proto = proto;
  id.family = s->family;
  id.src = s->addr;
  id.src_port = s->port;
  id.dst = d->addr;
  id.dst_port = d->port;
  RENDR_TRY(check_l3_identity(id));
  return id;
}

std::string to_string(const L3Identity& id) {
  return std::string(proto_name(id.proto)) + " " + endpoint_string(id.family, id.src, id.src_port) +
         " -> " + endpoint_string(id.family, id.dst, id.dst_port);
}

Result<L3Record> encode_l3_identity(const L3Identity& id) {
  if (auto why = l3_problem(id); !why.empty()) {
    return make_error(errc::bad_l3_identity, "encode: " + why);
  }
  L3Record r{};
  const auto put = [&r](std::size_t at, std::uint8_t v) { r[at] = static_cast<std::byte>(v); };
  put(0, kL3RecordVersion);
  put(1, id.proto);
  put(2, id.family);
  put(3, 0);
  put(4, static_cast<std::uint8_t>(id.src_port >> 8));
  put(5, static_cast<std::uint8_t>(id.src_port));
  put(6, static_cast<std::uint8_t>(id.dst_port >> 8));
  put(7, static_cast<std::uint8_t>(id.dst_port));
  for (std::size_t i = 0; i < 16; ++i) {
    put(8 + i, id.src[i]);
    put(24 + i, id.dst[i]);
  }
  return r;
}

Result<L3Identity> decode_l3_identity(std::span<const std::byte> record) {
  const auto bad = [](const std::string& why) {
    return make_error(errc::bad_l3_identity, "L3 identity record: " + why);
  };
  if (record.size() != kL3RecordSize) {
    return bad(std::to_string(record.size()) + " bytes, expected 40");
  }
  const auto b = [&record](std::size_t i) { return static_cast<std::uint8_t>(record[i]); };
  if (b(0) != kL3RecordVersion) {
    return bad("version " + std::to_string(b(0)) + " (this side reads 1)");
  }
  if (b(3) != 0) {
    return bad("reserved byte 3 is " + std::to_string(b(3)) + ", must be 0");
  }
  L3Identity id;
  id.proto = b(1);
  id.family = b(2);
  id.src_port = static_cast<std::uint16_t>((b(4) << 8) | b(5));
  id.dst_port = static_cast<std::uint16_t>((b(6) << 8) | b(7));
  for (std::size_t i = 0; i < 16; ++i) {
    id.src[i] = b(8 + i);
    id.dst[i] = b(24 + i);
  }
  if (auto why = l3_problem(id); !why.empty()) {
    return bad(why);
  }
  return id;
}

}  // namespace rendr::engine
