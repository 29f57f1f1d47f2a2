// SPDX-License-Identifier: Apache-2.0
// The TUN's UDP path (udp_packet.hpp): parsing what the app sends, building the replies and
// the ICMP unreachables that go back; checked against the test support's independent builder.
#include <rendr/userstack/tcp_packet.hpp>
#include <rendr/userstack/udp_packet.hpp>

#include "support/packet.hpp"

#include <catch2/catch.hpp>

#include <vector>

using namespace rendr;
using namespace rendr::userstack;

namespace {

// ip_of: the support builder makes Ethernet frames; the TUN carries bare IP packets.
std::vector<std::byte> ip_of(std::vector<std::byte> frame) {
  return {frame.begin() + 14, frame.end()};
}

std::vector<std::byte> bytes(std::size_t n, unsigned seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = static_cast<std::byte>((i * 31 + seed) & 0xff);
  }
  return v;
}

unsigned u8(const std::vector<std::byte>& p, std::size_t i) {
  return std::to_integer<unsigned>(p[i]);
}

}  // namespace

TEST_CASE("userstack parse_udp reads IPv4 and IPv6 datagrams and rejects fragments and TCP",
          "[userstack][packet]") {
  const auto payload = bytes(1000, 7);
  for (const char* pair :
       {"10.77.0.1:40000>198.18.0.10:5300", "[fd00::1]:40000>[2001:db8::7]:53"}) {
    const std::string s = pair;
    const auto src = test::endpoint(s.substr(0, s.find('>')).c_str());
    const auto dst = test::endpoint(s.substr(s.find('>') + 1).c_str());
    INFO(s);
    const auto pkt = ip_of(test::udp_frame(src, dst, payload));
    const auto p = parse_udp(pkt);
    REQUIRE(p);
    CHECK(p->src == src);
    CHECK(p->dst == dst);
    CHECK(p->payload_len == payload.size());
    CHECK(std::equal(payload.begin(), payload.end(),
                     pkt.begin() + static_cast<long>(p->payload_offset)));
    CHECK_FALSE(parse_tcp(pkt));
  }
  auto v4 =
      ip_of(test::udp_frame(test::endpoint("10.0.0.1:1"), test::endpoint("10.0.0.2:2"), payload));
  auto frag = v4;
  frag[6] = std::byte{0x20};  // MF
  CHECK_FALSE(parse_udp(frag));
  auto shortlen = v4;
  shortlen[20 + 4] = std::byte{0x10};  // UDP length beyond the IP length
  shortlen[20 + 5] = std::byte{0x00};
  CHECK_FALSE(parse_udp(shortlen));
  CHECK_FALSE(parse_udp(std::vector<std::byte>(v4.begin(), v4.begin() + 24)));
  test::TcpFrameSpec t;
  t.src = test::endpoint("10.0.0.1:1");
  t.dst = test::endpoint("10.0.0.2:2");
  CHECK_FALSE(parse_udp(ip_of(test::tcp_frame(t))));
}

