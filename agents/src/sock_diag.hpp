// SPDX-License-Identifier: Apache-2.0
// sock_diag: which TCP sockets of this network namespace some process still holds, asked of
// the kernel (NETLINK_SOCK_DIAG). The agent uses it to notice tracked flows whose server closed
// the socket without telling it. Private to rendr-agent.
#pragma once

#include <rendr/common/result.hpp>

#include <rendr/common/endpoint.hpp>

#include <cstddef>
#include <set>
#include <string>
#include <vector>

namespace rendr::agents {

// held_tcp_sockets returns the tuples ("local->remote", as FourTuple::to_string) of every IPv4
// and IPv6 TCP socket in the calling thread's netns that a file descriptor still refers to.
// Sockets only the kernel holds (closed by their owner and finishing, TIME_WAIT) and listeners
// are left out. Errors: the netlink socket's (EPERM, ENOBUFS, ...), with context.
[[nodiscard]] Result<std::set<std::string>> held_tcp_sockets();

// held_tcp_sockets(only) answers the same for |only|'s tuples alone (the result holds those of
// them that are held). Up to kHeldLookupMax tuples are looked up one by one (a direct hash
// lookup in the kernel each); more take the full dump above, which walks the kernel's whole
// established table (262 144 buckets here: ~2 ms per address family, whatever the netns holds).
inline constexpr std::size_t kHeldLookupMax = 256;
[[nodiscard]] Result<std::set<std::string>> held_tcp_sockets(const std::vector<FourTuple>& only);

}  // namespace rendr::agents
