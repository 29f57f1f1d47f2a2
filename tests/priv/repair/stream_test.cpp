// SPDX-License-Identifier: Apache-2.0
// The long-haul test: an unmodified peer (Python's socket module, tcp_peer.py) moves
// 256 MiB each way while the serving socket is migrated 10 times mid-stream - across network
// namespaces with TCP_REPAIR, and across processes by SCM_RIGHTS and by pidfd_getfd. The peer
// checks SHA-256 and the byte pattern; the server checks every byte it receives; the peer's TCP
// counters show no reset, and the server side's timestamp clock never goes back (captured where
// the server's segments leave hosts a and b, ts_capture.hpp).
#include "support/gateway_fixture.hpp"
#include "support/sockets.hpp"
#include "support/ts_capture.hpp"
#include "migrate_util.hpp"

#include <rendr/repair/handover.hpp>

#include <catch2/catch.hpp>

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

using namespace rendr;
using namespace rendr::test;

namespace {

constexpr std::uint32_t kSeedToServer = 11;
constexpr std::uint32_t kSeedToPeer = 22;

// Application state of the server: how far each direction got. It travels with the socket.
struct ServerState {
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  std::int64_t bad_offset = -1;  // first mismatching byte received, -1 = none
};

// pump moves data both ways until sent + received reaches |stop_at| (or both directions are
// complete). Non-blocking, bounded by |timeout_ms| without progress.
void pump(int fd, ServerState& st, std::uint64_t total, std::uint64_t stop_at,
          const Pattern& to_peer, const Pattern& to_server, int timeout_ms = 20000) {
  set_nonblocking(fd, true);
  std::vector<std::byte> out(256 * 1024);
  std::vector<std::byte> in(256 * 1024);
  while (st.sent + st.received < stop_at && (st.sent < total || st.received < total)) {
    pollfd p{fd, static_cast<short>(POLLIN | (st.sent < total ? POLLOUT : 0)), 0};
    int r = ::poll(&p, 1, timeout_ms);
    if (r != 1) {
      throw std::runtime_error("pump: no progress for " + std::to_string(timeout_ms) +
                               " ms (sent " + std::to_string(st.sent) + ", received " +
                               std::to_string(st.received) + ")");
    }
    if ((p.revents & POLLOUT) != 0 && st.sent < total) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), total - st.sent));
      to_peer.fill(st.sent, std::span(out).first(n));
      ssize_t w = ::send(fd, out.data(), n, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (w > 0) {
        st.sent += static_cast<std::uint64_t>(w);
      } else if (w < 0 && errno != EAGAIN) {
        throw std::runtime_error(std::string("pump: send: ") + std::strerror(errno));
      }
    }
    if ((p.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      ssize_t n = ::recv(fd, in.data(), in.size(), MSG_DONTWAIT);
      if (n == 0) {
        throw std::runtime_error("pump: unexpected EOF after " + std::to_string(st.received));
      }
      if (n < 0 && errno != EAGAIN) {
        throw std::runtime_error(std::string("pump: recv: ") + std::strerror(errno));
      }
      if (n > 0) {
        auto got = std::span(in).first(static_cast<std::size_t>(n));
        long long bad = to_server.mismatch(st.received, got);
        if (bad >= 0 && st.bad_offset < 0) {
          st.bad_offset = static_cast<std::int64_t>(st.received) + bad;
        }
        st.received += static_cast<std::uint64_t>(n);
      }
    }
  }
}

std::vector<std::byte> state_bytes(const ServerState& s) {
  std::vector<std::byte> b(sizeof s);
  std::memcpy(b.data(), &s, sizeof s);
  return b;
}
ServerState state_from(std::span<const std::byte> b) {
  ServerState s;
  if (b.size() != sizeof s) {
    throw std::runtime_error("bad state payload");
  }
  std::memcpy(&s, b.data(), sizeof s);
  return s;
}

