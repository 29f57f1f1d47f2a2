// SPDX-License-Identifier: Apache-2.0
// CPU time per thread, for CPU-seconds-per-GiB comparisons (rendr-bench engine): a thread's own
// user+system time (getrusage RUSAGE_THREAD), the summed time of this process's live threads
// with a given name (/proc/self/task/*/stat; the engine names its io threads), and the same per
// thread name or per process for another process (rendr-bench ingress: rendr-tun).
#pragma once

#include <map>
#include <string>

#include <sys/types.h>

namespace rendr::bench {

struct CpuTime {
  double user_s = 0;
  double sys_s = 0;
  [[nodiscard]] double total() const { return user_s + sys_s; }
  CpuTime operator-(const CpuTime& o) const { return {user_s - o.user_s, sys_s - o.sys_s}; }
  CpuTime operator+(const CpuTime& o) const { return {user_s + o.user_s, sys_s + o.sys_s}; }
};

// this_thread_cpu: the calling thread's CPU time so far.
[[nodiscard]] CpuTime this_thread_cpu();
// named_threads_cpu: summed CPU time of this process's threads called |name| (comm), now.
// A thread that exits between two readings takes its time with it: read around work that the
// threads outlive.
[[nodiscard]] CpuTime named_threads_cpu(const std::string& name);
// threads_cpu_by_name: the live threads of process |pid|, their CPU time summed per name.
[[nodiscard]] std::map<std::string, CpuTime> threads_cpu_by_name(pid_t pid);
// process_cpu: process |pid|'s CPU time, its exited threads included (/proc/<pid>/stat).
[[nodiscard]] CpuTime process_cpu(pid_t pid);

}  // namespace rendr::bench
