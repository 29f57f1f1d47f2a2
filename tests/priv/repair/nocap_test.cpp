// SPDX-License-Identifier: Apache-2.0
// Without CAP_NET_ADMIN every repair entry point fails with an error that
// names the missing capability and the userstack fallback - never a silent degradation - and the
// socket it was pointed at keeps working. Capabilities are dropped for real, two ways:
//   - a forked child drops CAP_NET_ADMIN from its effective/permitted/inheritable and bounding
//     sets (capset, PR_CAPBSET_DROP) and calls all four entry points, including thaw() of a
//     RepairSocket frozen by the privileged parent (only reachable in-process);
//   - repair_nocap_child is exec'd under `setpriv --inh-caps=-net_admin
//     --bounding-set=-net_admin`, the way an operator would start an unprivileged agent.
// Each test runs in its own netns over loopback (STYLE T4).
#include "support/netns.hpp"

#include <rendr/common/snapshot_codec.hpp>
#include <rendr/repair/repair.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>

#ifndef RENDR_NOCAP_CHILD
#error "RENDR_NOCAP_CHILD must name the repair_nocap_child binary"
#endif

using namespace rendr;
using namespace rendr::test;

namespace {

constexpr unsigned kNetAdminBit = 1U << CAP_NET_ADMIN;  // CAP_NET_ADMIN (12) < 32
constexpr unsigned kNetRawBit = 1U << CAP_NET_RAW;

[[noreturn]] void fail(const std::string& m) { throw std::runtime_error(m + ": " + std::strerror(errno)); }

struct Pair {
  UniqueFd client;
  UniqueFd server;
};

// loopback_pair connects two TCP sockets over the current netns's loopback (port from bind 0).
Pair loopback_pair(bool v6) {
  sockaddr_storage ss{};
  socklen_t sl = 0;
  if (v6) {
    auto& a = reinterpret_cast<sockaddr_in6&>(ss);
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    sl = sizeof a;
  } else {
    auto& a = reinterpret_cast<sockaddr_in&>(ss);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sl = sizeof a;
  }
  const int af = v6 ? AF_INET6 : AF_INET;
  auto lis = UniqueFd::socket(af, SOCK_STREAM, 0);
  if (!lis || ::bind(lis->get(), reinterpret_cast<sockaddr*>(&ss), sl) != 0 ||
      ::listen(lis->get(), 1) != 0 ||
      ::getsockname(lis->get(), reinterpret_cast<sockaddr*>(&ss), &sl) != 0) {
    fail("listen on loopback");
  }
  auto cli = UniqueFd::socket(af, SOCK_STREAM, 0);
  if (!cli || ::connect(cli->get(), reinterpret_cast<sockaddr*>(&ss), sl) != 0) {
    fail("connect on loopback");
  }
  int s = ::accept4(lis->get(), nullptr, nullptr, SOCK_CLOEXEC);
  if (s < 0) {
    fail("accept");
  }
  return Pair{std::move(*cli), UniqueFd(s)};
}

void send_text(int fd, const std::string& text) {
  if (::send(fd, text.data(), text.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(text.size())) {
    fail("send");
  }
}

// recv_text reads exactly |n| bytes, failing after 10 s without them (retransmission after a
// thaw may take one RTO).
std::string recv_text(int fd, std::size_t n) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (out.size() < n) {
    pollfd p{fd, POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      throw std::runtime_error("recv: timed out with " + std::to_string(out.size()) + "/" +
                               std::to_string(n) + " bytes: '" + out + "'");
    }
    if (::poll(&p, 1, static_cast<int>(left.count())) < 0) {
      fail("poll");
    }
    char buf[256];
    ssize_t r = ::recv(fd, buf, std::min(sizeof buf, n - out.size()), MSG_DONTWAIT);
    if (r == 0) {
      throw std::runtime_error("recv: EOF after '" + out + "'");
    }
    if (r < 0 && errno != EAGAIN) {
      fail("recv");
    }
    if (r > 0) {
      out.append(buf, static_cast<std::size_t>(r));
    }
  }
  return out;
}

// data_passes checks both directions of a connection with fresh bytes.
void data_passes(int a, int b, const std::string& tag) {
  send_text(a, "ping-" + tag);
  CHECK(recv_text(b, 5 + tag.size()) == "ping-" + tag);
  send_text(b, "pong-" + tag);
  CHECK(recv_text(a, 5 + tag.size()) == "pong-" + tag);
}

// drop_net_admin removes CAP_NET_ADMIN from every set of the calling (forked, single-threaded)
// process; CAP_NET_RAW and the rest stay, so a failure can only be CAP_NET_ADMIN's doing.
bool drop_net_admin(std::string& why) {
  if (::prctl(PR_CAPBSET_DROP, CAP_NET_ADMIN, 0, 0, 0) != 0) {
    why = std::string("PR_CAPBSET_DROP: ") + std::strerror(errno);
    return false;
  }
  (void)::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capget, &hdr, data) != 0) {
    why = std::string("capget: ") + std::strerror(errno);
    return false;
  }
  data[0].effective &= ~kNetAdminBit;
  data[0].permitted &= ~kNetAdminBit;
  data[0].inheritable &= ~kNetAdminBit;
  if (::syscall(SYS_capset, &hdr, data) != 0) {
    why = std::string("capset: ") + std::strerror(errno);
    return false;
  }
  return true;
}

