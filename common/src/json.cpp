// SPDX-License-Identifier: Apache-2.0
#include <rendr/common/json.hpp>

#include <cmath>
#include <cstdio>

namespace rendr {

std::string JsonWriter::quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (u < 0x20 || u >= 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", u);
          out += buf;
        } else {
          out.push_back(c);
        }
    }
  }
  out += "\"";
  return out;
}

void JsonWriter::sep(std::string_view key) {
  if (need_comma_) {
    out_ += ",";
  }
  if (!key.empty()) {
    out_ += quote(key);
    out_ += ":";
  }
  need_comma_ = true;
}

JsonWriter& JsonWriter::begin_object(std::string_view key) {
  sep(key);
  out_ += "{";
  need_comma_ = false;
  return *this;
}
JsonWriter& JsonWriter::end_object() {
  out_ += "}";
  need_comma_ = true;
  return *this;
}
JsonWriter& JsonWriter::begin_array(std::string_view key) {
  sep(key);
  out_ += "[";
  need_comma_ = false;
  return *this;
}
JsonWriter& JsonWriter::end_array() {
  out_ += "]";
  need_comma_ = true;
  return *this;
}
JsonWriter& JsonWriter::kv(std::string_view key, std::string_view value) {
  sep(key);
  out_ += quote(value);
  return *this;
}
JsonWriter& JsonWriter::kv(std::string_view key, bool value) {
  sep(key);
  out_ += value ? "true" : "false";
  return *this;
}
JsonWriter& JsonWriter::kv(std::string_view key, std::int64_t value) {
  sep(key);
  out_ += std::to_string(value);
  return *this;
}
JsonWriter& JsonWriter::kv(std::string_view key, std::uint64_t value) {
  sep(key);
  out_ += std::to_string(value);
  return *this;
}
JsonWriter& JsonWriter::kv(std::string_view key, double value) {
  sep(key);
  if (!std::isfinite(value)) {
    out_ += "null";
    return *this;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", value);
  out_ += buf;
  return *this;
}
JsonWriter& JsonWriter::kv_null(std::string_view key) {
  sep(key);
  out_ += "null";
  return *this;
}
JsonWriter& JsonWriter::raw(std::string_view key, std::string_view json) {
  sep(key);
  out_ += json;
  return *this;
}
JsonWriter& JsonWriter::value(std::string_view v) {
  sep({});
  out_ += quote(v);
  return *this;
}
JsonWriter& JsonWriter::value(std::int64_t v) {
  sep({});
  out_ += std::to_string(v);
  return *this;
}
JsonWriter& JsonWriter::number(double v) {
  sep({});
  if (!std::isfinite(v)) {
    out_ += "null";
    return *this;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  out_ += buf;
  return *this;
}

std::string json_scalar(std::string_view json, std::string_view key) {
  std::string pat = "\"" + std::string(key) + "\":";
  auto p = json.find(pat);
  if (p == std::string_view::npos) {
    return {};
  }
  p += pat.size();
  if (p < json.size() && json[p] == '"') {
    std::string v;
    for (std::size_t i = p + 1; i < json.size() && json[i] != '"'; ++i) {
      if (json[i] == '\\' && i + 1 < json.size()) {
        ++i;
      }
      v += json[i];
    }
    return v;
  }
  auto e = json.find_first_of(",}", p);
  return std::string(json.substr(p, e - p));
}

}  // namespace rendr
