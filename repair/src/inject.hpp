// SPDX-License-Identifier: Apache-2.0
// Private: forge one TCP segment "from the peer" and hand it to the local stack through a raw
// socket (IP_HDRINCL / IPPROTO_RAW). Used to recreate a received FIN and to kick an immediate
// ACK after restore. Needs CAP_NET_RAW.
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/tcp_snapshot.hpp>
#include <rendr/repair/sys.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace rendr::repair {

struct ForgedSegment {
  Endpoint from;  // the peer
  Endpoint to;    // our socket
  std::uint32_t seq = 0;
  std::uint32_t ack = 0;
  std::uint16_t window = 0;  // already scaled down by the peer's window scale
  bool fin = false;
  // Bytes of data after the header (zeros): a segment the peer must answer (ask_peer_ack).
  std::uint16_t payload = 0;
};

// peer_probe is a segment from our side of |snap|'s connection carrying one byte below snd_una -
// data the peer already acknowledged: a receiver answers such a duplicate at once with an ACK of
// its rcv_nxt and its current window (ask_peer_ack, and the window probe of a restored
// CLOSE_WAIT socket, which the kernel does not probe itself).
[[nodiscard]] ForgedSegment peer_probe(const TcpSnapshot& snap);

// build_segment returns the IP packet (IPv4 or IPv6 header + 20-byte TCP header + |payload| zero
// bytes, checksummed).
[[nodiscard]] std::vector<std::byte> build_segment(const ForgedSegment& seg);

// inject_segment sends |seg| to the local stack with SO_MARK |mark| from a one-shot raw socket.
[[nodiscard]] Status inject_segment(Sys& sys, const ForgedSegment& seg, std::uint32_t mark);

// prepare_replay checks that |l3| is an IPv4/IPv6 TCP packet from |from| to |to| (addresses
// and ports; IPv6 without extension headers) and returns it with fresh IP and TCP checksums
// (a packet captured where checksum offload left them partial must still pass the local
// stack's check). Errors: EINVAL naming what does not match.
[[nodiscard]] Result<std::vector<std::byte>> prepare_replay(std::span<const std::byte> l3,
                                                            const Endpoint& from,
                                                            const Endpoint& to);

// inject_packets sends prepared packets to |to|'s stack from one raw socket with SO_MARK |mark|.
// Returns how many were sent; stops at the first error.
[[nodiscard]] Result<std::size_t> inject_packets(Sys& sys, const Endpoint& to,
                                                 std::span<const std::vector<std::byte>> pkts,
                                                 std::uint32_t mark);

// InjectCache keeps one raw socket per address family open between injections, so a restore does
// not pay socket() + SO_MARK + close() for its ACK kick. A raw socket injects into the netns it was
// created in, so each send names the netns it must reach by its SO_NETNS_COOKIE (read from the
// socket being restored); a cached socket from another netns is closed and replaced. Closes its
// sockets through |sys|, which must outlive it. One thread at a time, like its Repairer.
class InjectCache {
 public:
  explicit InjectCache(Sys& sys) : sys_(sys) {}
  InjectCache(const InjectCache&) = delete;
  InjectCache& operator=(const InjectCache&) = delete;
  ~InjectCache();

  // inject sends |seg| with SO_MARK |mark| into the netns identified by |netns_cookie|.
  [[nodiscard]] Status inject(const ForgedSegment& seg, std::uint32_t mark,
                              std::uint64_t netns_cookie);

 private:
  struct Entry {
    int fd = -1;
    std::uint64_t netns_cookie = 0;
    std::uint32_t mark = 0;
  };
  void drop(Entry& e);
  Sys& sys_;
  Entry entries_[2];  // [0] IPv4, [1] IPv6
};

}  // namespace rendr::repair
