// SPDX-License-Identifier: Apache-2.0
#include <rendr/userstack/tcp_packet.hpp>

#include <cstring>

namespace rendr::userstack {
namespace {

std::uint16_t rd16(std::span<const std::byte> b, std::size_t off) {
  return static_cast<std::uint16_t>((std::to_integer<unsigned>(b[off]) << 8) |
                                    std::to_integer<unsigned>(b[off + 1]));
}
std::uint32_t rd32(std::span<const std::byte> b, std::size_t off) {
  return (static_cast<std::uint32_t>(rd16(b, off)) << 16) | rd16(b, off + 2);
}
void wr16(std::span<std::byte> b, std::size_t off, std::uint16_t v) {
  b[off] = static_cast<std::byte>(v >> 8);
  b[off + 1] = static_cast<std::byte>(v & 0xff);
}
void wr32(std::span<std::byte> b, std::size_t off, std::uint32_t v) {
  wr16(b, off, static_cast<std::uint16_t>(v >> 16));
  wr16(b, off + 2, static_cast<std::uint16_t>(v & 0xffff));
}

constexpr std::uint8_t kProtoTcp = 6;

// update_csum32 applies RFC 1624 (HC' = ~(~HC + ~m + m')) for a 32-bit field change.
void update_csum32(std::span<std::byte> pkt, std::size_t csum_off, std::uint32_t old_v,
                   std::uint32_t new_v) {
  std::uint32_t sum = static_cast<std::uint16_t>(~rd16(pkt, csum_off));
  sum += static_cast<std::uint16_t>(~(old_v >> 16)) & 0xffffU;
  sum += static_cast<std::uint16_t>(~(old_v & 0xffff)) & 0xffffU;
  sum += new_v >> 16;
  sum += new_v & 0xffff;
  wr16(pkt, csum_off, static_cast<std::uint16_t>(~checksum_fold(sum)));
}

}  // namespace

std::optional<TcpPacket> parse_tcp(std::span<const std::byte> pkt) {
  if (pkt.empty()) {
    return std::nullopt;
  }
  TcpPacket p;
  unsigned version = std::to_integer<unsigned>(pkt[0]) >> 4;
  std::size_t off = 0;
  if (version == 4) {
    if (pkt.size() < 20) {
      return std::nullopt;
    }
    std::size_t ihl = (std::to_integer<unsigned>(pkt[0]) & 0x0f) * 4U;
    std::size_t tot = rd16(pkt, 2);
    if (ihl < 20 || tot < ihl || tot > pkt.size()) {
      return std::nullopt;
    }
    // Fragments (MF set or an offset) never reach TCP here.
    if ((rd16(pkt, 6) & 0x3fff) != 0 || std::to_integer<unsigned>(pkt[9]) != kProtoTcp) {
      return std::nullopt;
    }
    p.family = IpFamily::v4;
    p.src.family = p.dst.family = IpFamily::v4;
    std::memcpy(p.src.addr.data(), pkt.data() + 12, 4);
    std::memcpy(p.dst.addr.data(), pkt.data() + 16, 4);
    off = ihl;
    p.total_len = tot;
  } else if (version == 6) {
    if (pkt.size() < 40) {
      return std::nullopt;
    }
    std::size_t tot = 40 + rd16(pkt, 4);
    if (tot > pkt.size()) {
      return std::nullopt;
    }
    p.family = IpFamily::v6;
    p.src.family = p.dst.family = IpFamily::v6;
    std::memcpy(p.src.addr.data(), pkt.data() + 8, 16);
    std::memcpy(p.dst.addr.data(), pkt.data() + 24, 16);
    unsigned next = std::to_integer<unsigned>(pkt[6]);
    off = 40;
    // Skip hop-by-hop (0), routing (43) and destination options (60); anything else but TCP
    // (fragments included) is not ours.
    for (int guard = 0; guard < 8 && (next == 0 || next == 43 || next == 60); ++guard) {
      if (off + 8 > tot) {
        return std::nullopt;
      }
      unsigned nn = std::to_integer<unsigned>(pkt[off]);
      off += (std::to_integer<unsigned>(pkt[off + 1]) + 1U) * 8U;
      next = nn;
    }
    if (next != kProtoTcp) {
      return std::nullopt;
    }
    p.total_len = tot;
  } else {
    return std::nullopt;
  }
  if (off + 20 > p.total_len) {
    return std::nullopt;
  }
  std::size_t doff = (std::to_integer<unsigned>(pkt[off + 12]) >> 4) * 4U;
  if (doff < 20 || off + doff > p.total_len) {
    return std::nullopt;
  }
  p.ip_header_len = off;
  p.tcp_offset = off;
  p.tcp_header_len = doff;
  p.payload_len = p.total_len - off - doff;
  p.src.port = rd16(pkt, off);
  p.dst.port = rd16(pkt, off + 2);
  p.seq = rd32(pkt, off + 4);
  p.ack = rd32(pkt, off + 8);
  p.flags = static_cast<std::uint8_t>(std::to_integer<unsigned>(pkt[off + 13]) & 0x3f);
  p.window = rd16(pkt, off + 14);
  return p;
}

std::uint32_t checksum_add(std::span<const std::byte> data, std::uint32_t initial) {
  std::uint64_t sum = initial;
  std::size_t i = 0;
  for (; i + 1 < data.size(); i += 2) {
    sum += rd16(data, i);
  }
  if (i < data.size()) {
    sum += std::to_integer<unsigned>(data[i]) << 8;
  }
  while ((sum >> 32) != 0) {
    sum = (sum & 0xffffffffU) + (sum >> 32);
  }
  return static_cast<std::uint32_t>(sum);
}

std::uint16_t checksum_fold(std::uint32_t sum) {
  while ((sum >> 16) != 0) {
    sum = (sum & 0xffff) + (sum >> 16);
  }
  return static_cast<std::uint16_t>(sum);
}

std::optional<AckSeen> later_ack(std::optional<AckSeen> a, std::optional<AckSeen> b) {
  if (!b) {
    return a;
  }
  if (!a || static_cast<std::int32_t>(b->ack - a->ack) >= 0) {
    return b;
  }
  return a;
}

std::optional<AckSeen> ack_of(std::span<const std::byte> pkt) {
  auto tp = parse_tcp(pkt);
  if (!tp || !tp->has_ack() || tp->rst()) {
    return std::nullopt;
  }
  return AckSeen{tp->ack, tp->window};
}

std::optional<AckSeen> latest_ack(std::span<const std::vector<std::byte>> packets) {
  std::optional<AckSeen> best;
  for (const auto& pkt : packets) {
    best = later_ack(best, ack_of(pkt));
  }
  return best;
}

namespace {
std::uint32_t pseudo_sum(std::span<const std::byte> pkt, const TcpPacket& p) {
  std::uint32_t sum = 0;
  std::size_t seg_len = p.total_len - p.tcp_offset;
  if (p.family == IpFamily::v4) {
    sum = checksum_add(pkt.subspan(12, 8));
  } else {
    sum = checksum_add(pkt.subspan(8, 32));
  }
  sum += kProtoTcp;
  sum += static_cast<std::uint32_t>(seg_len >> 16);
  sum += static_cast<std::uint32_t>(seg_len & 0xffff);
  return sum;
}
}  // namespace

std::uint16_t tcp_checksum(std::span<const std::byte> pkt, const TcpPacket& p) {
  std::uint32_t sum = pseudo_sum(pkt, p);
  auto seg = pkt.subspan(p.tcp_offset, p.total_len - p.tcp_offset);
  sum = checksum_add(seg.first(16), sum);
  sum = checksum_add(seg.subspan(18), sum);  // skip the checksum field itself
  return static_cast<std::uint16_t>(~checksum_fold(sum));
}

bool tcp_checksum_ok(std::span<const std::byte> pkt, const TcpPacket& p) {
  return tcp_checksum(pkt, p) == rd16(pkt, p.tcp_offset + 16);
}

void set_tcp_checksum(std::span<std::byte> pkt, const TcpPacket& p) {
  wr16(pkt, p.tcp_offset + 16, tcp_checksum(pkt, p));
}

bool complete_partial_checksum(std::span<std::byte> pkt, std::size_t csum_start,
                               std::size_t csum_offset) {
  if (csum_start >= pkt.size() || csum_start + csum_offset + 2 > pkt.size()) {
    return false;
  }
  std::uint32_t sum = checksum_add(std::span<const std::byte>(pkt).subspan(csum_start));
  wr16(pkt, csum_start + csum_offset, static_cast<std::uint16_t>(~checksum_fold(sum)));
  return true;
}

void shift_seq(std::span<std::byte> pkt, const TcpPacket& p, std::uint32_t delta) {
  if (delta == 0) {
    return;
  }
  std::uint32_t old_v = rd32(pkt, p.tcp_offset + 4);
  std::uint32_t new_v = old_v + delta;
  wr32(pkt, p.tcp_offset + 4, new_v);
  update_csum32(pkt, p.tcp_offset + 16, old_v, new_v);
}

void shift_ack(std::span<std::byte> pkt, const TcpPacket& p, std::uint32_t delta) {
  if (delta == 0 || !p.has_ack()) {
    return;
  }
  std::uint32_t old_v = rd32(pkt, p.tcp_offset + 8);
  std::uint32_t new_v = old_v + delta;
  wr32(pkt, p.tcp_offset + 8, new_v);
  update_csum32(pkt, p.tcp_offset + 16, old_v, new_v);
}

}  // namespace rendr::userstack
