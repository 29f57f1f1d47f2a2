// SPDX-License-Identifier: Apache-2.0
// Binary and JSON encodings of TcpSnapshot. The binary form is what travels between agents and
// what `rendrctl snapshot` files hold; docs/repair.md ("Snapshot format") describes it byte by
// byte:  magic "RSNP" | u16 version | u16 flags(0) | u32 body length | body | u32 CRC-32C.
// All integers are big-endian. decode_snapshot() accepts only a complete, checksummed, valid
// snapshot: arbitrary input never crashes it and never yields a half-valid value.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/common/tcp_snapshot.hpp>

#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace rendr {

inline constexpr std::size_t kSnapshotHeaderSize = 12;

[[nodiscard]] std::vector<std::byte> encode_snapshot(const TcpSnapshot& s);

// decode_snapshot parses |data|. Errors (all std::errc::invalid_argument or
// std::errc::not_supported for a newer version) name what is wrong: bad magic, unknown version,
// truncated, length mismatch, checksum mismatch, field out of range, trailing bytes.
[[nodiscard]] Result<TcpSnapshot> decode_snapshot(std::span<const std::byte> data);

// snapshot_to_json renders a human-readable JSON object (queues as lengths, CRC-32C and a short
// hex preview; never the full payload unless |full_queues|).
[[nodiscard]] std::string snapshot_to_json(const TcpSnapshot& s, bool full_queues = false);

}  // namespace rendr
