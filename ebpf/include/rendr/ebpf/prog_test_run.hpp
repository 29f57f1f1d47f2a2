// SPDX-License-Identifier: Apache-2.0
// BPF_PROG_TEST_RUN for skb programs (tc/sched_cls): runs a loaded program once on a crafted
// frame, in the kernel, without any device - the datapath test hook of STYLE T7. Lives in ebpf
// because only ebpf calls libbpf (M4). Any thread.
#pragma once

#include <rendr/common/result.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace rendr::ebpf {

struct SkbRunOptions {
  std::uint32_t mark = 0;  // skb->mark seen by the program
};

struct SkbRunResult {
  std::uint32_t retval = 0;  // the program's verdict (TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT...)
  std::vector<std::byte> data_out;  // the frame after the program ran
};

// test_run_skb runs |prog_fd| on |frame| (starting with an Ethernet header). Errors: EINVAL
// (frame shorter than an Ethernet header, program type without test-run), EPERM.
[[nodiscard]] Result<SkbRunResult> test_run_skb(int prog_fd, std::span<const std::byte> frame,
                                                const SkbRunOptions& options = {});

}  // namespace rendr::ebpf