// Process hop via SCM_RIGHTS: a child receives the socket + state, serves a stint, and sends
// both back the same way.
ServerState hop_scm_rights(UniqueFd& fd, ServerState st, std::uint64_t total, std::uint64_t stop_at,
                           const Pattern& to_peer, const Pattern& to_server) {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
  UniqueFd parent_end(sv[0]);
  UniqueFd child_end(sv[1]);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 0;
    try {
      auto got = repair::recv_fd(child_end.get());
      if (!got) {
        ::_exit(10);
      }
      ServerState cs = state_from(got->payload);
      pump(got->fd.get(), cs, total, stop_at, to_peer, to_server);
      if (!repair::send_fd(child_end.get(), got->fd.get(), state_bytes(cs)).ok()) {
        code = 11;
      }
    } catch (...) {
      code = 12;
    }
    ::_exit(code);
  }
  child_end.reset();
  REQUIRE(repair::send_fd(parent_end.get(), fd.get(), state_bytes(st)).ok());
  fd.reset();  // the child holds the only other descriptor now
  auto back = repair::recv_fd(parent_end.get());
  int rc = wait_exit(pid, 60000);
  REQUIRE(rc == 0);
  REQUIRE(back.ok());
  fd = std::move(back->fd);
  return state_from(back->payload);
}

// Process hop via pidfd_getfd: the socket is handed to a child (SCM_RIGHTS), which serves a
// stint and then just reports its state and waits; the parent takes the socket out of the
// running child by pid, like an operator would with a program that knows nothing of rendr.
ServerState hop_pidfd(UniqueFd& fd, ServerState st, std::uint64_t total, std::uint64_t stop_at,
                      const Pattern& to_peer, const Pattern& to_server) {
  const FourTuple tuple = tuple_of(fd.get());
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
  UniqueFd parent_end(sv[0]);
  UniqueFd child_end(sv[1]);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 0;
    try {
      auto got = repair::recv_fd(child_end.get());
      if (!got) {
        ::_exit(10);
      }
      ServerState cs = state_from(got->payload);
      pump(got->fd.get(), cs, total, stop_at, to_peer, to_server);
      auto b = state_bytes(cs);
      if (::send(child_end.get(), b.data(), b.size(), 0) != static_cast<ssize_t>(b.size())) {
        code = 11;
      }
      char c = 0;
      (void)::recv(child_end.get(), &c, 1, 0);  // "you may exit"
    } catch (...) {
      code = 12;
    }
    ::_exit(code);
  }
  child_end.reset();
  REQUIRE(repair::send_fd(parent_end.get(), fd.get(), state_bytes(st)).ok());
  fd.reset();
  std::vector<std::byte> b(sizeof(ServerState));
  pollfd p{parent_end.get(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 60000) == 1);
  REQUIRE(::recv(parent_end.get(), b.data(), b.size(), 0) == static_cast<ssize_t>(b.size()));
  auto num = repair::find_socket_fd(pid, tuple);
  REQUIRE(num.ok());
  auto taken = repair::take_fd(pid, *num);
  REQUIRE(taken.ok());
  fd = std::move(*taken);
  char go = 1;
  REQUIRE(::send(parent_end.get(), &go, 1, 0) == 1);
  REQUIRE(wait_exit(pid, 10000) == 0);
  return state_from(b);
}

}  // namespace

