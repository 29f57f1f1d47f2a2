// SPDX-License-Identifier: Apache-2.0
// The batch phase of `rendr-bench repair`: N established loopback sockets checkpointed, released
// and restored phase by phase (each phase timed as a whole), then an evenly spaced sample checked
// with a 1-byte echo. The client ends live in a child process (own descriptor table), so 10000
// pairs fit under a 20000-descriptor limit.
#pragma once

#include "progress.hpp"

#include <rendr/common/result.hpp>
#include <rendr/repair/repair.hpp>

#include <cstdint>

namespace rendr::bench {

struct BatchResult {
  std::uint64_t sockets = 0;
  double checkpoint_s = 0;
  double release_s = 0;
  double restore_s = 0;
  std::uint64_t verified = 0;
  [[nodiscard]] double total_s() const { return checkpoint_s + restore_s; }
  [[nodiscard]] double per_socket_us() const {
    return sockets == 0 ? 0 : total_s() * 1e6 / static_cast<double>(sockets);
  }
};

// run_batch runs the batch phase with |batch| sockets and verifies |batch_verify| of them.
[[nodiscard]] Result<BatchResult> run_batch(repair::Repairer& rep,
                                            const repair::RestoreOptions& ro, std::uint64_t batch,
                                            std::uint64_t batch_verify, Progress& prog);

}  // namespace rendr::bench
