// SPDX-License-Identifier: Apache-2.0
// Offload switches of a test's own network devices (what `ethtool -K dev gro on` does, without
// needing ethtool: the legacy SIOCETHTOOL get/set commands). Tests use them to shape what the
// kernel hands a tc hook: with TSO/GSO off at the sender, segments cross a veth at MTU size;
// with GRO on at the receiver, veth's NAPI merges them again (up to gro_max_size). Throws
// std::runtime_error (with the errno text) when the device refuses.
#pragma once

#include "support/netns.hpp"

#include <string>

namespace rendr::test {

enum class Offload { gro, tso, gso };

// set_offload switches |what| on |dev| inside |ns| and returns the value read back.
bool set_offload(const Netns& ns, const std::string& dev, Offload what, bool on);
// offload_on reads |what| of |dev| inside |ns|.
bool offload_on(const Netns& ns, const std::string& dev, Offload what);

}  // namespace rendr::test
