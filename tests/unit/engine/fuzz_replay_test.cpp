// SPDX-License-Identifier: Apache-2.0
// The wire fuzzer's oracle (tests/fuzz/wire_oracle.cpp) over its seeds and a fixed set of
// seeded mutations, so the property runs in every unit build (g++), not only under libFuzzer.
#include "wire_oracle.hpp"

#include <catch2/catch.hpp>

#include <random>

TEST_CASE("engine fuzz replay: wire seeds and seeded mutations satisfy the oracle",
          "[engine][wire][fuzz]") {
  const auto seeds = rendr::test::wire_seeds();
  REQUIRE(seeds.size() >= 10);
  for (const auto& s : seeds) {
    INFO(s.name);
    CHECK(rendr::test::check_wire_input(s.bytes).empty());
  }
  std::mt19937 rng(20261122);
  int checked = 0;
  for (int i = 0; i < 3000; ++i) {
    auto bytes = seeds[rng() % seeds.size()].bytes;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !bytes.empty(); ++e) {
      const std::size_t at = rng() % bytes.size();
      switch (rng() % 4) {
        case 0: bytes[at] = static_cast<std::byte>(rng()); break;
        case 1: bytes.resize(at); break;
        case 2: bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(at), static_cast<std::byte>(rng())); break;
        default: bytes[at] ^= static_cast<std::byte>(1U << (rng() % 8)); break;
      }
    }
    const std::string why = rendr::test::check_wire_input(bytes);
    INFO("mutation " << i << ": " << why);
    REQUIRE(why.empty());
    ++checked;
  }
  CHECK(checked == 3000);
}
