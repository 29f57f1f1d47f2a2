// SPDX-License-Identifier: Apache-2.0
// Packet builder for BPF datapath tests (STYLE T7): Ethernet frames carrying IPv4/IPv6 TCP or UDP
// with valid lengths and checksums, as BPF_PROG_TEST_RUN expects them. Pure, no I/O.
#pragma once

#include <rendr/common/endpoint.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace rendr::test {

inline constexpr std::uint8_t kTcpFin = 0x01;
inline constexpr std::uint8_t kTcpSyn = 0x02;
inline constexpr std::uint8_t kTcpRst = 0x04;
inline constexpr std::uint8_t kTcpPsh = 0x08;
inline constexpr std::uint8_t kTcpAck = 0x10;

struct TcpFrameSpec {
  Endpoint src;
  Endpoint dst;
  std::uint8_t flags = kTcpAck;
  std::uint32_t seq = 1000;
  std::uint32_t ack = 0;
  std::uint16_t window = 65535;
  std::vector<std::byte> payload;
  // IPv6 only: put an (empty, PadN) hop-by-hop options header before TCP.
  bool ipv6_hop_by_hop = false;
};

// tcp_frame builds Ethernet + IPv4/IPv6 (family of |spec.src|) + TCP + payload.
[[nodiscard]] std::vector<std::byte> tcp_frame(const TcpFrameSpec& spec);

// udp_frame builds Ethernet + IPv4/IPv6 + UDP + |payload|.
[[nodiscard]] std::vector<std::byte> udp_frame(const Endpoint& src, const Endpoint& dst,
                                               std::span<const std::byte> payload = {});

// endpoint parses "a.b.c.d:port" / "[v6]:port" and throws on malformed input (test helper).
[[nodiscard]] Endpoint endpoint(const char* text);

}  // namespace rendr::test
