// SPDX-License-Identifier: Apache-2.0
// rendr_fuzz_wire_seedgen <dir>: writes every wire_seeds() input to <dir>/<name>.rwire (the wire
// decoder fuzzer's seed corpus). Creates <dir> if needed. Exit 0 on success.
#include "seed_writer.hpp"
#include "wire_oracle.hpp"

int main(int argc, char** argv) {
  std::vector<rendr::test::NamedSeed> seeds;
  for (auto& s : rendr::test::wire_seeds()) {
    seeds.push_back({std::move(s.name), std::move(s.bytes)});
  }
  return rendr::test::seed_main(argc, argv, seeds, ".rwire", "wire seeds");
}
