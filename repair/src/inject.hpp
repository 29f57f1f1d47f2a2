// SPDX-License-Identifier: Apache-2.0
// Private: forge one TCP segment "from the peer" and hand it to the local stack through a raw
// socket (IP_HDRINCL / IPPROTO_RAW). Used to recreate a received FIN and to kick an immediate
// ACK after restore. Needs CAP_NET_RAW.
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>
#include <rendr/repair/sys.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace rendr::repair {

struct ForgedSegment {
  Endpoint from;  // the peer
  Endpoint to;    // our socket
  std::uint32_t seq = 0;
  std::uint32_t ack = 0;
  std::uint16_t window = 0;  // already scaled down by the peer's window scale
  bool fin = false;
};

// build_segment returns the IP packet (IPv4 or IPv6 header + 20-byte TCP header, checksummed).
[[nodiscard]] std::vector<std::byte> build_segment(const ForgedSegment& seg);

// inject_segment sends |seg| to the local stack with SO_MARK |mark|.
[[nodiscard]] Status inject_segment(Sys& sys, const ForgedSegment& seg, std::uint32_t mark);

}  // namespace rendr::repair
