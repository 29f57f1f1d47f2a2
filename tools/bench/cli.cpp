// SPDX-License-Identifier: Apache-2.0
#include "cli.hpp"

#include <charconv>
#include <cstdio>

namespace rendr::bench {
namespace {

Error bad(std::string_view name, std::string_view value, std::string_view want) {
  return make_error(std::errc::invalid_argument, "--" + std::string(name) + ": '" +
                                                     std::string(value) + "' is not " +
                                                     std::string(want));
}

std::string join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (const auto& s : v) {
    out += (out.empty() ? "" : std::string(sep)) + s;
  }
  return out;
}

template <typename T>
Result<T> parse_number(std::string_view name, std::string_view text, T min, T max) {
  T v{};
  // Allow a k/M suffix (x1000 / x1000000) for counts and Ki/Mi for byte sizes.
  std::uint64_t mult = 1;
  std::string_view digits = text;
  if (digits.ends_with("Ki")) {
    mult = 1024;
    digits.remove_suffix(2);
  } else if (digits.ends_with("Mi")) {
    mult = 1024 * 1024;
    digits.remove_suffix(2);
  } else if (digits.ends_with("k")) {
    mult = 1000;
    digits.remove_suffix(1);
  } else if (digits.ends_with("M")) {
    mult = 1000000;
    digits.remove_suffix(1);
  }
  auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (ec != std::errc{} || p != digits.data() + digits.size() || digits.empty()) {
    return bad(name, text, "an integer");
  }
  v = static_cast<T>(v * static_cast<T>(mult));
  if (v < min || v > max) {
    return make_error(std::errc::invalid_argument,
                      "--" + std::string(name) + ": " + std::string(text) + " is out of range [" +
                          std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return v;
}

}  // namespace

ArgParser::ArgParser(std::string usage, std::string about)
    : usage_(std::move(usage)), about_(std::move(about)) {}

void ArgParser::flag(std::string name, bool* out, std::string help) {
  opts_.push_back({std::move(name), "", std::move(help), "", nullptr});
  opts_.back().set = [out](std::string_view) -> Status {
    *out = true;
    return {};
  };
}

void ArgParser::uint(std::string name, std::uint64_t* out, std::uint64_t min, std::uint64_t max,
                     std::string help) {
  const std::string n = name;
  opts_.push_back({std::move(name), "N", std::move(help), std::to_string(*out), nullptr});
  opts_.back().set = [out, n, min, max](std::string_view v) -> Status {
    auto r = parse_number<std::uint64_t>(n, v, min, max);
    if (!r) {
      return std::move(r).take_error();
    }
    *out = *r;
    return {};
  };
}

void ArgParser::integer(std::string name, std::int64_t* out, std::int64_t min, std::int64_t max,
                        std::string help) {
  const std::string n = name;
  opts_.push_back({std::move(name), "N", std::move(help), std::to_string(*out), nullptr});
  opts_.back().set = [out, n, min, max](std::string_view v) -> Status {
    auto r = parse_number<std::int64_t>(n, v, min, max);
    if (!r) {
      return std::move(r).take_error();
    }
    *out = *r;
    return {};
  };
}

void ArgParser::str(std::string name, std::string* out, std::string metavar, std::string help) {
  const std::string n = name;
  opts_.push_back({std::move(name), std::move(metavar), std::move(help), *out, nullptr});
  opts_.back().set = [out, n](std::string_view v) -> Status {
    if (v.empty()) {
      return bad(n, v, "a non-empty value");
    }
    *out = std::string(v);
    return {};
  };
}

void ArgParser::on_off(std::string name, bool* out, std::string help) {
  const std::string n = name;
  opts_.push_back({std::move(name), "on|off", std::move(help), *out ? "on" : "off", nullptr});
  opts_.back().set = [out, n](std::string_view v) -> Status {
    if (v == "on" || v == "true" || v == "1") {
      *out = true;
    } else if (v == "off" || v == "false" || v == "0") {
      *out = false;
    } else {
      return bad(n, v, "on or off");
    }
    return {};
  };
}

void ArgParser::choices(std::string name, std::vector<std::string>* out,
                        std::vector<std::string> allowed, std::string help) {
  const std::string n = name;
  const std::string metavar = join(allowed, ",");
  opts_.push_back({std::move(name), metavar, std::move(help), join(*out, ","), nullptr});
  opts_.back().set = [out, n, allowed, metavar](std::string_view v) -> Status {
    std::vector<std::string> picked;
    std::size_t pos = 0;
    while (pos <= v.size()) {
      std::size_t comma = v.find(',', pos);
      std::string_view item =
          v.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
      pos = comma == std::string_view::npos ? v.size() + 1 : comma + 1;
      bool known = false;
      for (const auto& a : allowed) {
        known = known || a == item;
      }
      if (!known) {
        return bad(n, item, "one of " + metavar);
      }
      picked.emplace_back(item);
    }
    *out = std::move(picked);
    return {};
  };
}

const ArgParser::Opt* ArgParser::find(std::string_view name) const {
  for (const auto& o : opts_) {
    if (o.name == name) {
      return &o;
    }
  }
  return nullptr;
}

Result<bool> ArgParser::parse(std::span<char* const> args) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string_view a = args[i];
    if (a == "-h" || a == "--help") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    if (!a.starts_with("--") || a.size() == 2) {
      return make_error(std::errc::invalid_argument,
                        "unexpected argument '" + std::string(a) + "' (see --help)");
    }
    a.remove_prefix(2);
    std::string_view value;
    bool has_value = false;
    if (auto eq = a.find('='); eq != std::string_view::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_value = true;
    }
    const Opt* o = find(a);
    if (o == nullptr) {
      return make_error(std::errc::invalid_argument,
                        "unknown option --" + std::string(a) + " (see --help)");
    }
    if (o->metavar.empty()) {
      if (has_value) {
        return make_error(std::errc::invalid_argument,
                          "--" + std::string(a) + " takes no value");
      }
    } else if (!has_value) {
      if (i + 1 >= args.size()) {
        return make_error(std::errc::invalid_argument,
                          "--" + std::string(a) + " needs a value (" + o->metavar + ")");
      }
      value = args[++i];
    }
    if (auto st = o->set(value); !st.ok()) {
      return std::move(st).take_error();
    }
  }
  return true;
}

std::string ArgParser::help() const {
  std::string out = "usage: " + usage_ + "\n\n" + about_ + "\n\noptions:\n";
  for (const auto& o : opts_) {
    std::string left = "  --" + o.name + (o.metavar.empty() ? "" : " " + o.metavar);
    if (left.size() < 28) {
      left.append(28 - left.size(), ' ');
    } else {
      left += "\n" + std::string(28, ' ');
    }
    out += left + o.help;
    if (!o.default_text.empty()) {
      out += " (default: " + o.default_text + ")";
    }
    out += "\n";
  }
  out += "  -h, --help                this help\n";
  return out;
}

}  // namespace rendr::bench
