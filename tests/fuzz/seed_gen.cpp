// SPDX-License-Identifier: Apache-2.0
// rendr_fuzz_seedgen <dir>: writes every sample_snapshots() value, encoded, to <dir>/<name>.rsnp
// (the snapshot decoder fuzzer's seed corpus). Creates <dir> if needed. Exit 0 on success.
#include "support/snapshot_samples.hpp"

#include <rendr/common/snapshot_codec.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

int main(int argc, char** argv) {
  const bool help = argc == 2 && (std::strcmp(argv[1], "--help") == 0 ||
                                  std::strcmp(argv[1], "-h") == 0);
  if (argc != 2 || help || argv[1][0] == '-') {
    std::fprintf(help ? stdout : stderr, "usage: %s <corpus-dir>\n", argv[0]);
    return help ? 0 : 2;
  }
  const std::filesystem::path dir = argv[1];
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    std::fprintf(stderr, "%s: %s\n", dir.c_str(), ec.message().c_str());
    return 1;
  }
  int n = 0;
  for (const auto& seed : rendr::test::sample_snapshots()) {
    if (auto v = rendr::validate(seed.snapshot); !v.ok()) {
      std::fprintf(stderr, "seed %s is invalid: %s\n", seed.name.c_str(),
                   v.error().message().c_str());
      return 1;
    }
    const auto bytes = rendr::encode_snapshot(seed.snapshot);
    const auto path = dir / (seed.name + ".rsnp");
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!f) {
      std::fprintf(stderr, "cannot write %s\n", path.c_str());
      return 1;
    }
    ++n;
  }
  std::printf("wrote %d seed snapshots to %s\n", n, dir.c_str());
  return 0;
}
