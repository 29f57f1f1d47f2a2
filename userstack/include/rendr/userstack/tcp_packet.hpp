// SPDX-License-Identifier: Apache-2.0
// tcp_packet — the pure half of userstack's input/output shim: parse an IPv4/IPv6 TCP packet as
// it comes out of (or goes into) the TUN device, complete a checksum the kernel left partial
// (virtio-net NEEDS_CSUM), and shift the sequence space of one direction by a per-flow offset
// with an incremental checksum fixup (RFC 1624). No lwIP, no I/O: bytes in, bytes out, so the
// unit tests drive it directly. Any thread; stateless.
//
// Why an offset: lwIP's initial sequence numbers are predictable (6510 + ticks). The shim adds a
// random per-flow |offset| to every sequence number lwIP sends (outbound SEQ) and subtracts it
// from every acknowledgment the peer sends back (inbound ACK), so the wire sees a random ISS
// while lwIP keeps its own numbering. The peer's own sequence space is never touched.
#pragma once

#include <rendr/common/endpoint.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace rendr::userstack {

inline constexpr std::uint8_t kTcpFin = 0x01;
inline constexpr std::uint8_t kTcpSyn = 0x02;
inline constexpr std::uint8_t kTcpRst = 0x04;
inline constexpr std::uint8_t kTcpPsh = 0x08;
inline constexpr std::uint8_t kTcpAck = 0x10;

// TcpPacket — where the parts of one IP+TCP packet are (offsets into the parsed buffer).
struct TcpPacket {
  IpFamily family = IpFamily::v4;
  Endpoint src;  // address + port of the sender
  Endpoint dst;
  std::size_t ip_header_len = 0;  // IPv4 header incl. options / IPv6 header incl. extensions
  std::size_t tcp_offset = 0;     // == ip_header_len
  std::size_t tcp_header_len = 0;
  std::size_t payload_len = 0;
  std::size_t total_len = 0;  // IP total length (may be shorter than the buffer)
  std::uint32_t seq = 0;
  std::uint32_t ack = 0;
  std::uint8_t flags = 0;
  std::uint16_t window = 0;

  [[nodiscard]] bool syn() const { return (flags & kTcpSyn) != 0; }
  [[nodiscard]] bool has_ack() const { return (flags & kTcpAck) != 0; }
  [[nodiscard]] bool rst() const { return (flags & kTcpRst) != 0; }
  [[nodiscard]] bool fin() const { return (flags & kTcpFin) != 0; }
};

// parse_tcp parses |pkt| (starting at the IP header). Returns nullopt for anything that is not
// a well-formed, unfragmented IPv4/IPv6 TCP packet (IPv6 skips hop-by-hop, routing and
// destination-options headers).
[[nodiscard]] std::optional<TcpPacket> parse_tcp(std::span<const std::byte> pkt);

// AckSeen — an acknowledgment a peer sent and the (unscaled) window it carried.
struct AckSeen {
  std::uint32_t ack = 0;
  std::uint16_t window = 0;
};

// later_ack returns the later of two acknowledgments in sequence order (wrap-aware); on a tie
// |b|, the newer one (its window may have moved). Either may be absent.
[[nodiscard]] std::optional<AckSeen> later_ack(std::optional<AckSeen> a,
                                               std::optional<AckSeen> b);
// ack_of: the acknowledgment |pkt| carries (nullopt: no ACK flag, a RST, or not parsable).
[[nodiscard]] std::optional<AckSeen> ack_of(std::span<const std::byte> pkt);

// latest_ack returns the latest ACK (in sequence order) among |packets| (IP packets of one
// connection from its peer, oldest first), with the window of the last packet that carried
// it; nullopt when none carries an ACK. RSTs and unparsable packets are skipped.
[[nodiscard]] std::optional<AckSeen> latest_ack(std::span<const std::vector<std::byte>> packets);

// checksum_fold: one's-complement sum of |data| added to |initial| (not complemented).
[[nodiscard]] std::uint32_t checksum_add(std::span<const std::byte> data,
                                         std::uint32_t initial = 0);
[[nodiscard]] std::uint16_t checksum_fold(std::uint32_t sum);

// tcp_checksum computes the TCP checksum (complemented, ready to store, network order value as
// host integer) of the parsed packet, ignoring what its checksum field holds.
[[nodiscard]] std::uint16_t tcp_checksum(std::span<const std::byte> pkt, const TcpPacket& p);
// tcp_checksum_ok verifies the stored checksum.
[[nodiscard]] bool tcp_checksum_ok(std::span<const std::byte> pkt, const TcpPacket& p);
// set_tcp_checksum stores tcp_checksum() in the packet's checksum field, whatever it held (a
// packet recorded at another host's tc hook may carry only the pseudo-header sum of a
// CHECKSUM_PARTIAL skb).
void set_tcp_checksum(std::span<std::byte> pkt, const TcpPacket& p);

// complete_partial_checksum finishes a checksum the kernel left partial (virtio-net
// VIRTIO_NET_HDR_F_NEEDS_CSUM): the 16-bit field at |csum_start + csum_offset| holds the
// pseudo-header sum; sum from |csum_start| to the end and store the complement. false when the
// offsets are out of range.
[[nodiscard]] bool complete_partial_checksum(std::span<std::byte> pkt, std::size_t csum_start,
                                             std::size_t csum_offset);

// shift_seq adds |delta| to the SEQ field and fixes the TCP checksum incrementally.
void shift_seq(std::span<std::byte> pkt, const TcpPacket& p, std::uint32_t delta);
// shift_ack adds |delta| to the ACK field (only when the ACK flag is set) and fixes the checksum.
void shift_ack(std::span<std::byte> pkt, const TcpPacket& p, std::uint32_t delta);

}  // namespace rendr::userstack
