// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the engine's wire v0 decoder, stream deframer and a server FlowCore fed
// hostile bytes ("malformed or hostile frames are rejected without crashing or
// corrupting the stream"). Built with clang++ -fsanitize=fuzzer,address,undefined by
// tests/fuzz/CMakeLists.txt; the oracle is wire_oracle.cpp.
#include "wire_oracle.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string why = rendr::test::check_wire_input(std::as_bytes(std::span(data, size)));
  if (!why.empty()) {
    std::fprintf(stderr, "wire oracle failed: %s\n", why.c_str());
    std::abort();
  }
  return 0;
}
