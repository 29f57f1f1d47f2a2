// SPDX-License-Identifier: Apache-2.0
// The agent message oracle shared by the libFuzzer target (agent_decode_fuzz.cpp), its seed
// generator and the Catch2 replay test: hostile bytes on the agent channel (length-prefixed
// frames through FrameReader, fed in pieces) and on the control socket (one Message per
// datagram) must give clean errors or messages that re-encode to the same bytes, with every
// typed read a handler makes answering without crashing.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace rendr::test {

// check_agent_input returns "" when |in| is handled correctly, else what went wrong.
[[nodiscard]] std::string check_agent_input(std::span<const std::byte> in);

struct AgentSeed {
  std::string name;
  std::vector<std::byte> bytes;
};
// agent_seeds: valid framed messages of every type the agents exchange, plus a few broken ones.
[[nodiscard]] std::vector<AgentSeed> agent_seeds();

}  // namespace rendr::test