TEST_CASE("userstack build_udp makes the datagram an independent builder makes",
          "[userstack][packet]") {
  for (std::size_t n : {0UL, 1UL, 1472UL, 30000UL, kMaxUdpPayload}) {
    for (const char* pair :
         {"198.18.0.10:5300>10.77.0.1:40000", "[2001:db8::7]:53>[fd00::1]:40000"}) {
      const std::string s = pair;
      INFO(s << " " << n);
      const auto src = test::endpoint(s.substr(0, s.find('>')).c_str());
      const auto dst = test::endpoint(s.substr(s.find('>') + 1).c_str());
      const auto payload = bytes(n, static_cast<unsigned>(n));
      auto pkt = build_udp(src, dst, payload);
      if (src.family == IpFamily::v4 && n == kMaxUdpPayload) {
        REQUIRE(pkt);
        CHECK(pkt->size() == 65535);
      }
      REQUIRE(pkt);
      const auto want = ip_of(test::udp_frame(src, dst, payload));
      const std::size_t ih = src.family == IpFamily::v4 ? 20 : 40;
      REQUIRE(pkt->size() == want.size());
      // The UDP segment (header, checksum, payload) byte for byte; the IP header's addresses.
      CHECK(std::equal(pkt->begin() + static_cast<long>(ih), pkt->end(),
                       want.begin() + static_cast<long>(ih)));
      const auto p = parse_udp(*pkt);
      REQUIRE(p);
      CHECK(p->src == src);
      CHECK(p->dst == dst);
      CHECK(p->payload_len == n);
      if (src.family == IpFamily::v4) {
        // A valid IPv4 header checksum sums to 0xffff.
        CHECK(checksum_fold(checksum_add(std::span(*pkt).first(20))) == 0xffff);
      }
    }
  }
  CHECK(build_udp(test::endpoint("10.0.0.1:1"), test::endpoint("10.0.0.2:2"),
                  bytes(kMaxUdpPayload + 1, 0))
            .error()
            .code == std::make_error_code(std::errc::message_size));
  CHECK_FALSE(build_udp(test::endpoint("10.0.0.1:1"), test::endpoint("[fd00::2]:2"), {}));
}

TEST_CASE("userstack build_unreachable quotes the datagram the kernel matches the socket by",
          "[userstack][packet]") {
  const auto app = test::endpoint("10.77.0.1:40000");
  const auto dst = test::endpoint("198.18.0.66:5300");
  struct Row {
    Unreachable why;
    unsigned v4_code;
    unsigned v6_code;
  };
  for (const Row r : {Row{Unreachable::port, 3, 4}, Row{Unreachable::prohibited, 13, 1},
                      Row{Unreachable::host, 1, 3}}) {
    auto p4 = build_unreachable(app, dst, r.why);
    REQUIRE(p4);
    REQUIRE(p4->size() == 20 + 8 + 20 + 8);
    CHECK(u8(*p4, 9) == 1);  // ICMP
    CHECK(
        std::equal(p4->begin() + 12, p4->begin() + 16, dst.addr.begin(),
                   [](std::byte a, std::uint8_t b) { return std::to_integer<unsigned>(a) == b; }));
    CHECK(u8(*p4, 20) == 3);
    CHECK(u8(*p4, 21) == r.v4_code);
    CHECK(checksum_fold(checksum_add(std::span(*p4).subspan(20))) == 0xffff);
    // The quoted datagram: app -> dst, UDP, with both ports.
    const std::vector<std::byte> quoted(p4->begin() + 28, p4->end());
    CHECK(u8(quoted, 9) == 17);
    CHECK(u8(quoted, 12) == 10);
    CHECK(u8(quoted, 16) == 198);
    CHECK(((u8(quoted, 20) << 8) | u8(quoted, 21)) == 40000);
    CHECK(((u8(quoted, 22) << 8) | u8(quoted, 23)) == 5300);

    const auto app6 = test::endpoint("[fd00::1]:40000");
    const auto dst6 = test::endpoint("[2001:db8::66]:5300");
    auto p6 = build_unreachable(app6, dst6, r.why);
    REQUIRE(p6);
    REQUIRE(p6->size() == 40 + 8 + 40 + 8);
    CHECK(u8(*p6, 6) == 58);
    CHECK(u8(*p6, 40) == 1);
    CHECK(u8(*p6, 41) == r.v6_code);
    // ICMPv6's checksum covers the pseudo-header: the sum over it and the message is 0xffff.
    std::uint32_t sum = checksum_add(std::span(*p6).subspan(8, 32));
    sum += 58 + (8 + 40 + 8);
    CHECK(checksum_fold(checksum_add(std::span(*p6).subspan(40), sum)) == 0xffff);
  }
  CHECK_FALSE(build_unreachable(app, test::endpoint("[fd00::2]:2"), Unreachable::port));
}
