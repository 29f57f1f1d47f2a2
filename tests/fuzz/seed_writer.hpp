// SPDX-License-Identifier: Apache-2.0
// seed_main: the command line every fuzzer's seed generator shares - `<tool> <corpus-dir>`
// writes each seed to <corpus-dir>/<name><ext> (creating the directory), `--help` prints the
// usage. |seeds| is a list of {name, bytes} (std::string, std::vector<std::byte>).
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace rendr::test {

struct NamedSeed {
  std::string name;
  std::vector<std::byte> bytes;
};

inline int seed_main(int argc, char** argv, const std::vector<NamedSeed>& seeds,
                     const char* ext, const char* what) {
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
  for (const auto& seed : seeds) {
    const auto path = dir / (seed.name + ext);
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(seed.bytes.data()),
            static_cast<std::streamsize>(seed.bytes.size()));
    if (!f) {
      std::fprintf(stderr, "cannot write %s\n", path.c_str());
      return 1;
    }
  }
  std::printf("wrote %zu %s to %s\n", seeds.size(), what, dir.c_str());
  return 0;
}

}  // namespace rendr::test
