// SPDX-License-Identifier: Apache-2.0
// The agent message fuzzer's oracle over its seeds and seeded mutations of them, with the main
// compiler (the libFuzzer run itself needs clang; this keeps the oracle honest either way).
#include "agent_oracle.hpp"

#include <catch2/catch.hpp>

#include <random>

using namespace rendr::test;

TEST_CASE("agent message oracle accepts every seed and survives mutations", "[agents][fuzz]") {
  const auto seeds = agent_seeds();
  REQUIRE(seeds.size() >= 8);
  std::mt19937 rng(1234);
  for (const auto& s : seeds) {
    INFO(s.name);
    CHECK(check_agent_input(s.bytes).empty());
    for (int i = 0; i < 300; ++i) {
      auto m = s.bytes;
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int f = 0; f < flips && m.size() > 1; ++f) {
        m[1 + rng() % (m.size() - 1)] = static_cast<std::byte>(rng() & 0xff);
      }
      if (rng() % 3 == 0 && m.size() > 2) {
        m.resize(1 + rng() % (m.size() - 1));
      }
      CHECK(check_agent_input(m).empty());
    }
  }
}
