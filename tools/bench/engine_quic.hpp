// SPDX-License-Identifier: Apache-2.0
// The quic carrier in `rendr-bench engine` (docs/bench.md "engine", key quic_stream_ratio): the
// same transfer over path 1 of the lab through a tcp path and through a quic stream path (one
// listener taking both: listen_tcp + add_quic, certificates from `rendrctl cert`'s code in a
// temporary directory), alternated, medians of each.
#pragma once

#include "engine_bench_rig.hpp"

#include <cstdint>
#include <functional>
#include <string>

namespace rendr::bench {

struct QuicStreamResult {
  double tcp_mbps = 0;   // medians, MB/s
  double quic_mbps = 0;
  double ratio = 0;      // quic_mbps / tcp_mbps (median of the per-run ratios)
  std::string error;     // empty on success
};

[[nodiscard]] QuicStreamResult measure_quic_stream(
    EngineRig& rig, std::uint64_t bytes, int runs,
    const std::function<void(const std::string&)>& progress);

}  // namespace rendr::bench
