// SPDX-License-Identifier: Apache-2.0
// Logging facade (STYLE G1). A LogSink is a plain callable; libraries take one at construction
// (repair does) or use the process-wide default sink, which writes to stderr and can be replaced
// once at start-up by the composition root. Libraries never print to stdout. Log lines carry
// key=value identity (conn=... stage=...) so a grep follows one migration (G2).
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace rendr {

enum class LogLevel { error = 0, warn = 1, info = 2, debug = 3, trace = 4 };

using LogSink = std::function<void(LogLevel, std::string_view)>;

[[nodiscard]] std::string_view to_string(LogLevel level);

// default_log_sink writes "rendr <level> <msg>" lines to stderr, filtered by
// set_log_level() (initially from RENDR_LOG=error|warn|info|debug|trace, default warn).
void default_log_sink(LogLevel level, std::string_view msg);
void set_log_level(LogLevel level);
[[nodiscard]] LogLevel log_level();

// Logger wraps a sink (empty -> default sink) with level helpers.
class Logger {
 public:
  explicit Logger(LogSink sink = {}) : sink_(std::move(sink)) {}
  void log(LogLevel level, std::string_view msg) const;
  void error(std::string_view m) const { log(LogLevel::error, m); }
  void warn(std::string_view m) const { log(LogLevel::warn, m); }
  void info(std::string_view m) const { log(LogLevel::info, m); }
  void debug(std::string_view m) const { log(LogLevel::debug, m); }

 private:
  LogSink sink_;
};

}  // namespace rendr
