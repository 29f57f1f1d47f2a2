// SPDX-License-Identifier: Apache-2.0
// Taking over the flow table of a steering program a dead gateway agent left attached (its tc
// filter keeps steering without the agent; a new agent that replaced it with an empty table
// would send every flow living on a non-default backend to the default one).
#pragma once

#include <rendr/common/result.hpp>

#include <cstddef>
#include <cstdint>
#include <set>

namespace rendr::ebpf::detail {

struct AdoptResult {
  std::size_t adopted = 0;  // entries copied
  std::size_t dropped = 0;  // entries whose backend is not configured any more
};

// adopt_steer_table finds the tc filter at clsact ingress of |ifindex| with |handle| and
// |priority|. If one is there and its program is not |own_prog_id|, it copies the entries of that
// program's steer_flows map into |new_flows_fd|, translating each backend index through the
// backend tables (same device and next hop; |new_backends_fd| must be filled first). Maps already
// in |seen_maps| are skipped (the ingress and return programs share one table). Nothing there
// is not an error.
[[nodiscard]] Result<AdoptResult> adopt_steer_table(int ifindex, std::uint32_t handle,
                                                    std::uint32_t priority,
                                                    std::uint32_t own_prog_id, int new_flows_fd,
                                                    int new_backends_fd,
                                                    std::set<std::uint32_t>& seen_maps);

// prog_id_of: the kernel id of a loaded program (0 if it cannot be read).
[[nodiscard]] std::uint32_t prog_id_of(int prog_fd);

}  // namespace rendr::ebpf::detail
