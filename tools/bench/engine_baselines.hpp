// SPDX-License-Identifier: Apache-2.0
// The engine bench's baselines and probes (engine_baselines.cpp): raw TCP / MPTCP sockets in the
// multipath lab, a raw transfer, the echo failover runs (raw and rendr) and the RSS of idle flows.
#pragma once

#include "engine_bench_rig.hpp"
#include "thread_cpu.hpp"

#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/engine/listener.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#ifndef IPPROTO_MPTCP
#define IPPROTO_MPTCP 262
#endif

namespace rendr::bench {

// progress: one line of the engine bench's progress on stderr.
inline void progress(const std::string& s) {
  std::fprintf(stderr, "rendr-bench engine: %s\n", s.c_str());
}

// ms: a steady-clock duration in milliseconds.
inline double ms(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// listen_raw / connect_raw: a plain (IPPROTO_TCP) or MPTCP socket, listening on any port (its
// number in |port|) or connected to ip:port.
Result<UniqueFd> listen_raw(int proto, std::uint16_t* port);
Result<UniqueFd> connect_raw(int proto, const std::string& ip, std::uint16_t port);

// raw_transfer: |total| bytes over a plain TCP connection client ns -> server ns (path 1).
struct RawResult {
  double seconds = 0;
  CpuTime writer_cpu;  // the sending thread's CPU time
  CpuTime reader_cpu;  // the receiving (calling) thread's
};
Result<RawResult> raw_transfer(EngineRig& rig, std::uint64_t total);

// FailoverRun: echo every 5 ms, the active path silently dropped after kPreDrop messages.
struct FailoverRun {
  double worst_ms = 0;
  double median_ms = 0;
  double worst_before_ms = 0;      // worst of the kPreDrop messages before the drop
  double worst_after_same_ms = 0;  // worst of the kPreDrop messages right after it
  bool ok = false;
};
inline constexpr int kPreDrop = 60;    // 300 ms at 5 ms
inline constexpr int kPostDrop = 300;  // 1.5 s after the drop

FailoverRun raw_echo_failover(EngineRig& rig, int lfd, const std::string& ip, std::uint16_t port);
FailoverRun rendr_echo_failover(EngineRig& rig, Listener& l, Mode mode);

// rss_bytes: this process's resident set. idle_flow_bytes: RSS growth per idle flow (both ends
// in this process, one tcp path each, on loopback in the client namespace).
std::uint64_t rss_bytes();
Result<double> idle_flow_bytes(EngineRig& rig, std::uint64_t n);

}  // namespace rendr::bench