unsigned long effective_caps_low() {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  (void)::syscall(SYS_capget, &hdr, data);
  return data[0].effective;
}

// Results: entry -> (errno or 0, message), parsed from "<entry>\t<errno>\t<message>" lines.
using Results = std::map<std::string, std::pair<int, std::string>>;

Results parse(const std::string& text) {
  Results r;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    auto t1 = line.find('\t');
    auto t2 = line.find('\t', t1 + 1);
    if (t1 == std::string::npos || t2 == std::string::npos) {
      continue;
    }
    r[line.substr(0, t1)] = {std::atoi(line.substr(t1 + 1, t2 - t1 - 1).c_str()),
                             line.substr(t2 + 1)};
  }
  return r;
}

// read_child collects a child's output from |fd| until EOF and waits for its exit status.
std::string read_child(int fd, pid_t pid, int* status) {
  std::string out;
  char buf[1024];
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 20000) <= 0) {
      break;  // wait_exit below kills and reports a hung child
    }
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) {
      break;
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
  *status = wait_exit(pid, 20000);
  return out;
}

// in_child runs |body| in a forked child whose stdout-like |out| pipe the parent collects.
std::string in_child(const std::function<void(std::FILE*)>& body, int* status) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    fail("pipe2");
  }
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    fail("fork");
  }
  if (pid == 0) {
    ::close(p[0]);
    std::FILE* out = ::fdopen(p[1], "w");
    int rc = 0;
    try {
      body(out);
    } catch (const std::exception& e) {
      std::fprintf(out, "exception\t-1\t%s\n", e.what());
      rc = 3;
    }
    std::fflush(out);
    ::_exit(rc);
  }
  ::close(p[1]);
  UniqueFd rd(p[0]);
  return read_child(rd.get(), pid, status);
}

template <typename R>
void report(std::FILE* out, const char* entry, const R& r) {
  if (r.ok()) {
    std::fprintf(out, "%s\t0\tok\n", entry);
  } else {
    std::fprintf(out, "%s\t%d\t%s\n", entry, r.error().code.value(),
                 r.error().message().c_str());
  }
}

void check_refused(const Results& res, const std::string& entry) {
  INFO("entry point " << entry);
  auto it = res.find(entry);
  REQUIRE(it != res.end());
  INFO("errno " << it->second.first << ": " << it->second.second);
  CHECK(it->second.first == EPERM);
  CHECK_THAT(it->second.second, Catch::Contains("CAP_NET_ADMIN"));
  CHECK_THAT(it->second.second, Catch::Contains("rendrctl status"));
  CHECK_THAT(it->second.second, !Catch::Contains("userstack"));
}

LogSink quiet() {
  return [](LogLevel, std::string_view) {};
}

}  // namespace