TEST_CASE("256 MiB each way with the serving socket migrated 10 times across netns and processes",
          "[.repair][repair][stream]") {
  const std::uint64_t total = std::getenv("RENDR_STREAM_MIB") != nullptr
                                  ? std::strtoull(std::getenv("RENDR_STREAM_MIB"), nullptr, 10) << 20
                                  : 256ULL << 20;
  const bool v6 = GENERATE(false, true);
  INFO((v6 ? "IPv6" : "IPv4"));
  GatewayFixture lab;
  Pattern to_peer(kSeedToPeer);
  Pattern to_server(kSeedToServer);
  const std::uint16_t port = 7300;
  auto vip = *Endpoint::parse_address(v6 ? GatewayFixture::kVip6 : GatewayFixture::kVip4, port);
  UniqueFd listener = listen_on(lab.a, vip);
  const long long resets0 = snmp_counter(lab.peer, "Tcp", "EstabResets");
  const long long outrst0 = snmp_counter(lab.peer, "Tcp", "OutRsts");
  const long long paws0 = snmp_counter(lab.peer, "TcpExt", "PAWSEstab");

  const std::string out_path = "/tmp/rendr-stream-peer-" + std::to_string(::getpid()) + ".json";
  pid_t peer = lab.peer.spawn({"python3", std::string(RENDR_SOURCE_DIR) + "/tests/support/tcp_peer.py",
                               vip.address_string(), std::to_string(port), "--send",
                               std::to_string(total), "--recv", std::to_string(total),
                               "--seed-send", std::to_string(kSeedToServer), "--seed-recv",
                               std::to_string(kSeedToPeer), "--timeout", "60"},
                              out_path);
  UniqueFd fd = accept_one(listener.get());
  listener.reset();
  TsCapture ts_a(lab.a, port);
  TsCapture ts_b(lab.b, port);

  ServerState st;
  const Netns* where = &lab.a;
  int netns_moves = 0;
  int scm_moves = 0;
  int pidfd_moves = 0;
  const int kMigrations = 10;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kMigrations; ++i) {
    const std::uint64_t stop_at = (2 * total) * static_cast<std::uint64_t>(i + 1) / (kMigrations + 1);
    switch (i % 3) {
      case 0: {  // across network namespaces (TCP_REPAIR)
        pump(fd.get(), st, total, stop_at, to_peer, to_server);
        const Netns& to = where == &lab.a ? lab.b : lab.a;
        fd = migrate(lab, fd, to);
        where = &to;
        ++netns_moves;
        break;
      }
      case 1:  // across processes, SCM_RIGHTS both ways
        st = hop_scm_rights(fd, st, total, stop_at, to_peer, to_server);
        ++scm_moves;
        break;
      default:  // across processes, taken out of the running process with pidfd_getfd
        st = hop_pidfd(fd, st, total, stop_at, to_peer, to_server);
        ++pidfd_moves;
        break;
    }
    INFO("after migration " << i << ": sent " << st.sent << " received " << st.received);
    REQUIRE(st.bad_offset == -1);
  }
  pump(fd.get(), st, total, 2 * total, to_peer, to_server);
  expect_eof(fd.get(), 30000);  // the peer closes after it has everything
  fd.reset();
  const int rc = wait_exit(peer, 120000);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string report = read_file(out_path);
  std::remove(out_path.c_str());
  INFO("peer report: " << report);
  WARN("stream " << (v6 ? "IPv6" : "IPv4") << ": " << (total >> 20) << " MiB each way, "
                 << kMigrations << " migrations (" << netns_moves << " netns, " << scm_moves
                 << " SCM_RIGHTS, " << pidfd_moves << " pidfd_getfd) in " << secs << " s");
  CHECK(rc == 0);
  CHECK(st.sent == total);
  CHECK(st.received == total);
  CHECK(st.bad_offset == -1);
  CHECK(report.find("\"recv_sha256\": \"" + to_peer.sha256_hex(total) + "\"") != std::string::npos);
  CHECK(report.find("\"recv_pattern_ok\": true") != std::string::npos);
  CHECK(report.find("\"received\": " + std::to_string(total)) != std::string::npos);
  CHECK(report.find("\"error\": \"\"") != std::string::npos);
  CHECK(netns_moves == 4);
  CHECK(scm_moves + pidfd_moves == 6);
  CHECK(snmp_counter(lab.peer, "Tcp", "EstabResets") == resets0);
  CHECK(snmp_counter(lab.peer, "Tcp", "OutRsts") == outrst0);
  // Restores never set the timestamp clock back: every segment the server side sent, in the
  // order hosts a and b handed them to their devices, carries a TSval no lower than the one
  // before (before restored_ts_clock: 1 lower after ~1 move in 4, at the window probe leaving
  // repair mode). The peer's PAWSEstab also counts segments that arrive out of order: it was
  // 1 in 2 loaded CI runs of ~5 (every byte delivered) while the source never stepped back in
  // 14 captured runs here - a drop on the way, most likely veth backlogs on two CPUs. One is
  // allowed and reported; a clock that goes back drops more than one.
  std::size_t captured = 0;
  const std::string back = ts_went_back({ts_a.stop(), ts_b.stop()}, &captured);
  INFO("captured " << captured << " segments, dropped " << ts_a.drops() + ts_b.drops());
  INFO("clock went back: " << back);
  CHECK(back.empty());
  CHECK(captured > 1000);
  const long long paws = snmp_counter(lab.peer, "TcpExt", "PAWSEstab") - paws0;
  if (paws != 0) {
    WARN("the peer dropped " << paws << " segment(s) as PAWS (out of order on the way)");
  }
  CHECK(paws <= 1);
}
