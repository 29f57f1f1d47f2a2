// SPDX-License-Identifier: Apache-2.0
// A bridged connection is rebuilt under a server that keeps its fd: the Bridge is detached, the
// bytes in the pump's hands go into the snapshot (account_bridge), the connection is restored
// and the Bridge resumes on the same pump end. This is what the agent does for a userstack
// flow; the server never notices.
#include "tun_lab.hpp"

#include "bench/stats.hpp"
#include "support/require_result.hpp"

#include <rendr/userstack/bridge.hpp>
#include <rendr/userstack/stack.hpp>

#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <future>
#include <thread>

using namespace rendr;
using namespace rendr::test;
using namespace std::chrono_literals;

TEST_CASE("userstack moves a bridged connection while the server keeps its fd",
          "[.netns][userstack][netns]") {
  StackLab lab;
  userstack::Stack& st = lab.stack();
  const long long resets0 = lab.resets();
  constexpr std::uint64_t kTotal = 24ULL << 20;
  constexpr std::size_t kPump = 64U << 10;  // the pump's buffer each way
  auto client = std::async(std::launch::async, [] {
    return echo_client(Endpoint::parse("198.18.0.12:8443").value(), kTotal, 9, 60s);
  });
  auto acc = st.accept(5s);
  REQUIRE_OK(acc);
  const FourTuple tuple = (*acc)->tuple();
  auto started = userstack::Bridge::start(std::move(acc).value(), kPump);
  REQUIRE_OK(started);
  std::unique_ptr<userstack::Bridge> bridge = std::move(started).value();
  UniqueFd server_fd = bridge->take_fd();
  // The server: a plain blocking echo loop on its fd, unaware of any move.
  std::thread server([fd = server_fd.get()] {
    std::vector<char> buf(128 * 1024);
    for (;;) {
      ssize_t n = ::read(fd, buf.data(), buf.size());
      if (n <= 0) {
        break;
      }
      for (ssize_t off = 0; off < n;) {
        ssize_t w = ::write(fd, buf.data() + off, static_cast<std::size_t>(n - off));
        if (w <= 0) {
          return;
        }
        off += w;
      }
    }
    ::shutdown(fd, SHUT_WR);
  });
  // On any failure: unblock the server (its reads end) and join it before the stack goes.
  struct Joiner {
    std::thread& t;
    int fd;
    ~Joiner() {
      if (t.joinable()) {
        ::shutdown(fd, SHUT_RDWR);
        t.join();
      }
    }
  } joiner{server, server_fd.get()};

  int moves = 0;
  std::uint64_t carried_to_server = 0;
  std::uint64_t carried_from_server = 0;
  std::string stop_reason;
  std::vector<double> us;
  while (client.wait_for(4ms) != std::future_status::ready) {
    auto t0 = std::chrono::steady_clock::now();
    st.freeze(tuple);
    auto state = bridge->detach();
    REQUIRE_OK(state);
    if (!state->pump_end) {
      // The pump finished both directions just now: nothing left to move.
      auto ci = state->conn->info();
      stop_reason = "pump finished: reset=" + std::to_string(bridge->stats().reset) +
                    " state=" + std::string(to_string(ci.state)) +
                    " alive=" + std::to_string(state->conn->alive()) +
                    " to_server=" + std::to_string(bridge->stats().to_server) +
                    " peer_eof=" + std::to_string(state->peer_eof) +
                    " server_eof=" + std::to_string(state->server_eof) + " after moves " +
                    std::to_string(moves);
      st.thaw(tuple);
      break;
    }
    auto snap = st.snapshot(*state->conn);
    if (!snap) {
      // The flow ended under us (e.g. fully closed): resume where it was and stop moving.
      stop_reason = snap.error().message();
      st.thaw(tuple);
      auto again = userstack::Bridge::resume(std::move(*state), kPump);
      REQUIRE_OK(again);
      bridge = std::move(again).value();
      break;
    }
    carried_to_server += state->to_server.size();
    carried_from_server += state->from_server.size();
    userstack::account_bridge(*snap, *state);
    auto restored = st.restore(*snap);
    REQUIRE_OK(restored);
    state->conn = std::move(restored).value();
    auto resumed = userstack::Bridge::resume(std::move(*state), kPump);
    REQUIRE_OK(resumed);
    bridge = std::move(resumed).value();
    st.thaw(tuple);
    us.push_back(
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    ++moves;
  }
  EchoResult r = client.get();
  bridge.reset();
  if (server.joinable()) {
    server.join();
  }
  INFO("client: " << r.error << " / moves stopped: " << stop_reason);
  CHECK(r.error.empty());
  CHECK(r.received == kTotal);
  CHECK(r.first_bad == -1);
  CHECK(r.eof);
  CHECK(lab.resets() == resets0);
  CHECK(moves >= 10);
  CHECK(carried_to_server + carried_from_server > 0);  // the pump's bytes really were in flight
  std::printf(
      "userstack bridged move: %d moves during %.0f MiB echo in %.2f s, detach+snapshot+"
      "restore+resume p50 %.0f us, pump bytes carried %llu to server / %llu from server\n",
      moves, static_cast<double>(kTotal) / (1 << 20), r.seconds,
      bench::percentile(us, 50), static_cast<unsigned long long>(carried_to_server),
      static_cast<unsigned long long>(carried_from_server));
}
