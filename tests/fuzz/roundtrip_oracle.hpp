// SPDX-License-Identifier: Apache-2.0
// The snapshot decoder's oracle, shared by the libFuzzer target and the Catch2 replay test:
// arbitrary bytes either decode into a snapshot that validates and re-encodes to exactly the
// input bytes, or are refused with EINVAL / ENOTSUP and a message. Pure; no I/O.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace rendr::test {

// check_decode_roundtrip returns an empty string when |input| is handled correctly, else what
// went wrong.
[[nodiscard]] std::string check_decode_roundtrip(std::span<const std::byte> input);

}  // namespace rendr::test
