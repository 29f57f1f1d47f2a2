// SPDX-License-Identifier: Apache-2.0
// Snapshot + silent removal + rebuild of a live lwIP connection in the middle of a transfer.
#include "tun_lab.hpp"

#include "bench/stats.hpp"
#include "support/require_result.hpp"

#include <rendr/userstack/stack.hpp>

#include <catch2/catch.hpp>

#include <poll.h>

#include <algorithm>
#include <thread>
#include <cstdio>
#include <future>
#include <vector>

using namespace rendr;
using namespace rendr::test;
using namespace std::chrono_literals;

namespace {

// rebuild_during_echo rebuilds the serving connection every |every| during an echo; |hold|
// is how long the flow stays frozen before the snapshot (a migration's shipping time): what
// the peer sends meanwhile is held and replayed at thaw.
void rebuild_during_echo(TunLab& lab, userstack::Stack& st, const char* vip_text,
                         std::uint32_t seed, std::chrono::milliseconds every = 4ms,
                         std::chrono::milliseconds hold = 0ms, std::uint64_t total = 24ULL << 20) {
  const long long resets0 = lab.resets();
  const std::uint64_t kTotal = total;
  const Endpoint vip = Endpoint::parse(vip_text).value();
  auto client = std::async(std::launch::async,
                           [vip, seed, kTotal] { return echo_client(vip, kTotal, seed, 60s); });

  auto accepted = st.accept(5s);
  REQUIRE_OK(accepted);
  userstack::ConnectionPtr conn = std::move(accepted).value();
  const FourTuple tuple = conn->tuple();
  CHECK(tuple.local == vip);

  // The echo server drives the Connection directly and rebuilds it every 10 ms.
  std::vector<std::byte> buf(256 * 1024);
  std::size_t pend_off = 0;
  std::size_t pend_len = 0;
  bool eof = false;
  int rebuilds = 0;
  std::vector<double> rebuild_us;
  std::uint64_t snap_send_max = 0;
  std::uint64_t snap_recv_max = 0;
  std::string failure;
  auto next_rebuild = std::chrono::steady_clock::now() + every;
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    conn->clear_event();
    bool progress = false;
    if (pend_len == 0 && !eof) {
      auto r = conn->read(buf);
      if (r && *r == 0) {
        eof = true;
      } else if (r) {
        pend_off = 0;
        pend_len = *r;
        progress = true;
      } else if (r.error().code != std::errc::resource_unavailable_try_again) {
        failure = "read: " + r.error().message();
        break;
      }
    }
    if (pend_len > 0) {
      auto w = conn->write(std::span<const std::byte>(buf.data() + pend_off, pend_len));
      if (w) {
        pend_off += *w;
        pend_len -= *w;
        progress = progress || *w > 0;
      } else if (w.error().code != std::errc::resource_unavailable_try_again) {
        failure = "write: " + w.error().message();
        break;
      }
    }
    if (eof && pend_len == 0) {
      REQUIRE_OK(conn->shutdown_write());
      break;
    }
    if (std::chrono::steady_clock::now() >= next_rebuild) {
      auto t0 = std::chrono::steady_clock::now();
      st.freeze(tuple);
      if (hold.count() > 0) {
        std::this_thread::sleep_for(hold);  // the migration's "ship" step, frozen
      }
      auto snap = st.snapshot(*conn);
      REQUIRE_OK(snap);
      REQUIRE_FALSE(conn->alive());
      std::byte one{};
      REQUIRE_ERROR(conn->read(std::span<std::byte>(&one, 1)), std::errc::not_connected, "moved");
      auto rebuilt = st.restore(*snap);
      REQUIRE_OK(rebuilt);
      conn = std::move(rebuilt).value();
      st.thaw(tuple);
      auto t1 = std::chrono::steady_clock::now();
      rebuild_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      snap_send_max = std::max<std::uint64_t>(snap_send_max, snap->send_queue.size());
      snap_recv_max = std::max<std::uint64_t>(snap_recv_max, snap->recv_queue.size());
      ++rebuilds;
      next_rebuild = t1 + every;
      continue;
    }
    if (!progress) {
      pollfd pf{conn->event_fd(), POLLIN, 0};
      ::poll(&pf, 1, 5);
    }
  }
  INFO("server: " << failure);
  CHECK(failure.empty());
  EchoResult r = client.get();
  INFO("client: " << r.error);
  CHECK(r.error.empty());
  CHECK(r.received == kTotal);
  CHECK(r.first_bad == -1);
  CHECK_FALSE(r.reset);
  CHECK(r.eof);
  CHECK(lab.resets() == resets0);
  CHECK(rebuilds >= (hold.count() > 0 ? 5 : 10));
  const double p50 = bench::percentile(rebuild_us, 50);
  const double p99 = bench::percentile(rebuild_us, 99);
  std::printf(
      "userstack rebuild %s: %d rebuilds during %.1f MiB echo in %.2f s, freeze+snapshot+"
      "restore+thaw p50 %.0f us p99 %.0f us, max send queue %llu B, max recv queue %llu B, "
      "held %llu replayed %llu\n",
      vip_text, rebuilds, static_cast<double>(kTotal) / (1 << 20), r.seconds, p50, p99,
      static_cast<unsigned long long>(snap_send_max),
      static_cast<unsigned long long>(snap_recv_max),
      static_cast<unsigned long long>(st.counters().rx_held),
      static_cast<unsigned long long>(st.counters().rx_replayed));
}

}  // namespace

TEST_CASE("userstack rebuilds a live connection mid-transfer with 0 bad bytes and 0 RST",
          "[.netns][userstack][netns]") {
  StackLab lab;
  rebuild_during_echo(lab, lab.stack(), "198.18.0.9:8080", 5);
  rebuild_during_echo(lab, lab.stack(), "[fd99::9]:8080", 6);
}

TEST_CASE("userstack holds a frozen flow's packets and replays them at thaw",
          "[.netns][userstack][netns]") {
  StackLab lab;
  // Frozen 5 ms per rebuild, every 15 ms, during a 64 MiB echo: whenever the client has
  // window left it keeps sending into the freeze.
  rebuild_during_echo(lab, lab.stack(), "198.18.0.9:8081", 7, 15ms, 5ms, 64ULL << 20);
  const auto c = lab.stack().counters();
  CHECK(c.rx_held > 0);
  CHECK(c.rx_hold_dropped == 0);
  CHECK(c.rx_replayed == c.rx_held);
}
