// SPDX-License-Identifier: Apache-2.0
// rendr_fuzz_seedgen <dir>: writes every sample_snapshots() value, encoded, to <dir>/<name>.rsnp
// (the snapshot decoder fuzzer's seed corpus). Creates <dir> if needed. Exit 0 on success.
#include "seed_writer.hpp"
#include "support/snapshot_samples.hpp"

#include <rendr/common/snapshot_codec.hpp>

int main(int argc, char** argv) {
  std::vector<rendr::test::NamedSeed> seeds;
  for (const auto& s : rendr::test::sample_snapshots()) {
    if (auto v = rendr::validate(s.snapshot); !v.ok()) {
      std::fprintf(stderr, "seed %s is invalid: %s\n", s.name.c_str(),
                   v.error().message().c_str());
      return 1;
    }
    seeds.push_back({s.name, rendr::encode_snapshot(s.snapshot)});
  }
  return rendr::test::seed_main(argc, argv, seeds, ".rsnp", "seed snapshots");
}
