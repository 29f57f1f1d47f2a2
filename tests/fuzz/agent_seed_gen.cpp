// SPDX-License-Identifier: Apache-2.0
// rendr_fuzz_agent_seedgen <dir>: writes every agent_seeds() input to <dir>/<name>.ragent (the
// agent message fuzzer's seed corpus). Creates <dir> if needed. Exit 0 on success.
#include "agent_oracle.hpp"
#include "seed_writer.hpp"

int main(int argc, char** argv) {
  std::vector<rendr::test::NamedSeed> seeds;
  for (auto& s : rendr::test::agent_seeds()) {
    seeds.push_back({std::move(s.name), std::move(s.bytes)});
  }
  return rendr::test::seed_main(argc, argv, seeds, ".ragent", "agent message seeds");
}