TEST_CASE("without CAP_NET_ADMIN checkpoint, restore, thaw and probe fail naming the capability "
          "and what helps, the socket keeps working",
          "[.repair][repair][nocap]") {
  const bool v6 = GENERATE(false, true);
  INFO((v6 ? "IPv6" : "IPv4"));
  Netns ns = Netns::create("nocap");
  NetnsScope in(ns);
  Pair pair = loopback_pair(v6);
  data_passes(pair.client.get(), pair.server.get(), "before");

  // Privileged: freeze the server side, so the unprivileged child has a real RepairSocket to thaw
  // and a real snapshot to restore.
  repair::Repairer rep(repair::real_sys(), quiet());
  auto cp = rep.checkpoint(pair.server.get());
  INFO("checkpoint: " << (cp.ok() ? "ok" : cp.error().message()));
  REQUIRE(cp.ok());
  REQUIRE(repair::probe_tcp_repair().ok());  // the parent is privileged: a failure below is the drop

  int status = -1;
  const std::string out = in_child(
      [&](std::FILE* o) {
        std::string why;
        if (!drop_net_admin(why)) {
          std::fprintf(o, "drop\t-1\t%s\n", why.c_str());
          return;
        }
        std::fprintf(o, "capeff\t0\t%lx\n", effective_caps_low());
        repair::Repairer unpriv(repair::real_sys(), quiet());
        report(o, "probe_tcp_repair", repair::probe_tcp_repair());
        report(o, "checkpoint", unpriv.checkpoint(pair.client.get()));
        report(o, "restore", unpriv.restore(cp->snapshot));
        report(o, "thaw", unpriv.thaw(std::move(cp->socket)));
        // The connection is still usable by the unprivileged process after the refusals.
        send_text(pair.client.get(), "child-alive");
      },
      &status);
  INFO("child output:\n" << out);
  REQUIRE(status == 0);
  const Results res = parse(out);
  REQUIRE(res.count("capeff") == 1);
  const unsigned long eff = std::stoul(res.at("capeff").second, nullptr, 16);
  CHECK((eff & kNetAdminBit) == 0);
  CHECK((eff & kNetRawBit) != 0);  // only CAP_NET_ADMIN was dropped
  for (const char* entry : {"probe_tcp_repair", "checkpoint", "restore", "thaw"}) {
    check_refused(res, entry);
  }

  // No silent degradation: the frozen socket is still frozen and still ours; once thawed by a
  // privileged caller, everything the unprivileged child sent arrives and data flows both ways.
  REQUIRE(cp->socket.valid());
  auto thawed = rep.thaw(std::move(cp->socket));
  INFO("thaw: " << (thawed.ok() ? "ok" : thawed.error().message()));
  REQUIRE(thawed.ok());
  CHECK(recv_text(thawed->get(), 11) == "child-alive");
  data_passes(pair.client.get(), thawed->get(), "after");
}

TEST_CASE("under setpriv without CAP_NET_ADMIN checkpoint, restore and probe fail naming the "
          "capability and userstack",
          "[.repair][repair][nocap]") {
  const bool v6 = GENERATE(false, true);
  INFO((v6 ? "IPv6" : "IPv4"));
  Netns ns = Netns::create("nocap-setpriv");
  NetnsScope in(ns);
  Pair pair = loopback_pair(v6);

  // A real snapshot of this connection for the child to (fail to) restore.
  repair::Repairer rep(repair::real_sys(), quiet());
  std::string snap_path;
  {
    auto cp = rep.checkpoint(pair.server.get());
    REQUIRE(cp.ok());
    const auto bytes = encode_snapshot(cp->snapshot);
    auto th = rep.thaw(std::move(cp->socket));
    REQUIRE(th.ok());
    char dir[] = "/tmp/rendr-nocap-XXXXXX";
    REQUIRE(::mkdtemp(dir) != nullptr);
    snap_path = std::string(dir) + "/snapshot.rsnp";
    std::ofstream f(snap_path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    REQUIRE(f.good());
  }

  // The child inherits the client socket (no CLOEXEC) and runs under setpriv.
  const int cfd = pair.client.get();
  REQUIRE(::fcntl(cfd, F_SETFD, 0) == 0);
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(p[1], STDOUT_FILENO);
    const std::string fd_arg = std::to_string(cfd);
    ::execlp("setpriv", "setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", "--",
             RENDR_NOCAP_CHILD, fd_arg.c_str(), snap_path.c_str(), static_cast<char*>(nullptr));
    std::printf("exec\t%d\tsetpriv: %s\n", errno, std::strerror(errno));
    std::fflush(stdout);
    ::_exit(127);
  }
  ::close(p[1]);
  (void)::fcntl(cfd, F_SETFD, FD_CLOEXEC);
  UniqueFd rd(p[0]);
  int status = -1;
  const std::string out = read_child(rd.get(), pid, &status);
  std::remove(snap_path.c_str());
  ::rmdir(snap_path.substr(0, snap_path.rfind('/')).c_str());
  INFO("child output:\n" << out);
  REQUIRE(status == 0);
  const Results res = parse(out);
  REQUIRE(res.count("capeff") == 1);
  const unsigned long long eff = std::stoull(res.at("capeff").second, nullptr, 16);
  CHECK((eff & kNetAdminBit) == 0);
  CHECK((eff & kNetRawBit) != 0);
  for (const char* entry : {"checkpoint", "restore", "probe_tcp_repair"}) {
    check_refused(res, entry);
  }
  // The socket the child failed to checkpoint still carries data, both ways.
  CHECK(recv_text(pair.server.get(), 11) == "child-alive");
  data_passes(pair.client.get(), pair.server.get(), "after");
}
