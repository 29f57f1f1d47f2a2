// SPDX-License-Identifier: Apache-2.0
#include <rendr/userstack/tcp_packet.hpp>
#include <rendr/userstack/udp_packet.hpp>

#include <cstring>

namespace rendr::userstack {
namespace {

constexpr unsigned kProtoUdp = 17;
constexpr unsigned kProtoIcmp = 1;
constexpr unsigned kProtoIcmp6 = 58;

std::uint16_t rd16(std::span<const std::byte> b, std::size_t off) {
  return static_cast<std::uint16_t>((std::to_integer<unsigned>(b[off]) << 8) |
                                    std::to_integer<unsigned>(b[off + 1]));
}
void wr16(std::span<std::byte> b, std::size_t off, std::uint16_t v) {
  b[off] = static_cast<std::byte>(v >> 8);
  b[off + 1] = static_cast<std::byte>(v & 0xff);
}
void put(std::span<std::byte> b, std::size_t off, std::uint8_t v) {
  b[off] = static_cast<std::byte>(v);
}
std::size_t addr_len(IpFamily f) {
  return f == IpFamily::v4 ? 4 : 16;
}
std::size_t ip_header_len(IpFamily f) {
  return f == IpFamily::v4 ? 20 : 40;
}

// write_ip_header fills an IPv4 (checksum set) or IPv6 header at |b| for |payload_len| bytes of
// protocol |proto|.
void write_ip_header(std::span<std::byte> b, const Endpoint& src, const Endpoint& dst,
                     unsigned proto, std::size_t payload_len) {
  if (src.family == IpFamily::v4) {
    put(b, 0, 0x45);
    wr16(b, 2, static_cast<std::uint16_t>(20 + payload_len));
    put(b, 8, 64);
    put(b, 9, static_cast<std::uint8_t>(proto));
    std::memcpy(b.data() + 12, src.addr.data(), 4);
    std::memcpy(b.data() + 16, dst.addr.data(), 4);
    wr16(b, 10, static_cast<std::uint16_t>(~checksum_fold(checksum_add(b.first(20)))));
  } else {
    put(b, 0, 0x60);
    wr16(b, 4, static_cast<std::uint16_t>(payload_len));
    put(b, 6, static_cast<std::uint8_t>(proto));
    put(b, 7, 64);
    std::memcpy(b.data() + 8, src.addr.data(), 16);
    std::memcpy(b.data() + 24, dst.addr.data(), 16);
  }
}

// pseudo_sum: the IPv4/IPv6 pseudo-header sum of |len| bytes of |proto|.
std::uint32_t pseudo_sum(const Endpoint& src, const Endpoint& dst, unsigned proto,
                         std::size_t len) {
  const std::size_t n = addr_len(src.family);
  std::uint32_t sum = checksum_add(std::as_bytes(std::span(src.addr).first(n)));
  sum = checksum_add(std::as_bytes(std::span(dst.addr).first(n)), sum);
  sum += proto;
  sum += static_cast<std::uint32_t>(len >> 16);
  sum += static_cast<std::uint32_t>(len & 0xffff);
  return sum;
}

}  // namespace

std::optional<UdpPacket> parse_udp(std::span<const std::byte> pkt) {
  if (pkt.empty()) {
    return std::nullopt;
  }
  UdpPacket p;
  const unsigned version = std::to_integer<unsigned>(pkt[0]) >> 4;
  std::size_t off = 0;
  std::size_t tot = 0;
  if (version == 4) {
    if (pkt.size() < 20) {
      return std::nullopt;
    }
    const std::size_t ihl = (std::to_integer<unsigned>(pkt[0]) & 0x0f) * 4U;
    tot = rd16(pkt, 2);
    if (ihl < 20 || tot < ihl || tot > pkt.size()) {
      return std::nullopt;
    }
    if ((rd16(pkt, 6) & 0x3fff) != 0 || std::to_integer<unsigned>(pkt[9]) != kProtoUdp) {
      return std::nullopt;  // a fragment, or not UDP
    }
    p.family = IpFamily::v4;
    p.src.family = p.dst.family = IpFamily::v4;
    std::memcpy(p.src.addr.data(), pkt.data() + 12, 4);
    std::memcpy(p.dst.addr.data(), pkt.data() + 16, 4);
    off = ihl;
  } else if (version == 6) {
    if (pkt.size() < 40) {
      return std::nullopt;
    }
    tot = 40 + rd16(pkt, 4);
    if (tot > pkt.size()) {
      return std::nullopt;
    }
    p.family = IpFamily::v6;
    p.src.family = p.dst.family = IpFamily::v6;
    std::memcpy(p.src.addr.data(), pkt.data() + 8, 16);
    std::memcpy(p.dst.addr.data(), pkt.data() + 24, 16);
    unsigned next = std::to_integer<unsigned>(pkt[6]);
    off = 40;
    for (int guard = 0; guard < 8 && (next == 0 || next == 43 || next == 60); ++guard) {
      if (off + 8 > tot) {
        return std::nullopt;
      }
      const unsigned nn = std::to_integer<unsigned>(pkt[off]);
      off += (std::to_integer<unsigned>(pkt[off + 1]) + 1U) * 8U;
      next = nn;
    }
    if (next != kProtoUdp) {
      return std::nullopt;  // fragments (44) included
    }
  } else {
    return std::nullopt;
  }
  if (off + 8 > tot) {
    return std::nullopt;
  }
  const std::size_t ulen = rd16(pkt, off + 4);
  if (ulen < 8 || off + ulen > tot) {
    return std::nullopt;
  }
  p.src.port = rd16(pkt, off);
  p.dst.port = rd16(pkt, off + 2);
  p.payload_offset = off + 8;
  p.payload_len = ulen - 8;
  return p;
}

Result<std::vector<std::byte>> build_udp(const Endpoint& src, const Endpoint& dst,
                                         std::span<const std::byte> payload) {
  if (src.family != dst.family) {
    return make_error(std::errc::invalid_argument, "build_udp: address families differ");
  }
  if (payload.size() > kMaxUdpPayload) {
    return make_error(std::errc::message_size,
                      "build_udp: " + std::to_string(payload.size()) + "-byte payload");
  }
  const std::size_t ih = ip_header_len(src.family);
  const std::size_t ulen = 8 + payload.size();
  std::vector<std::byte> pkt(ih + ulen);
  std::span<std::byte> b(pkt);
  write_ip_header(b, src, dst, kProtoUdp, ulen);
  auto u = b.subspan(ih);
  wr16(u, 0, src.port);
  wr16(u, 2, dst.port);
  wr16(u, 4, static_cast<std::uint16_t>(ulen));
  if (!payload.empty()) {
    std::memcpy(u.data() + 8, payload.data(), payload.size());
  }
  std::uint16_t c = static_cast<std::uint16_t>(
      ~checksum_fold(checksum_add(u, pseudo_sum(src, dst, kProtoUdp, ulen))));
  wr16(u, 6, c == 0 ? 0xffff : c);  // 0 means "no checksum" (and is illegal for IPv6)
  return pkt;
}

Result<std::vector<std::byte>> build_unreachable(const Endpoint& app, const Endpoint& dst,
                                                 Unreachable why) {
  if (app.family != dst.family) {
    return make_error(std::errc::invalid_argument, "build_unreachable: address families differ");
  }
  const bool v4 = app.family == IpFamily::v4;
  const std::size_t ih = ip_header_len(app.family);
  // ICMP header (8) + the quoted datagram's IP header + its UDP header (8).
  const std::size_t icmp_len = 8 + ih + 8;
  std::vector<std::byte> pkt(ih + icmp_len);
  std::span<std::byte> b(pkt);
  write_ip_header(b, dst, app, v4 ? kProtoIcmp : kProtoIcmp6, icmp_len);
  auto icmp = b.subspan(ih);
  std::uint8_t code = 0;
  switch (why) {
    case Unreachable::port:
      code = v4 ? 3 : 4;
      break;
    case Unreachable::prohibited:
      code = v4 ? 13 : 1;
      break;
    case Unreachable::host:
      code = v4 ? 1 : 3;
      break;
  }
  put(icmp, 0, v4 ? 3 : 1);  // destination unreachable
  put(icmp, 1, code);
  auto quoted = icmp.subspan(8);
  write_ip_header(quoted, app, dst, kProtoUdp, 8);
  wr16(quoted, ih, app.port);
  wr16(quoted, ih + 2, dst.port);
  wr16(quoted, ih + 4, 8);
  const std::uint32_t init = v4 ? 0 : pseudo_sum(dst, app, kProtoIcmp6, icmp_len);
  wr16(icmp, 2, static_cast<std::uint16_t>(~checksum_fold(checksum_add(icmp, init))));
  return pkt;
}

}  // namespace rendr::userstack
