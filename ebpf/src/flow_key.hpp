// SPDX-License-Identifier: Apache-2.0
// Conversions between rendr's Endpoint/FourTuple and the shared BPF key structs. IPv4-mapped
// IPv6 addresses (::ffff:a.b.c.d, what a dual-stack socket reports) become IPv4, because that is
// what the packets carry.
#pragma once

#include "shared/flow_shared.h"

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>

#include <array>
#include <cstdint>

namespace rendr::ebpf::detail {

// Family and 16 address bytes as the BPF side sees them.
struct WireAddress {
  std::uint8_t family = RENDR_FAMILY_V4;
  std::array<std::uint8_t, 16> addr{};
};

[[nodiscard]] WireAddress wire_address(const Endpoint& e);

// flow_key builds the key of a packet travelling |src| -> |dst| (not normalised).
// EINVAL when the families differ.
[[nodiscard]] Result<rendr_flow_key> flow_key(const Endpoint& src, const Endpoint& dst);

// freeze_key is the normalised key of |t|: the same for both directions.
[[nodiscard]] Result<rendr_flow_key> freeze_key(const FourTuple& t);

// steer_key is the key of packets from the peer (|t|.remote) to the VIP (|t|.local).
[[nodiscard]] Result<rendr_flow_key> steer_key(const FourTuple& t);
// tuple_from_steer_key inverts steer_key.
[[nodiscard]] FourTuple tuple_from_steer_key(const rendr_flow_key& k);

}  // namespace rendr::ebpf::detail
