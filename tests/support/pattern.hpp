// SPDX-License-Identifier: Apache-2.0
// Deterministic, seekable test data. The stream for a seed is a sequence of 64 KiB chunks; chunk
// j is an 8-byte little-endian j followed by bytes 8.. of a base block derived from the seed
// (SHA-256(seed || u32be(i)) for i = 0..2047). Any lost, duplicated or reordered range shows up
// as a mismatch at its offset. tests/support/tcp_peer.py implements the same stream in Python.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace rendr::test {

class Pattern {
 public:
  static constexpr std::size_t kChunk = 64 * 1024;
  explicit Pattern(std::uint32_t seed);
  // fill writes the stream bytes [offset, offset + out.size()).
  void fill(std::uint64_t offset, std::span<std::byte> out) const;
  // mismatch returns the index in |data| of the first byte that differs from the stream at
  // |offset|, or -1 when all match.
  [[nodiscard]] long long mismatch(std::uint64_t offset, std::span<const std::byte> data) const;
  // sha256_hex of the first |length| stream bytes.
  [[nodiscard]] std::string sha256_hex(std::uint64_t length) const;

 private:
  std::vector<std::byte> base_;
};

std::string sha256_hex(std::span<const std::byte> data);

}  // namespace rendr::test
