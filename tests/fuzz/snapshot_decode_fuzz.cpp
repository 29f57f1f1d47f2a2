// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for rendr::decode_snapshot ("decoding arbitrary bytes never crashes
// and never yields a half-valid snapshot"). Built with clang++ -fsanitize=fuzzer,address,undefined
// by tests/fuzz/CMakeLists.txt; the oracle is roundtrip_oracle.cpp.
//
// A random mutation almost never carries a correct CRC-32C, so most inputs would stop at the
// checksum. The custom mutator therefore repairs the framing (body length, checksum, and in half
// the cases magic/version/flags) for 3 of 4 mutants, which drives mutations into the body parser
// and validate(); the 4th mutant keeps its raw header so the framing checks stay fuzzed too.
#include "roundtrip_oracle.hpp"

#include <rendr/common/crc32c.hpp>
#include <rendr/common/snapshot_codec.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

extern "C" std::size_t LLVMFuzzerMutate(std::uint8_t* data, std::size_t size,
                                        std::size_t max_size);

namespace {

void put_be32(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto input = std::as_bytes(std::span(data, size));
  const std::string why = rendr::test::check_decode_roundtrip(input);
  if (!why.empty()) {
    std::fprintf(stderr, "snapshot decode oracle failed: %s\n", why.c_str());
    std::abort();
  }
  return 0;
}

extern "C" std::size_t LLVMFuzzerCustomMutator(std::uint8_t* data, std::size_t size,
                                               std::size_t max_size, unsigned int seed) {
  size = LLVMFuzzerMutate(data, size, max_size);
  constexpr std::size_t kFrame = rendr::kSnapshotHeaderSize + 4;
  if (seed % 4 == 0 || size < kFrame) {
    return size;
  }
  if (seed % 8 >= 4) {
    data[0] = 'R';
    data[1] = 'S';
    data[2] = 'N';
    data[3] = 'P';
    data[4] = static_cast<std::uint8_t>(rendr::TcpSnapshot::kVersion >> 8);
    data[5] = static_cast<std::uint8_t>(rendr::TcpSnapshot::kVersion);
    data[6] = 0;
    data[7] = 0;
  }
  put_be32(data + 8, static_cast<std::uint32_t>(size - kFrame));
  const auto crc = rendr::crc32c(std::as_bytes(std::span(data, size - 4)));
  put_be32(data + size - 4, crc);
  return size;
}
