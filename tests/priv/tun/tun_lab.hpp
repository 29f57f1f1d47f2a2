// SPDX-License-Identifier: Apache-2.0
// The rendr-tun test lab (tests/priv/tun): tools/lab's IngressLab (ingress_lab.hpp) without an
// origin namespace: netns "<prefix>-app" with the TUN rtun0 (198.18.0.0/24 routed into it) and
// `rendr-tun ingress` on it; netns "<prefix>-egress" with `rendr-tun egress` and the origin
// (python3's http.server on 198.18.0.10:8080, on the egress's lo); two veths = two engine
// paths. The tests' own servers run in |egress| on the origin addresses.
#pragma once

#include "lab/ingress_lab.hpp"
#include "support/netns.hpp"
#include "support/pattern.hpp"

#include <rendr/common/json.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace rendr::test {

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
inline std::string wait_ready(int fifo, const std::string& word, int ms) {
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
inline int open_fifo(const std::string& path) {
  REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  REQUIRE(fd >= 0);
  return fd;
}

// TunLabOptions: what differs between the tests' labs.
struct TunLabOptions {
  std::size_t blob = 1024;  // the origin's /blob
  // The egress's rules (default: everything under 198.18.0.0/24) and extra addresses of the
  // origin host (on its lo), e.g. a destination the rules deny.
  std::vector<std::string> egress_rules = {"--allow", "198.18.0.0/24"};
  std::vector<std::string> origin_addrs;
  // The ingress's decision: empty = every flow to both paths (--peer); else the text of its
  // --config file.
  std::string ingress_config;
  // Both sides share a listener key (--key-file): only the configured ingress gets a flow.
  bool keyed = false;
};

// TunLab: the two namespaces of an IngressLab (paths 10.88.0.0/24 and 10.89.0.0/24), the
// origin serving |blob| on 198.18.0.10:8080 and both rendr-tun processes, ready, each with a
// status socket. Torn down with the test (children killed, namespaces and files removed).
struct TunLab {
  TempDir dir;
  std::vector<std::byte> blob;
  std::unique_ptr<lab::IngressLab> net;  // the topology; named namespaces, deleted with the lab
  Netns app;
  Netns egress;
  std::vector<int> fifos;
  Child origin;
  Child eg;
  Child in;

  explicit TunLab(std::size_t size) : TunLab(blob_only(size)) {}
  static TunLabOptions blob_only(std::size_t size) {
    TunLabOptions o;
    o.blob = size;
    return o;
  }
  static std::unique_ptr<lab::IngressLab> build(const TunLabOptions& o) {
    lab::IngressLabOptions lo;
    lo.origin_ns = false;  // the tests' servers run in |egress|
    lo.origin_addrs = o.origin_addrs;
    lo.tun_mtu = 1500;  // the tests' fragmented ping needs it
    auto l = lab::IngressLab::create(unique_prefix("tun"), lo);
    INFO((l ? std::string() : l.error().message()));
    REQUIRE(l.ok());
    return std::move(*l);
  }
  explicit TunLab(const TunLabOptions& o)
      : blob(o.blob),
        net(build(o)),
        app(Netns::open(net->ns("app"))),
        egress(Netns::open(net->ns("egress"))) {
    Pattern(31).fill(0, blob);
    {
      std::ofstream f(dir.path + "/blob", std::ios::binary);
      f.write(reinterpret_cast<const char*>(blob.data()),
              static_cast<std::streamsize>(blob.size()));
      REQUIRE(f.good());
    }
    origin.pid = start(egress, "origin",
                       {"/bin/sh", "-c",
                        "cd " + dir.path +
                            " && exec python3 -u -m http.server 8080 --bind 198.18.0.10"},
                       "Serving HTTP");
    std::vector<std::string> key;
    if (o.keyed) {
      std::ofstream(dir.path + "/key") << "0123456789abcdef0123456789abcdef";
      key = {"--key-file", dir.path + "/key"};
    }
    // Both publish their status in the lab's dir (tun-<pid>.sock, where `rendrctl status
    // --engine-dir DIR` finds them), never in the host's /run/rendr/engine.
    std::vector<std::string> eargs = {RENDR_TUN_BIN,     "egress",         "--listen",
                                      "0.0.0.0:7000",    "--status-socket", egress_status(),
                                      "--status-dir",    dir.path};
    eargs.insert(eargs.end(), key.begin(), key.end());
    eargs.insert(eargs.end(), o.egress_rules.begin(), o.egress_rules.end());
    eg.pid = start(egress, "egress", eargs, "ready");
    std::vector<std::string> iargs = {RENDR_TUN_BIN,     "ingress",         "--tun",
                                      "rtun0",           "--status-socket", ingress_status(),
                                      "--status-dir",    dir.path};
    iargs.insert(iargs.end(), key.begin(), key.end());
    if (o.ingress_config.empty()) {
      for (const auto& p : lab::IngressLab::peers()) {
        iargs.insert(iargs.end(), {"--peer", p});
      }
    } else {
      std::ofstream(dir.path + "/ingress.conf") << o.ingress_config;
      iargs.insert(iargs.end(), {"--config", dir.path + "/ingress.conf"});
    }
    in.pid = start(app, "ingress", iargs, "ready");
  }
  ~TunLab() {
    for (int fd : fifos) {
      ::close(fd);
    }
  }
  [[nodiscard]] std::string ingress_status() const { return dir.path + "/ingress.sock"; }
  [[nodiscard]] std::string egress_status() const { return dir.path + "/egress.sock"; }
  pid_t start(const Netns& ns, const std::string& name, const std::vector<std::string>& argv,
              const std::string& ready) {
    const int fifo = open_fifo(dir.path + "/" + name + ".out");
    fifos.push_back(fifo);
    const pid_t pid = ns.spawn(argv, dir.path + "/" + name + ".out");
    const std::string seen = wait_ready(fifo, ready, 10000);
    INFO(name << ": " << seen);
    REQUIRE(seen.find(ready) != std::string::npos);
    return pid;
  }
};

// read_dropping_path reads |fifo| (a client's output) to its end; once |drop_at| bytes have
// arrived it silently drops the path the flow's data comes on (IngressLab::active_path of the
// egress's status: each side picks its own active path, and the engine may run a flow on path
// 2) both ways with nftables
// (IngressLab::drop), as a dead uplink would, and sets |dropped| to that path. Returns what was
// read.
inline std::vector<char> read_dropping_path(TunLab& lab, int fifo, std::size_t drop_at,
                                            int& dropped);

// check_drop_counted: the rules read_dropping_path added to path |dropped| saw packets both
// ways, so the path it dropped was carrying the flow (the rest crossed the other path).
inline void check_drop_counted(const TunLab& lab, int dropped) {
  REQUIRE(dropped > 0);
  const auto c = lab.net->drop_counters(dropped);
  INFO((c ? std::string() : c.error().message()));
  REQUIRE(c.ok());
  CHECK(c->on);
  CHECK(c->out_packets > 0);
  CHECK(c->in_packets > 0);
}

// read_status: the JSON document a rendr-tun status socket serves ("" when it cannot connect).
inline std::string read_status(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
  std::string out;
  if (fd >= 0 && ::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) == 0) {
    char buf[4096];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) {
      out.append(buf, static_cast<std::size_t>(n));
    }
  }
  if (fd >= 0) {
    ::close(fd);
  }
  return out;
}

