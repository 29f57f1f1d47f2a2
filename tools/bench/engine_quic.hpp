// SPDX-License-Identifier: Apache-2.0
// The quic carrier in `rendr-bench engine` (docs/bench.md "engine", key quic_stream_ratio): the
// same transfer over path 1 of the lab through a tcp path and through a quic stream path (one
// listener taking both: listen_tcp + add_quic, certificates from `rendrctl cert`'s code in a
// temporary directory), alternated, medians of each. And G3 on one path (keys g3_quic_*):
// QUIC DATAGRAMs at a fixed rate over one quic datagram path, first without, then with 10
// in-place rebinds (connection-ID migrations), each phase for the same time on the same flow.
#pragma once

#include "engine_bench_rig.hpp"

#include <rendr/common/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

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

struct G3QuicOptions {
  double seconds = 10;         // per phase (baseline, then with rebinds)
  std::uint64_t pps = 100000;  // offered packets per second
  std::size_t size = 1024;     // bytes per packet
  int rebinds = 10;            // in the second phase, evenly spread
};

struct G3QuicResult {
  double offered_pps = 0;
  double pps = 0;           // delivered per second over both phases (first write to last read)
  std::uint64_t sent = 0;   // packets written (both phases)
  std::uint64_t missing = 0;
  std::uint64_t dups = 0;
  int rebinds = 0;          // rebinds that succeeded
  double rtt_p95_ms = 0;    // echoed samples (every 100th packet), phase with rebinds
  double rtt_p95_baseline_ms = 0;
  double rtt_p50_ms = 0;
  double rtt_p50_baseline_ms = 0;
  double rtt_max_ms = 0;    // worst echoed sample with rebinds
  double rtt_max_baseline_ms = 0;
  std::uint64_t migrations = 0;  // engine migrations of the flow (rebinds are not migrations)
  std::uint64_t retransmits = 0;  // client's RTO re-sends (the engine's, over both phases)
  // CPU seconds over both phases: the whole process, and the dialer's and listener's io
  // threads (QUIC, TLS and the engine for each side); per delivered packet in microseconds.
  double cpu_s = 0;
  double cpu_us_per_packet = 0;
  double dialer_io_cpu_s = 0;
  double listener_io_cpu_s = 0;
  std::string error;  // empty on success
};

[[nodiscard]] G3QuicResult measure_g3_quic(
    EngineRig& rig, const G3QuicOptions& o,
    const std::function<void(const std::string&)>& progress);
// rtt_ratio: rtt_p95_ms / rtt_p95_baseline_ms (0 without a baseline).
[[nodiscard]] double g3_quic_rtt_ratio(const G3QuicResult& r);
// g3_quic_targets_met: all offered packets delivered per second (>= 99 %), 0 missing, 0 dups,
// every rebind done, RTT p95 ratio < 2.
[[nodiscard]] bool g3_quic_targets_met(const G3QuicResult& r, int rebinds = 10);
void print_g3_quic(const G3QuicResult& r);
// write_g3_quic_json: the g3_quic_* keys (null when |r| is null: the section did not run).
void write_g3_quic_json(JsonWriter& j, const G3QuicResult* r);

// G1 over quic (section g1quic, key g1_quic_ratio): rig.hpp's g1() with two quic stream
// paths (paths 1 and 2 of the lab, one listen_quic listener).
[[nodiscard]] G1Result measure_g1_quic(EngineRig& rig, std::uint64_t bytes,
                                       const std::function<void(const std::string&)>& progress);

// Datagram capacity (section dgramcap, keys udpflow_pps, quic_dgram_pps,
// quic_dgram_vs_udpflow_ratio): one packet flow of |size|-byte packets offered at |pps| for
// |seconds| over one quic datagram path and over one udpflow path on lab path 1, alternated
// (quic first), |runs| of each; the writer and reader are G3's (one implementation).
struct DgramCapOptions {
  double seconds = 3;
  std::uint64_t pps = 400000;  // offered; above what either carrier takes here
  std::size_t size = 1024;
  int runs = 2;
};

struct DgramCapRun {
  bool quic = false;
  double pps = 0;  // delivered per second (first write to last read)
  std::uint64_t sent = 0;
  std::uint64_t missing = 0;
  std::uint64_t dups = 0;
};

struct DgramCapResult {
  double offered_pps = 0;
  double quic_pps = 0;        // median delivered pps over the quic runs
  double udpflow_pps = 0;     // median over the udpflow runs
  double ratio = 0;           // quic_pps / udpflow_pps
  std::uint64_t missing = 0;  // summed over all runs
  std::uint64_t dups = 0;
  std::vector<DgramCapRun> runs;  // in the order run
  std::string error;
};

[[nodiscard]] DgramCapResult measure_dgram_capacity(
    EngineRig& rig, const DgramCapOptions& o,
    const std::function<void(const std::string&)>& progress);
void print_dgram_capacity(const DgramCapResult& r);
// write_dgram_capacity_json: the dgramcap keys (null when |r| is null).
void write_dgram_capacity_json(JsonWriter& j, const DgramCapResult* r);

}  // namespace rendr::bench
