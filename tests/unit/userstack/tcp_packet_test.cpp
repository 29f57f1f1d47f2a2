// SPDX-License-Identifier: Apache-2.0
// The shim's packet arithmetic: parsing, checksum completion and the per-flow sequence offset.
#include <rendr/userstack/tcp_packet.hpp>

#include "support/packet.hpp"

#include <catch2/catch.hpp>

#include <vector>

using namespace rendr;
using namespace rendr::userstack;

namespace {

// ip_packet: the support builder makes Ethernet frames; the TUN carries bare IP packets.
std::vector<std::byte> ip_packet(const test::TcpFrameSpec& spec) {
  auto f = test::tcp_frame(spec);
  return {f.begin() + 14, f.end()};
}

test::TcpFrameSpec spec4() {
  test::TcpFrameSpec s;
  s.src = test::endpoint("10.1.0.2:40000");
  s.dst = test::endpoint("198.51.100.7:443");
  s.flags = test::kTcpAck | test::kTcpPsh;
  s.seq = 0xfffffff0;
  s.ack = 0x12345678;
  s.payload = std::vector<std::byte>(33, std::byte{0xab});
  return s;
}

}  // namespace

TEST_CASE("userstack parse_tcp reads IPv4 addresses ports flags and payload length",
          "[userstack][packet]") {
  auto pkt = ip_packet(spec4());
  auto p = parse_tcp(pkt);
  REQUIRE(p);
  CHECK(p->family == IpFamily::v4);
  CHECK(p->src.to_string() == "10.1.0.2:40000");
  CHECK(p->dst.to_string() == "198.51.100.7:443");
  CHECK(p->seq == 0xfffffff0U);
  CHECK(p->ack == 0x12345678U);
  CHECK(p->has_ack());
  CHECK_FALSE(p->syn());
  CHECK(p->payload_len == 33);
  CHECK(p->ip_header_len == 20);
  CHECK(tcp_checksum_ok(pkt, *p));
}

TEST_CASE("userstack parse_tcp handles IPv6 with a hop-by-hop header", "[userstack][packet]") {
  test::TcpFrameSpec s = spec4();
  s.src = test::endpoint("[fd00::2]:40000");
  s.dst = test::endpoint("[2001:db8::7]:80");
  s.ipv6_hop_by_hop = true;
  s.flags = test::kTcpSyn;
  auto pkt = ip_packet(s);
  auto p = parse_tcp(pkt);
  REQUIRE(p);
  CHECK(p->family == IpFamily::v6);
  CHECK(p->ip_header_len == 48);
  CHECK(p->dst.to_string() == "[2001:db8::7]:80");
  CHECK(p->syn());
  CHECK_FALSE(p->has_ack());
  CHECK(tcp_checksum_ok(pkt, *p));
}

TEST_CASE("userstack parse_tcp rejects truncated and non-TCP packets", "[userstack][packet]") {
  auto pkt = ip_packet(spec4());
  CHECK_FALSE(parse_tcp(std::span<const std::byte>(pkt).first(30)));
  CHECK_FALSE(parse_tcp({}));
  auto udp = test::udp_frame(test::endpoint("10.0.0.1:1"), test::endpoint("10.0.0.2:2"));
  CHECK_FALSE(parse_tcp(std::span<const std::byte>(udp).subspan(14)));
  auto frag = pkt;
  frag[6] = std::byte{0x20};  // MF
  CHECK_FALSE(parse_tcp(frag));
}

TEST_CASE("userstack shift_seq and shift_ack keep the checksum valid, with wrap-around",
          "[userstack][packet][offset]") {
  for (std::uint32_t delta : {1U, 0x10U, 0x7fffffffU, 0xdeadbeefU, 0xffffffffU}) {
    auto pkt = ip_packet(spec4());
    auto p = parse_tcp(pkt);
    REQUIRE(p);
    shift_seq(pkt, *p, delta);
    shift_ack(pkt, *p, 0U - delta);
    auto q = parse_tcp(pkt);
    REQUIRE(q);
    CHECK(q->seq == 0xfffffff0U + delta);
    CHECK(q->ack == 0x12345678U - delta);
    CHECK(tcp_checksum_ok(pkt, *q));
    // And back: the round trip restores the original bytes exactly.
    shift_seq(pkt, *q, 0U - delta);
    shift_ack(pkt, *q, delta);
    CHECK(pkt == ip_packet(spec4()));
  }
}

TEST_CASE("userstack shift_ack leaves a packet without ACK flag untouched",
          "[userstack][packet][offset]") {
  test::TcpFrameSpec s = spec4();
  s.flags = test::kTcpSyn;
  s.ack = 0;
  auto pkt = ip_packet(s);
  auto p = parse_tcp(pkt);
  REQUIRE(p);
  shift_ack(pkt, *p, 12345);
  CHECK(pkt == ip_packet(s));
}

