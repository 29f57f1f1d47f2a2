// SPDX-License-Identifier: Apache-2.0
#include "support/packet.hpp"

#include <netinet/in.h>

#include <stdexcept>
#include <string>

namespace rendr::test {
namespace {

constexpr std::uint16_t kEthIp = 0x0800;
constexpr std::uint16_t kEthIpv6 = 0x86DD;
constexpr std::uint8_t kHopByHop = 0;

class Writer {
 public:
  void u8(std::uint8_t v) { b_.push_back(static_cast<std::byte>(v)); }
  void u16(std::uint16_t v) {
    u8(static_cast<std::uint8_t>(v >> 8));
    u8(static_cast<std::uint8_t>(v));
  }
  void u32(std::uint32_t v) {
    u16(static_cast<std::uint16_t>(v >> 16));
    u16(static_cast<std::uint16_t>(v));
  }
  void bytes(const std::uint8_t* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      u8(p[i]);
    }
  }
  void bytes(std::span<const std::byte> s) { b_.insert(b_.end(), s.begin(), s.end()); }
  void put16(std::size_t at, std::uint16_t v) {
    b_[at] = static_cast<std::byte>(v >> 8);
    b_[at + 1] = static_cast<std::byte>(v);
  }
  [[nodiscard]] std::size_t size() const { return b_.size(); }
  std::vector<std::byte>& buf() { return b_; }

 private:
  std::vector<std::byte> b_;
};

// One's-complement sum over |data| starting from |sum|.
std::uint32_t csum_add(std::uint32_t sum, const std::byte* data, std::size_t n) {
  for (std::size_t i = 0; i + 1 < n; i += 2) {
    sum += (std::to_integer<std::uint32_t>(data[i]) << 8) | std::to_integer<std::uint32_t>(data[i + 1]);
  }
  if (n % 2 != 0) {
    sum += std::to_integer<std::uint32_t>(data[n - 1]) << 8;
  }
  return sum;
}

std::uint16_t csum_fold(std::uint32_t sum) {
  while ((sum >> 16) != 0) {
    sum = (sum & 0xffff) + (sum >> 16);
  }
  return static_cast<std::uint16_t>(~sum);
}

std::uint32_t pseudo_header_sum(const Endpoint& src, const Endpoint& dst, std::uint8_t proto,
                                std::size_t l4_len) {
  std::size_t alen = src.family == IpFamily::v4 ? 4 : 16;
  std::vector<std::byte> ph;
  for (std::size_t i = 0; i < alen; ++i) {
    ph.push_back(static_cast<std::byte>(src.addr[i]));
  }
  for (std::size_t i = 0; i < alen; ++i) {
    ph.push_back(static_cast<std::byte>(dst.addr[i]));
  }
  std::uint32_t sum = csum_add(0, ph.data(), ph.size());
  return sum + proto + static_cast<std::uint32_t>(l4_len);
}

// Writes Ethernet + IP headers for an L4 payload of |l4_len| bytes; returns the L4 offset.
std::size_t ip_headers(Writer& w, const Endpoint& src, const Endpoint& dst, std::uint8_t proto,
                       std::size_t l4_len, bool hop_by_hop) {
  if (src.family != dst.family) {
    throw std::invalid_argument("packet: mixed address families");
  }
  static constexpr std::uint8_t kDstMac[6] = {0x02, 0, 0, 0, 0, 0x02};
  static constexpr std::uint8_t kSrcMac[6] = {0x02, 0, 0, 0, 0, 0x01};
  w.bytes(kDstMac, 6);
  w.bytes(kSrcMac, 6);
  if (src.family == IpFamily::v4) {
    w.u16(kEthIp);
    std::size_t ip = w.size();
    w.u8(0x45);
    w.u8(0);
    w.u16(static_cast<std::uint16_t>(20 + l4_len));
    w.u16(0x1234);  // id
    w.u16(0x4000);  // DF
    w.u8(64);
    w.u8(proto);
    w.u16(0);  // checksum, below
    w.bytes(src.addr.data(), 4);
    w.bytes(dst.addr.data(), 4);
    w.put16(ip + 10, csum_fold(csum_add(0, w.buf().data() + ip, 20)));
  } else {
    w.u16(kEthIpv6);
    std::size_t ext = hop_by_hop ? 8 : 0;
    w.u32(0x60000000);
    w.u16(static_cast<std::uint16_t>(ext + l4_len));
    w.u8(hop_by_hop ? kHopByHop : proto);
    w.u8(64);
    w.bytes(src.addr.data(), 16);
    w.bytes(dst.addr.data(), 16);
    if (hop_by_hop) {
      w.u8(proto);  // next header
      w.u8(0);      // length: 8 bytes in total
      w.u8(1);      // PadN
      w.u8(4);
      w.u32(0);
    }
  }
  return w.size();
}

}  // namespace

std::vector<std::byte> tcp_frame(const TcpFrameSpec& spec) {
  Writer w;
  std::size_t l4_len = 20 + spec.payload.size();
  std::size_t l4 = ip_headers(w, spec.src, spec.dst, IPPROTO_TCP, l4_len, spec.ipv6_hop_by_hop);
  w.u16(spec.src.port);
  w.u16(spec.dst.port);
  w.u32(spec.seq);
  w.u32(spec.ack);
  w.u8(5 << 4);  // data offset: 20 bytes
  w.u8(spec.flags);
  w.u16(spec.window);
  w.u16(0);      // checksum, below
  w.u16(0);      // urgent pointer
  w.bytes(spec.payload);
  std::uint32_t sum = pseudo_header_sum(spec.src, spec.dst, IPPROTO_TCP, l4_len);
  w.put16(l4 + 16, csum_fold(csum_add(sum, w.buf().data() + l4, l4_len)));
  return std::move(w.buf());
}

std::vector<std::byte> udp_frame(const Endpoint& src, const Endpoint& dst,
                                 std::span<const std::byte> payload) {
  Writer w;
  std::size_t l4_len = 8 + payload.size();
  std::size_t l4 = ip_headers(w, src, dst, IPPROTO_UDP, l4_len, false);
  w.u16(src.port);
  w.u16(dst.port);
  w.u16(static_cast<std::uint16_t>(l4_len));
  w.u16(0);
  w.bytes(payload);
  std::uint32_t sum = pseudo_header_sum(src, dst, IPPROTO_UDP, l4_len);
  std::uint16_t c = csum_fold(csum_add(sum, w.buf().data() + l4, l4_len));
  w.put16(l4 + 6, c == 0 ? 0xffff : c);
  return std::move(w.buf());
}

Endpoint endpoint(const char* text) {
  auto e = Endpoint::parse(text);
  if (!e) {
    throw std::invalid_argument(std::string("endpoint '") + text + "': " + e.error().message());
  }
  return *e;
}

}  // namespace rendr::test
