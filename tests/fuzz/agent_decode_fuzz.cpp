// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the agents' message decoder and frame reader: the bytes a peer agent
// sends on the TLS channel and a local client on the control socket. Built with clang++
// -fsanitize=fuzzer,address,undefined by tests/fuzz/CMakeLists.txt; the oracle is
// agent_oracle.cpp.
#include "agent_oracle.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string why = rendr::test::check_agent_input(std::as_bytes(std::span(data, size)));
  if (!why.empty()) {
    std::fprintf(stderr, "agent oracle failed: %s\n", why.c_str());
    std::abort();
  }
  return 0;
}
