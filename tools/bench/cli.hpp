// SPDX-License-Identifier: Apache-2.0
// Tiny declarative command-line parser for rendr-bench subcommands: each option is declared once
// with its help text, so --help and the error messages always agree with what is parsed. Accepts
// "--name value", "--name=value" and bare flags. Errors name the option and what was expected.
#pragma once

#include <rendr/common/result.hpp>

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rendr::bench {

class ArgParser {
 public:
  // |usage| is the synopsis line ("rendr-bench repair [--json] [options]"), |about| a paragraph.
  ArgParser(std::string usage, std::string about);

  void flag(std::string name, bool* out, std::string help);
  void uint(std::string name, std::uint64_t* out, std::uint64_t min, std::uint64_t max,
            std::string help);
  void integer(std::string name, std::int64_t* out, std::int64_t min, std::int64_t max,
               std::string help);
  // str accepts any non-empty value (shown as |metavar| in --help).
  void str(std::string name, std::string* out, std::string metavar, std::string help);
  // on_off accepts on|off|true|false|1|0.
  void on_off(std::string name, bool* out, std::string help);
  // choices accepts a comma-separated subset of |allowed| (at least one).
  void choices(std::string name, std::vector<std::string>* out, std::vector<std::string> allowed,
               std::string help);

  // parse fills the outputs. Returns true when the caller should run, false when --help was
  // printed (to stdout); an Error (EINVAL) names the offending argument.
  [[nodiscard]] Result<bool> parse(std::span<char* const> args);
  [[nodiscard]] std::string help() const;

 private:
  struct Opt {
    std::string name;
    std::string metavar;  // empty for flags
    std::string help;
    std::string default_text;
    std::function<Status(std::string_view)> set;
  };
  const Opt* find(std::string_view name) const;
  std::string usage_;
  std::string about_;
  std::vector<Opt> opts_;
};

}  // namespace rendr::bench