// status_counter: counter |name| of a status document (0 when absent).
inline std::uint64_t status_counter(const std::string& json, const std::string& name) {
  const std::string v = rendr::json_scalar(json, name);
  return v.empty() ? 0 : std::stoull(v);
}

inline std::vector<char> read_dropping_path(TunLab& lab, int fifo, std::size_t drop_at,
                                            int& dropped) {
  std::vector<char> got;
  got.reserve(lab.blob.size());
  std::vector<char> buf(64 * 1024);
  while (true) {
    pollfd p{fifo, POLLIN, 0};
    REQUIRE(::poll(&p, 1, 60000) > 0);
    const ssize_t n = ::read(fifo, buf.data(), buf.size());
    if (n < 0 && errno == EAGAIN) {
      continue;  // the client has not opened the FIFO yet
    }
    REQUIRE(n >= 0);
    if (n == 0) {
      break;
    }
    got.insert(got.end(), buf.begin(), buf.begin() + n);
    if (dropped == 0 && got.size() >= drop_at) {
      const std::string st = read_status(lab.egress_status());
      const int path = lab::IngressLab::active_path(st);
      INFO("egress status: " << st);
      REQUIRE(path > 0);
      const auto done = lab.net->drop(path, true);
      INFO((done ? std::string() : done.error().message()));
      REQUIRE(done.ok());
      dropped = path;
    }
  }
  return got;
}

}  // namespace rendr::test
