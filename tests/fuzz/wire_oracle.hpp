// SPDX-License-Identifier: Apache-2.0
// The wire decoder's oracle, shared by the libFuzzer target and the Catch2 replay
// test: arbitrary bytes either decode into a frame that re-encodes to exactly the input, or are
// refused with an engine error code and a message; any split of a byte stream deframes into the
// same frames; and a server FlowCore fed the bytes as stream and as datagrams neither crashes
// nor breaks its bounds. Pure; no I/O.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace rendr::test {

// check_wire_input returns an empty string when |input| is handled correctly, else what went
// wrong.
[[nodiscard]] std::string check_wire_input(std::span<const std::byte> input);

// wire_seeds: named valid inputs (single frames and length-prefixed frame streams).
struct WireSeed {
  std::string name;
  std::vector<std::byte> bytes;
};
[[nodiscard]] std::vector<WireSeed> wire_seeds();

}  // namespace rendr::test
