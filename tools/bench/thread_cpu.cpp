// SPDX-License-Identifier: Apache-2.0
#include "bench/thread_cpu.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

namespace rendr::bench {

CpuTime this_thread_cpu() {
  rusage ru{};
  ::getrusage(RUSAGE_THREAD, &ru);
  return {static_cast<double>(ru.ru_utime.tv_sec) + static_cast<double>(ru.ru_utime.tv_usec) / 1e6,
          static_cast<double>(ru.ru_stime.tv_sec) + static_cast<double>(ru.ru_stime.tv_usec) / 1e6};
}

namespace {

// stat_cpu reads utime and stime (fields 14 and 15) of a /proc .../stat file.
CpuTime stat_cpu(const std::string& path) {
  const double hz = static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::ifstream st(path);
  std::string line;
  std::getline(st, line);
  // Fields after the ")" that closes comm: state is field 3, utime 14, stime 15.
  const auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 > line.size()) {
    return {};
  }
  std::istringstream is(line.substr(close + 2));
  std::string field;
  unsigned long long utime = 0;
  unsigned long long stime = 0;
  for (int i = 3; i <= 15 && is >> field; ++i) {
    if (i == 14) {
      utime = std::stoull(field);
    } else if (i == 15) {
      stime = std::stoull(field);
    }
  }
  return {static_cast<double>(utime) / hz, static_cast<double>(stime) / hz};
}

// by_name sums the threads under |task_dir| per comm.
std::map<std::string, CpuTime> by_name(const std::string& task_dir) {
  std::map<std::string, CpuTime> m;
  DIR* d = ::opendir(task_dir.c_str());
  if (d == nullptr) {
    return m;
  }
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') {
      continue;
    }
    const std::string base = task_dir + "/" + e->d_name;
    std::ifstream comm(base + "/comm");
    std::string c;
    std::getline(comm, c);
    m[c] = m[c] + stat_cpu(base + "/stat");
  }
  ::closedir(d);
  return m;
}

}  // namespace

CpuTime named_threads_cpu(const std::string& name) {
  const auto m = by_name("/proc/self/task");
  const auto it = m.find(name);
  return it == m.end() ? CpuTime{} : it->second;
}

std::map<std::string, CpuTime> threads_cpu_by_name(pid_t pid) {
  return by_name("/proc/" + std::to_string(pid) + "/task");
}

CpuTime process_cpu(pid_t pid) { return stat_cpu("/proc/" + std::to_string(pid) + "/stat"); }

}  // namespace rendr::bench
