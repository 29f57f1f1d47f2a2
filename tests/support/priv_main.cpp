// SPDX-License-Identifier: Apache-2.0
// main() for privileged test executables (STYLE T3). Before running any test it probes, by
// trying, what RENDR_PRIV_NEEDS lists (netns, tcp_repair, bpf, tun). If a probe fails it prints
// one "SKIP <binary>: needs ..." line and exits 77 - unless CI=true or RENDR_REQUIRE_PRIV=1, where
// a skip would hide bugs: then it prints "FAIL" and exits 1. Listing (ctest discovery) never
// probes.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/bpf.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#ifndef RENDR_PRIV_NEEDS
#define RENDR_PRIV_NEEDS "netns"
#endif

namespace {

bool listing(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--list", 0) == 0 || a == "-l" || a == "-h" || a == "--help" || a == "-?") {
      return true;
    }
  }
  return false;
}

// Each probe returns an empty string on success, else "<what> (<errno text>)".
std::string probe_netns() {
  std::string result;
  // unshare in a throwaway thread so the main thread's namespace is untouched.
  std::thread t([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      result = std::string("CAP_SYS_ADMIN to create network namespaces (") +
               std::strerror(errno) + ")";
    }
  });
  t.join();
  return result;
}

std::string probe_tcp_repair() {
  int fd = ::socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  if (fd < 0) {
    return std::string("a TCP socket (") + std::strerror(errno) + ")";
  }
  int on = 1;
  int rc = ::setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &on, sizeof on);
  int err = errno;
  ::close(fd);
  if (rc != 0) {
    return std::string("CAP_NET_ADMIN for TCP_REPAIR (") + std::strerror(err) + ")";
  }
  return {};
}

std::string probe_bpf() {
  // Load the smallest socket-filter-free program type we use: sched_cls "return 0".
  struct bpf_insn insns[2] = {};
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;  // r0 = 0
  insns[0].dst_reg = 0;
  insns[1].code = BPF_JMP | BPF_EXIT;
  union bpf_attr attr;
  std::memset(&attr, 0, sizeof attr);
  attr.prog_type = BPF_PROG_TYPE_SCHED_CLS;
  attr.insns = reinterpret_cast<std::uint64_t>(insns);
  attr.insn_cnt = 2;
  static const char kLicense[] = "GPL";
  attr.license = reinterpret_cast<std::uint64_t>(kLicense);
  int fd = static_cast<int>(::syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof attr));
  if (fd < 0) {
    return std::string("CAP_BPF+CAP_NET_ADMIN to load BPF programs (") + std::strerror(errno) + ")";
  }
  ::close(fd);
  return {};
}

std::string probe_tun() {
  int fd = ::open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    return std::string("/dev/net/tun (") + std::strerror(errno) + ")";
  }
  ::close(fd);
  return {};
}

}  // namespace

int main(int argc, char** argv) {
  if (!listing(argc, argv)) {
    std::string needs = RENDR_PRIV_NEEDS;
    std::string missing;
    std::size_t pos = 0;
    while (pos <= needs.size()) {
      std::size_t comma = needs.find(',', pos);
      std::string n = needs.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      pos = comma == std::string::npos ? needs.size() + 1 : comma + 1;
      std::string why;
      if (n == "netns") {
        why = probe_netns();
      } else if (n == "tcp_repair") {
        why = probe_tcp_repair();
      } else if (n == "bpf") {
        why = probe_bpf();
      } else if (n == "tun") {
        why = probe_tun();
      }
      if (!why.empty()) {
        missing += (missing.empty() ? "" : ", ") + why;
      }
    }
    if (!missing.empty()) {
      const char* ci = std::getenv("CI");
      const char* req = std::getenv("RENDR_REQUIRE_PRIV");
      bool required = (ci != nullptr && std::string(ci) == "true") ||
                      (req != nullptr && std::string(req) == "1");
      std::printf("%s %s: needs %s; run as root or via vm-tests\n", required ? "FAIL" : "SKIP",
                  argv[0], missing.c_str());
      return required ? 1 : 77;
    }
  }
  return Catch::Session().run(argc, argv);
}
