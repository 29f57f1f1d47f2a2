// SPDX-License-Identifier: Apache-2.0
// rendr-impair on loopback (unprivileged): the delay is visible in both directions for udp and
// tcp, loss 100 % drops everything, tcp carries a large transfer intact with half-close, and
// SIGTERM stops the relay with exit 0. Timing: only lower bounds plus a generous sanity bound.
#include "impair_proc.hpp"

#include <catch2/catch.hpp>

#include <cstring>
#include <random>

using namespace rendr;
using namespace rendr::test;

namespace {
Endpoint loopback(const char* a) {
  auto ep = Endpoint::parse(a);
  REQUIRE(ep.ok());
  return *ep;
}
}  // namespace

TEST_CASE("rendr-impair udp: a 20 ms relay delays each direction by >= 20 ms",
          "[impair][udp]") {
  for (const char* any : {"127.0.0.1:0", "[::1]:0"}) {
    INFO(any);
    UdpEcho echo(loopback(any));
    ImpairProc relay({"udp", "--listen", any, "--forward", echo.addr.to_string(), "--delay-ms", "20"});
    UniqueFd c = bound(loopback(any), SOCK_DGRAM);
    for (int i = 0; i < 5; ++i) {
      double rtt = udp_rtt_ms(c.get(), relay.listen, 5000);
      CHECK(rtt >= 40.0);   // 20 ms out + 20 ms back
      CHECK(rtt < 2000.0);  // sanity only
    }
    CHECK(relay.stop() == 0);
  }
}

TEST_CASE("rendr-impair udp: jitter stays at or above zero, loss 100 % drops all, loss 50 % some",
          "[impair][udp]") {
  UdpEcho echo(loopback("127.0.0.1:0"));
  {
    ImpairProc relay({"udp", "--listen", "127.0.0.1:0", "--forward", echo.addr.to_string(),
                      "--delay-ms", "10", "--jitter-ms", "30", "--seed", "7"});
    UniqueFd c = bound(loopback("127.0.0.1:0"), SOCK_DGRAM);
    for (int i = 0; i < 5; ++i) {
      double rtt = udp_rtt_ms(c.get(), relay.listen, 5000);
      CHECK(rtt >= 0.0);
      CHECK(rtt < 2000.0);
    }
  }
  {
    ImpairProc relay({"udp", "--listen", "127.0.0.1:0", "--forward", echo.addr.to_string(),
                      "--loss", "100"});
    UniqueFd c = bound(loopback("127.0.0.1:0"), SOCK_DGRAM);
    CHECK(udp_rtt_ms(c.get(), relay.listen, 200) < 0);
    CHECK(udp_rtt_ms(c.get(), relay.listen, 200) < 0);
  }
  {
    ImpairProc relay({"udp", "--listen", "127.0.0.1:0", "--forward", echo.addr.to_string(),
                      "--loss", "50", "--seed", "42"});
    UniqueFd c = bound(loopback("127.0.0.1:0"), SOCK_DGRAM);
    int back = 0;
    for (int i = 0; i < 40; ++i) {
      back += udp_rtt_ms(c.get(), relay.listen, 50) >= 0 ? 1 : 0;
    }
    // Each echo survives two 50 % draws (p = 0.25); 0 or 40 of 40 would be ~1e-5 / 1e-24.
    CHECK(back > 0);
    CHECK(back < 40);
  }
}

TEST_CASE("rendr-impair tcp: delay both ways, 4 MiB intact, half-close passes through",
          "[impair][tcp]") {
  TcpEcho echo(loopback("127.0.0.1:0"));
  ImpairProc relay({"tcp", "--listen", "127.0.0.1:0", "--forward", echo.addr.to_string(),
                    "--delay-ms", "20", "--queue-bytes", "262144"});
  auto c = UniqueFd::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(c.ok());
  sockaddr_storage ss{};
  socklen_t len = relay.listen.to_sockaddr(ss);
  REQUIRE(::connect(c->get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
  for (int i = 0; i < 3; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    REQUIRE(::send(c->get(), "ping", 4, 0) == 4);
    char b[4];
    std::size_t got = 0;
    while (got < 4) {
      ssize_t n = ::recv(c->get(), b + got, 4 - got, 0);
      REQUIRE(n > 0);
      got += static_cast<std::size_t>(n);
    }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                    .count();
    CHECK(ms >= 40.0);
    CHECK(ms < 2000.0);
    CHECK(std::memcmp(b, "ping", 4) == 0);
  }
  // 4 MiB through a 256 KiB-per-direction queue: writer thread + reader here.
  std::vector<char> data(4 << 20);
  std::mt19937 rng(1);
  for (auto& x : data) {
    x = static_cast<char>(rng());
  }
  std::thread writer([&] {
    std::size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::send(c->get(), data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) {
        break;
      }
      off += static_cast<std::size_t>(n);
    }
    ::shutdown(c->get(), SHUT_WR);  // the echo server sees EOF only through the relay
  });
  std::vector<char> back;
  back.reserve(data.size());
  char buf[65536];
  for (;;) {
    pollfd pf{c->get(), POLLIN, 0};
    REQUIRE(::poll(&pf, 1, 10000) == 1);
    ssize_t n = ::recv(c->get(), buf, sizeof buf, 0);
    REQUIRE(n >= 0);
    if (n == 0) {
      break;  // EOF: the echo server closed after our FIN reached it
    }
    back.insert(back.end(), buf, buf + n);
  }
  writer.join();
  CHECK(back.size() == data.size());
  CHECK(back == data);
  CHECK(relay.stop() == 0);
}

TEST_CASE("rendr-impair: usage errors exit 2", "[impair][usage]") {
  auto rc = [](const std::string& args) {
    return std::system((std::string(RENDR_IMPAIR_BIN) + " " + args + " >/dev/null 2>&1").c_str());
  };
  auto code = [](int st) { return WIFEXITED(st) ? WEXITSTATUS(st) : -1; };
  CHECK(code(rc("--help")) == 0);
  CHECK(code(rc("")) == 2);
  CHECK(code(rc("sctp --listen 127.0.0.1:0 --forward 127.0.0.1:1")) == 2);
  CHECK(code(rc("udp --listen 127.0.0.1:0")) == 2);
  CHECK(code(rc("udp --listen nonsense --forward 127.0.0.1:1")) == 2);
  CHECK(code(rc("udp --listen 127.0.0.1:0 --forward 127.0.0.1:1 --loss 101")) == 2);
  CHECK(code(rc("tcp --listen 127.0.0.1:0 --forward 127.0.0.1:1 --loss 5")) == 2);
  CHECK(code(rc("udp --listen 127.0.0.1:0 --forward 127.0.0.1:1 --delay-ms -1")) == 2);
}
