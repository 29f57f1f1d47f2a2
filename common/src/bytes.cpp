// SPDX-License-Identifier: Apache-2.0
#include <rendr/common/bytes.hpp>

namespace rendr {

std::string to_hex(std::span<const std::byte> b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(b.size() * 2);
  for (std::byte x : b) {
    auto v = static_cast<unsigned>(x);
    out.push_back(kDigits[v >> 4]);
    out.push_back(kDigits[v & 0xFU]);
  }
  return out;
}

}  // namespace rendr
