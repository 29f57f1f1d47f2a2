// SPDX-License-Identifier: Apache-2.0
// JsonWriter — a minimal streaming JSON writer for status output, bench results and snapshot
// dumps. It handles commas and string escaping; the caller handles nesting order. Pure.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace rendr {

class JsonWriter {
 public:
  JsonWriter& begin_object(std::string_view key = {});
  JsonWriter& end_object();
  JsonWriter& begin_array(std::string_view key = {});
  JsonWriter& end_array();
  JsonWriter& kv(std::string_view key, std::string_view value);
  JsonWriter& kv(std::string_view key, const char* value) { return kv(key, std::string_view(value)); }
  JsonWriter& kv(std::string_view key, bool value);
  JsonWriter& kv(std::string_view key, std::int64_t value);
  JsonWriter& kv(std::string_view key, std::uint64_t value);
  JsonWriter& kv(std::string_view key, int value) { return kv(key, static_cast<std::int64_t>(value)); }
  JsonWriter& kv(std::string_view key, unsigned value) {
    return kv(key, static_cast<std::uint64_t>(value));
  }
  JsonWriter& kv(std::string_view key, double value);
  JsonWriter& kv_null(std::string_view key);
  // raw inserts an already-encoded JSON value under |key|.
  JsonWriter& raw(std::string_view key, std::string_view json);
  // value appends an array element.
  JsonWriter& value(std::string_view v);
  JsonWriter& value(std::int64_t v);
  JsonWriter& number(double v);  // array element: %.6g, null if not finite (as kv)

  [[nodiscard]] const std::string& str() const { return out_; }

  static std::string quote(std::string_view s);

 private:
  void sep(std::string_view key);
  std::string out_;
  bool need_comma_ = false;
};

// json_scalar reads the value of the first `"key":` in |json|, a flat document this project
// wrote (agent status/report JSON): a string's contents (an escape yields the escaped
// character), or a number/true/false/null as written. "" when the key is absent.
[[nodiscard]] std::string json_scalar(std::string_view json, std::string_view key);

}  // namespace rendr
