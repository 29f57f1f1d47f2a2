// SPDX-License-Identifier: Apache-2.0
// rendr-tun end to end (docs/tun-ingress.md), real kernel, stock programs: netns "app" has a TUN
// rtun0 (198.18.0.0/24 routed into it) with `rendr-tun ingress` on it and runs curl; netns
// "egress" runs `rendr-tun egress` and the origin, python3's http.server on 198.18.0.10 (a
// local address there). curl's TCP flow is terminated in lwIP, carried over an engine flow
// (tcp over a veth) with its L3 identity, and landed at the origin by the egress.
#include "support/netns.hpp"
#include "support/pattern.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

using namespace rendr::test;

namespace {

// A spawned process, killed and reaped when the test ends (also on failure).
struct Child {
  pid_t pid = -1;
  ~Child() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      int st = 0;
      ::waitpid(pid, &st, 0);
    }
  }
};

// TempDir: a fresh directory under /tmp, removed with its files.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/rendr-tun-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { (void)std::system(("rm -rf " + path).c_str()); }
};

// wait_ready reads |fifo| (the child's stdout) until a line containing |word| or |ms| passed.
std::string wait_ready(int fifo, const std::string& word, int ms) {
  std::string seen;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (seen.find(word) == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      break;
    }
    pollfd p{fifo, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) {
      break;
    }
    char buf[512];
    const ssize_t n = ::read(fifo, buf, sizeof buf);
    if (n <= 0) {
      break;  // the child exited
    }
    seen.append(buf, static_cast<std::size_t>(n));
  }
  return seen;
}

// A FIFO for a child's stdout, opened for reading (non-blocking open, blocking reads via poll).
int open_fifo(const std::string& path) {
  REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  REQUIRE(fd >= 0);
  return fd;
}

}  // namespace

TEST_CASE("tun: stock curl downloads through rendr-tun ingress and egress, byte for byte",
          "[.netns][tun][netns]") {
  TempDir dir;
  // The origin's file: 8 MiB of pattern bytes.
  const std::size_t kSize = 8U << 20;
  std::vector<std::byte> blob(kSize);
  Pattern(31).fill(0, blob);
  {
    std::ofstream f(dir.path + "/blob", std::ios::binary);
    f.write(reinterpret_cast<const char*>(blob.data()), static_cast<std::streamsize>(blob.size()));
    REQUIRE(f.good());
  }
  Netns app = Netns::create("tunapp");
  Netns egress = Netns::create("tunegress");
  veth(app, "rta0", egress, "rtb0");
  app.must("ip addr add 10.88.0.1/24 dev rta0");
  egress.must("ip addr add 10.88.0.2/24 dev rtb0 && ip addr add 198.18.0.10/32 dev lo");
  app.must("ip tuntap add dev rtun0 mode tun && ip link set rtun0 up && "
           "ip addr add 10.77.0.1/32 dev rtun0 && "
           "ip route add 198.18.0.0/24 dev rtun0 src 10.77.0.1");

  const int origin_out = open_fifo(dir.path + "/origin.out");
  Child origin;
  origin.pid = egress.spawn({"/bin/sh", "-c",
                             "cd " + dir.path +
                                 " && exec python3 -u -m http.server 8080 --bind 198.18.0.10"},
                            dir.path + "/origin.out");
  REQUIRE(wait_ready(origin_out, "Serving HTTP", 10000).find("Serving HTTP") != std::string::npos);

  const int egress_out = open_fifo(dir.path + "/egress.out");
  Child eg;
  eg.pid = egress.spawn({RENDR_TUN_BIN, "egress", "--listen", "10.88.0.2:7000"},
                        dir.path + "/egress.out");
  REQUIRE(wait_ready(egress_out, "ready", 10000).find("ready") != std::string::npos);

  const int ingress_out = open_fifo(dir.path + "/ingress.out");
  Child in;
  in.pid = app.spawn({RENDR_TUN_BIN, "ingress", "--tun", "rtun0", "--peer", "10.88.0.2:7000"},
                     dir.path + "/ingress.out");
  const std::string ready = wait_ready(ingress_out, "ready", 10000);
  INFO(ready);
  REQUIRE(ready.find("ready") != std::string::npos);

  // Stock curl in the app netns: its connection to 198.18.0.10:8080 enters the TUN.
  std::string out;
  const int rc = app.sh("curl -sS --max-time 60 -o " + dir.path +
                            "/got http://198.18.0.10:8080/blob 2>&1",
                        &out);
  INFO("curl: " << out);
  REQUIRE(rc == 0);
  std::ifstream g(dir.path + "/got", std::ios::binary);
  std::vector<char> got((std::istreambuf_iterator<char>(g)), std::istreambuf_iterator<char>());
  REQUIRE(got.size() == kSize);
  CHECK(std::equal(got.begin(), got.end(), reinterpret_cast<const char*>(blob.data())));
  ::close(origin_out);
  ::close(egress_out);
  ::close(ingress_out);
}
