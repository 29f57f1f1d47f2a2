// SPDX-License-Identifier: Apache-2.0
// repair_nocap_child <tcp-fd> <snapshot-file>: run by nocap_test.cpp under
// `setpriv --inh-caps=-net_admin --bounding-set=-net_admin`, i.e. root without CAP_NET_ADMIN.
// It calls the repair entry points that need no frozen socket - checkpoint(<tcp-fd>),
// restore(<snapshot>), probe_tcp_repair() - and prints one line per call,
//   <entry>\t<errno or 0>\t<message>
// plus "capeff\t<hex>" (its effective capability set), then proves the socket still works by
// writing "child-alive" on it. Exit 0 unless its own set-up failed.
#include <rendr/common/snapshot_codec.hpp>
#include <rendr/repair/repair.hpp>

#include <sys/socket.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace {

template <typename R>
void report(const char* entry, const R& r) {
  if (r.ok()) {
    std::printf("%s\t0\tok\n", entry);
  } else {
    std::printf("%s\t%d\t%s\n", entry, r.error().code.value(), r.error().message().c_str());
  }
}

std::string cap_eff() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("CapEff:", 0) == 0) {
      return line.substr(line.find_first_not_of(" \t", 7));
    }
  }
  return "?";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <tcp-fd> <snapshot-file>\n", argv[0]);
    return 2;
  }
  const int fd = std::atoi(argv[1]);
  std::string raw;
  if (std::FILE* f = std::fopen(argv[2], "rb"); f != nullptr) {
    char buf[4096];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
      raw.append(buf, n);
    }
    std::fclose(f);
  }
  auto snap = rendr::decode_snapshot(std::as_bytes(std::span(raw.data(), raw.size())));
  if (!snap) {
    std::fprintf(stderr, "child: %s\n", snap.error().message().c_str());
    return 1;
  }
  std::printf("capeff\t0\t%s\n", cap_eff().c_str());
  rendr::repair::Repairer rep(rendr::repair::real_sys(), [](rendr::LogLevel, std::string_view) {});
  report("checkpoint", rep.checkpoint(fd));
  report("restore", rep.restore(*snap));
  report("probe_tcp_repair", rendr::repair::probe_tcp_repair());
  std::fflush(stdout);
  static constexpr char kAlive[] = "child-alive";
  if (::send(fd, kAlive, sizeof kAlive - 1, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof kAlive - 1)) {
    std::perror("child: send");
    return 1;
  }
  return 0;
}
