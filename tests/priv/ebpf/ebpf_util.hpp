// SPDX-License-Identifier: Apache-2.0
// Helpers for the ebpf priv tests beyond the shared ones (support/sockets.hpp for sockets,
// support/require_result.hpp for Result assertions, both included here).
#pragma once

#include "support/require_result.hpp"
#include "support/sockets.hpp"

#include <string>

namespace rendr::test {

// ifindex_of resolves |name| in the calling thread's netns (throws if absent).
int ifindex_of(const std::string& name);

}  // namespace rendr::test
