// SPDX-License-Identifier: Apache-2.0
// bench.repair_smoke (ctest, label priv): runs `rendr-bench repair --json` with tiny iteration
// counts and checks that it exits 0 and that the last stdout line is a JSON object carrying the
// documented keys. It never asserts on timing (the bench itself checks targets). Like
// tests/support/priv_main.cpp it first probes what it needs by trying (a network namespace,
// TCP_REPAIR) and prints one "SKIP ..." line and exits 77 when that fails - or "FAIL ..." and 1
// under CI=true / RENDR_REQUIRE_PRIV=1, where a skip would hide bugs.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

std::string probe() {
  std::string why;
  // unshare in a throwaway thread so this process stays in its namespace.
  std::thread t([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      why = std::string("CAP_SYS_ADMIN to create network namespaces (") + std::strerror(errno) +
            ")";
    }
  });
  t.join();
  if (!why.empty()) {
    return why;
  }
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

bool required() {
  const char* ci = std::getenv("CI");
  const char* req = std::getenv("RENDR_REQUIRE_PRIV");
  return (ci != nullptr && std::string(ci) == "true") ||
         (req != nullptr && std::string(req) == "1");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <path to rendr-bench>\n", argv[0]);
    return 2;
  }
  if (std::string why = probe(); !why.empty()) {
    std::printf("%s %s: needs %s; run as root or via vm-tests\n", required() ? "FAIL" : "SKIP",
                argv[0], why.c_str());
    return required() ? 1 : 77;
  }
  const std::string cmd = std::string("'") + argv[1] +
                          "' repair --json --quiet --idle-iters 20 --warmup 5 --queued-iters 3 "
                          "--queue-bytes 64Ki --batch 50 --batch-verify 50 --variants";
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    std::printf("FAIL: popen: %s\n", std::strerror(errno));
    return 1;
  }
  std::string out;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
    out.append(buf, n);
  }
  int status = ::pclose(p);
  std::fputs(out.c_str(), stdout);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::printf("FAIL: rendr-bench repair exited with status %d\n",
                WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 1;
  }
  while (!out.empty() && out.back() == '\n') {
    out.pop_back();
  }
  const std::string last = out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
  if (last.size() < 2 || last.front() != '{' || last.back() != '}') {
    std::printf("FAIL: the last stdout line is not a JSON object: %s\n", last.c_str());
    return 1;
  }
  const std::vector<std::string> keys = {
      "kernel", "idle_iterations", "queued_iterations", "idle_p50_us", "idle_p99_us",
      "queued_p50_us", "queued_p99_us", "checkpoint_p50_us", "restore_p50_us", "batch_10000_s",
      "batch_s", "batch_per_socket_us", "batch_sockets", "batch_verified", "variants",
      "kick_off_probe_off"};
  int missing = 0;
  for (const auto& k : keys) {
    if (last.find("\"" + k + "\":") == std::string::npos) {
      std::printf("FAIL: key \"%s\" missing from the JSON line\n", k.c_str());
      ++missing;
    }
  }
  // Tiny runs must still have measured what they were asked to.
  for (const char* k : {"\"idle_iterations\":20", "\"queued_iterations\":3", "\"batch_sockets\":50",
                        "\"batch_verified\":50"}) {
    if (last.find(k) == std::string::npos) {
      std::printf("FAIL: expected %s in the JSON line\n", k);
      ++missing;
    }
  }
  if (missing != 0) {
    return 1;
  }
  std::printf("PASS: rendr-bench repair --json produced all %zu keys\n", keys.size());
  return 0;
}
