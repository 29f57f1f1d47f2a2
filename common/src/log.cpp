// SPDX-License-Identifier: Apache-2.0
#include <rendr/common/log.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace rendr {
namespace {

LogLevel level_from_env() {
  const char* v = std::getenv("RENDR_LOG");
  if (v == nullptr) {
    return LogLevel::warn;
  }
  for (int l = 0; l <= 4; ++l) {
    if (to_string(static_cast<LogLevel>(l)) == v) {
      return static_cast<LogLevel>(l);
    }
  }
  return LogLevel::warn;
}

std::atomic<int>& level_ref() {
  static std::atomic<int> level{static_cast<int>(level_from_env())};
  return level;
}

}  // namespace

std::string_view to_string(LogLevel level) {
  switch (level) {
    case LogLevel::error: return "error";
    case LogLevel::warn: return "warn";
    case LogLevel::info: return "info";
    case LogLevel::debug: return "debug";
    case LogLevel::trace: return "trace";
  }
  return "?";
}

void set_log_level(LogLevel level) { level_ref().store(static_cast<int>(level)); }
LogLevel log_level() { return static_cast<LogLevel>(level_ref().load()); }

void default_log_sink(LogLevel level, std::string_view msg) {
  if (static_cast<int>(level) > level_ref().load()) {
    return;
  }
  std::fprintf(stderr, "rendr %.*s %.*s\n", static_cast<int>(to_string(level).size()),
               to_string(level).data(), static_cast<int>(msg.size()), msg.data());
}

void Logger::log(LogLevel level, std::string_view msg) const {
  if (sink_) {
    sink_(level, msg);
  } else {
    default_log_sink(level, msg);
  }
}

}  // namespace rendr
