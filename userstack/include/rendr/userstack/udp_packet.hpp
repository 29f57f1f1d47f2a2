// SPDX-License-Identifier: Apache-2.0
// udp_packet — the pure half of the TUN's UDP path (docs/tun-ingress.md "UDP"): parse an
// IPv4/IPv6 UDP datagram as it comes out of the TUN, build the reply datagram that goes back
// into it (from the original destination to the app, checksums complete), and build the ICMP /
// ICMPv6 "destination unreachable" that tells an app's connected UDP socket its flow was
// refused (the kernel turns it into ECONNREFUSED / EHOSTUNREACH / EACCES on that socket). No
// lwIP, no I/O: bytes in, bytes out. Any thread; stateless.
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace rendr::userstack {

// UdpPacket — where the parts of one IP+UDP packet are.
struct UdpPacket {
  IpFamily family = IpFamily::v4;
  Endpoint src;  // address + port of the sender
  Endpoint dst;
  std::size_t payload_offset = 0;
  std::size_t payload_len = 0;
};

// UdpDatagram — one datagram read from the TUN: |src| is the app, |dst| the address and port
// it sent to; |payload| is valid only during the call it is passed to.
struct UdpDatagram {
  Endpoint src;
  Endpoint dst;
  std::span<const std::byte> payload;
};

// parse_udp parses |pkt| (starting at the IP header). nullopt for anything that is not a
// well-formed, unfragmented IPv4/IPv6 UDP packet whose UDP length fits the IP length (IPv6
// skips hop-by-hop, routing and destination-options headers). The checksum is not verified:
// the packet comes from the local kernel.
[[nodiscard]] std::optional<UdpPacket> parse_udp(std::span<const std::byte> pkt);

// kMaxUdpPayload: the largest payload build_udp takes (IPv4: 65535 - 20 - 8).
inline constexpr std::size_t kMaxUdpPayload = 65507;

// build_udp makes the IP packet carrying |payload| from |src| to |dst| (TTL/hop limit 64,
// IPv4 DF clear, UDP checksum set). Errors: invalid_argument (families differ),
// message_size (payload over kMaxUdpPayload).
[[nodiscard]] Result<std::vector<std::byte>> build_udp(const Endpoint& src, const Endpoint& dst,
                                                       std::span<const std::byte> payload);

// Unreachable: what build_unreachable tells the app, and what its socket then reads.
enum class Unreachable : std::uint8_t {
  port,        // ICMP 3/3, ICMPv6 1/4: ECONNREFUSED
  prohibited,  // ICMP 3/13, ICMPv6 1/1: EHOSTUNREACH (v4) / EACCES (v6)
  host,        // ICMP 3/1, ICMPv6 1/3: EHOSTUNREACH
};

// build_unreachable makes the ICMP (ICMPv6) destination-unreachable packet that |dst| would
// send to |app| about a UDP datagram |app| -> |dst|: the quoted part is that datagram's IP
// header and UDP header (rebuilt from the addresses, which is what the kernel matches the
// socket by). Errors: invalid_argument (families differ).
[[nodiscard]] Result<std::vector<std::byte>> build_unreachable(const Endpoint& app,
                                                               const Endpoint& dst,
                                                               Unreachable why);

}  // namespace rendr::userstack
