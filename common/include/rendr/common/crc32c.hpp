// SPDX-License-Identifier: Apache-2.0
// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI/SCTP/ext4. Pure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace rendr {

// crc32c returns the CRC-32C of |data|, continuing from |crc| (0 for a fresh checksum).
// Uses the SSE4.2 crc32 instruction when the CPU has it, else a slicing-by-8 table.
[[nodiscard]] std::uint32_t crc32c(std::span<const std::byte> data, std::uint32_t crc = 0);

// crc32c_portable_for_test is the table path alone, so tests can compare both paths.
[[nodiscard]] std::uint32_t crc32c_portable_for_test(std::span<const std::byte> data,
                                                     std::uint32_t crc = 0);

}  // namespace rendr