TEST_CASE("userstack complete_partial_checksum finishes a NEEDS_CSUM packet",
          "[userstack][packet]") {
  for (bool v6 : {false, true}) {
    test::TcpFrameSpec s = spec4();
    if (v6) {
      s.src = test::endpoint("[fd00::2]:40000");
      s.dst = test::endpoint("[fd00::7]:443");
    }
    auto good = ip_packet(s);
    auto p = parse_tcp(good);
    REQUIRE(p);
    // What the kernel hands over with CHECKSUM_PARTIAL: the pseudo-header sum, uncomplemented.
    auto partial = good;
    std::uint32_t pseudo = 0;
    if (v6) {
      pseudo = checksum_add(std::span<const std::byte>(partial).subspan(8, 32));
    } else {
      pseudo = checksum_add(std::span<const std::byte>(partial).subspan(12, 8));
    }
    std::size_t seg = p->total_len - p->tcp_offset;
    pseudo += 6 + static_cast<std::uint32_t>(seg);
    std::uint16_t folded = checksum_fold(pseudo);
    partial[p->tcp_offset + 16] = static_cast<std::byte>(folded >> 8);
    partial[p->tcp_offset + 17] = static_cast<std::byte>(folded & 0xff);
    REQUIRE_FALSE(tcp_checksum_ok(partial, *p));
    REQUIRE(complete_partial_checksum(partial, p->tcp_offset, 16));
    CHECK(partial == good);
    CHECK_FALSE(complete_partial_checksum(partial, partial.size(), 16));
  }
}

TEST_CASE("userstack set_tcp_checksum repairs a partial or stale checksum",
          "[userstack][packet]") {
  for (bool v6 : {false, true}) {
    test::TcpFrameSpec s = spec4();
    if (v6) {
      s.src = test::endpoint("[fd00::2]:40000");
      s.dst = test::endpoint("[fd00::7]:443");
    }
    const auto good = ip_packet(s);
    auto p = parse_tcp(good);
    REQUIRE(p);
    for (std::uint16_t field : {std::uint16_t{0}, std::uint16_t{0x1234}, std::uint16_t{0xffff}}) {
      auto bad = good;
      bad[p->tcp_offset + 16] = static_cast<std::byte>(field >> 8);
      bad[p->tcp_offset + 17] = static_cast<std::byte>(field & 0xff);
      if (bad == good) {
        continue;
      }
      REQUIRE_FALSE(tcp_checksum_ok(bad, *p));
      set_tcp_checksum(bad, *p);
      CHECK(tcp_checksum_ok(bad, *p));
      CHECK(bad == good);
    }
  }
}

TEST_CASE("userstack latest_ack takes the latest ACK across wrap-around with its last window",
          "[userstack][packet]") {
  auto with = [](std::uint32_t ack, std::uint16_t window, std::uint8_t flags) {
    test::TcpFrameSpec s = spec4();
    s.ack = ack;
    s.window = window;
    s.flags = flags;
    return ip_packet(s);
  };
  const std::uint8_t ack = test::kTcpAck;
  CHECK_FALSE(latest_ack({}));
  std::vector<std::vector<std::byte>> none{with(7, 1, test::kTcpSyn), {std::byte{0x45}}};
  CHECK_FALSE(latest_ack(none));
  // 0xfffffff0 -> 0x10 wraps: 0x10 is the later one; an older ACK after it changes nothing; a
  // window update with the same ACK later wins; a RST never counts.
  std::vector<std::vector<std::byte>> pk{with(0xfffffff0U, 100, ack), with(0x10, 200, ack),
                                         with(0xfffffff8U, 300, ack), with(0x10, 400, ack),
                                         with(0x4000, 500, test::kTcpRst | ack)};
  auto a = latest_ack(pk);
  REQUIRE(a);
  CHECK(a->ack == 0x10U);
  CHECK(a->window == 400);
  // later_ack, the rule behind it: either side may be absent; a tie takes the second.
  CHECK_FALSE(later_ack(std::nullopt, std::nullopt));
  CHECK(later_ack(AckSeen{5, 1}, std::nullopt)->window == 1);
  CHECK(later_ack(std::nullopt, AckSeen{5, 2})->window == 2);
  CHECK(later_ack(AckSeen{5, 1}, AckSeen{5, 2})->window == 2);
  CHECK(later_ack(AckSeen{0x10, 1}, AckSeen{0xfffffff0U, 2})->ack == 0x10U);
}
