// SPDX-License-Identifier: Apache-2.0
// The engine echo listener `rendr-bench hostile` floods (hostile_listener.cpp) and the listener
// key both sides of that bench share.
#pragma once

#include <cstdint>
#include <vector>

namespace rendr::bench {

// bench_key: the listener key of `hostile --listener-key` (32 bytes; docs/security.md
// "Listener key").
const std::vector<std::uint8_t>& bench_key();

}  // namespace rendr::bench
