// SPDX-License-Identifier: Apache-2.0
#include "libbpf_util.hpp"

#include <rendr/ebpf/log.hpp>

#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <mutex>

namespace rendr::ebpf {
namespace {

std::mutex g_sink_mu;
LogSink g_sink;  // the one global mutable (A8): the logger sink

thread_local detail::LibbpfWarnings* t_warnings = nullptr;

LogLevel shifted(libbpf_print_level level) {
  switch (level) {
    case LIBBPF_WARN:
      return LogLevel::info;
    case LIBBPF_INFO:
      return LogLevel::debug;
    case LIBBPF_DEBUG:
    default:
      return LogLevel::trace;
  }
}

int print_cb(libbpf_print_level level, const char* fmt, va_list args) {
  // libbpf hands the whole verifier log to one call (tens of KiB); the error is at its end, so
  // format all of it rather than a fixed-size head.
  char small[1024];
  va_list copy;
  va_copy(copy, args);
  int n = std::vsnprintf(small, sizeof small, fmt, args);
  if (n < 0) {
    va_end(copy);
    return 0;
  }
  std::string line;
  if (static_cast<std::size_t>(n) < sizeof small) {
    line.assign(small, static_cast<std::size_t>(n));
  } else {
    line.resize(static_cast<std::size_t>(n) + 1);
    std::vsnprintf(line.data(), line.size(), fmt, copy);
    line.resize(static_cast<std::size_t>(n));
  }
  va_end(copy);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) {
    line.pop_back();
  }
  if (level == LIBBPF_WARN) {
    detail::append_warning(line);
    if (detail::warnings_quiet()) {
      return n;
    }
  }
  LogSink sink;
  {
    std::lock_guard<std::mutex> lock(g_sink_mu);
    sink = g_sink;
  }
  // libbpf prefixes most of its own lines with "libbpf: "; say it once.
  const bool prefixed = line.rfind("libbpf: ", 0) == 0;
  Logger(sink).log(shifted(level), prefixed ? line : "libbpf: " + line);
  return n;
}

}  // namespace

void set_libbpf_log_sink(LogSink sink) {
  detail::ensure_libbpf_logging();
  std::lock_guard<std::mutex> lock(g_sink_mu);
  g_sink = std::move(sink);
}

namespace detail {

void ensure_libbpf_logging() {
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(print_cb); });
}

void append_warning(const std::string& line) {
  if (t_warnings == nullptr) {
    return;
  }
  std::string& t = t_warnings->text_;
  t += line;
  t += " | ";
  constexpr std::size_t kKeep = 8192;
  if (t.size() > kKeep) {
    t.erase(0, t.size() - kKeep);
  }
}

bool warnings_quiet() { return t_warnings != nullptr && t_warnings->quiet_; }

LibbpfWarnings::LibbpfWarnings(bool quiet) : prev_(t_warnings), quiet_(quiet) {
  t_warnings = this;
}
LibbpfWarnings::~LibbpfWarnings() { t_warnings = prev_; }

std::string LibbpfWarnings::tail(std::size_t max) const {
  std::string t = text_;
  while (t.size() >= 3 && t.compare(t.size() - 3, 3, " | ") == 0) {
    t.resize(t.size() - 3);
  }
  if (t.size() > max) {
    t = "..." + t.substr(t.size() - max);
  }
  return t;
}

Error libbpf_error(int ret, std::string context) {
  int err = ret < 0 ? -ret : errno;
  if (err == 0) {
    err = EINVAL;
  }
  return errno_error(std::move(context), err);
}

Result<unsigned> possible_cpus() {
  static const int n = libbpf_num_possible_cpus();
  if (n <= 0) {
    return libbpf_error(n, "libbpf_num_possible_cpus");
  }
  return static_cast<unsigned>(n);
}

Result<std::vector<std::byte>> lookup_percpu(const bpf_map* map, const void* key,
                                             std::size_t key_size, std::size_t value_size,
                                             const std::string& what) {
  auto ncpu = possible_cpus();
  if (!ncpu) {
    return ncpu.error().with_context(what);
  }
  std::vector<std::byte> buf(static_cast<std::size_t>(*ncpu) * value_size);
  int err = bpf_map__lookup_elem(map, key, key_size, buf.data(), buf.size(), 0);
  if (err != 0) {
    return libbpf_error(err, what);
  }
  return buf;
}

}  // namespace detail
}  // namespace rendr::ebpf
