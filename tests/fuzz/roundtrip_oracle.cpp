// SPDX-License-Identifier: Apache-2.0
#include "roundtrip_oracle.hpp"

#include <rendr/common/snapshot_codec.hpp>

#include <algorithm>

namespace rendr::test {

std::string check_decode_roundtrip(std::span<const std::byte> input) {
  auto r = decode_snapshot(input);
  if (!r.ok()) {
    const auto& e = r.error();
    if (e.code != std::errc::invalid_argument && e.code != std::errc::not_supported) {
      return "decode failed with unexpected code " + e.code.message() + ": " + e.message();
    }
    if (e.context.find("decode snapshot") == std::string::npos) {
      return "decode error does not say where it came from: " + e.message();
    }
    return {};
  }
  const TcpSnapshot& s = *r;
  if (auto v = validate(s); !v.ok()) {
    return "decoded a snapshot that does not validate: " + v.error().message();
  }
  const auto again = encode_snapshot(s);
  if (!std::equal(again.begin(), again.end(), input.begin(), input.end())) {
    return "re-encoding a decoded snapshot gives different bytes (" +
           std::to_string(again.size()) + " vs " + std::to_string(input.size()) + ")";
  }
  auto back = decode_snapshot(again);
  if (!back.ok() || !(*back == s)) {
    return "decode(encode(s)) != s";
  }
  const auto json = snapshot_to_json(s);
  if (json.empty() || json.front() != '{' || json.back() != '}') {
    return "JSON dump is not an object";
  }
  return {};
}

}  // namespace rendr::test
