// SPDX-License-Identifier: Apache-2.0
// Silence detection on a busy host (docs/engine.md "How silence is decided"). Two flows with a
// 500 ms freshness window run side by side in the multipath lab for ~20 s while two child
// processes spin on the 2 cores: a packet flow on a quic DATAGRAM path (lab path 1) and a stream
// flow on a tcp path (lab path 2). No path may be failed for silence and nothing may be lost.
// Then nftables drops both paths silently (still under load): each must be declared dead
// within two windows plus one probe interval plus 300 ms of lateness for the check itself -
// judge_silence never postpones a verdict past first unanswered probe + 2 windows, and the
// first unanswered probe leaves at most one probe interval after the cut.
#include "quic_lab.hpp"

#include <rendr/engine/stats_json.hpp>

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <iostream>
#include <optional>
#include <thread>

using namespace rendr;
using namespace std::chrono_literals;
using bench::EngineRig;
using rendr::test::QuicCerts;

namespace {

constexpr auto kWindow = 500ms;
constexpr auto kProbe = 50ms;
constexpr auto kRun = 20s;

engine::FlowConfig window_cfg() {
  auto c = bench::lab_failover_config();
  c.probe_interval = kProbe;
  c.fresh_min = kWindow;
  c.fresh_max = kWindow;
  c.migration_budget = 10s;
  return c;
}

// CpuHogs: |n| child processes spinning at nice 0 until destroyed (SIGKILL), or at the latest
// when the test process dies (PDEATHSIG) or after 120 s (alarm).
class CpuHogs {
 public:
  explicit CpuHogs(int n) {
    for (int i = 0; i < n; ++i) {
      const pid_t pid = ::fork();
      if (pid == 0) {
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        ::alarm(120);
        for (;;) {
          asm volatile("" ::: "memory");  // a side effect: the loop may not be removed
        }
      }
      if (pid > 0) {
        pids_.push_back(pid);
      }
    }
  }
  ~CpuHogs() {
    for (const pid_t p : pids_) {
      ::kill(p, SIGKILL);
      ::waitpid(p, nullptr, 0);
    }
  }
  CpuHogs(const CpuHogs&) = delete;
  CpuHogs& operator=(const CpuHogs&) = delete;
  [[nodiscard]] std::size_t count() const { return pids_.size(); }

 private:
  std::vector<pid_t> pids_;
};

std::string stats_text(const char* what, const engine::FlowStats& s) {
  return std::string(what) + ": " + engine::flow_stats_json(s);
}

void check_no_silence(const char* what, const engine::FlowStats& s) {
  INFO(stats_text(what, s));
  CHECK(s.paths_lost == 0);
  CHECK(s.last_path_down.empty());
  CHECK(s.migration_count == 0);
}

// wait_lost: how long after |cut[i]| each flow's |stats[i]| first reported a lost path (polled
// every 5 ms, up to |limit|; limit when never).
std::vector<std::chrono::milliseconds> wait_lost(
    const std::vector<std::function<engine::FlowStats()>>& stats,
    const std::vector<std::chrono::steady_clock::time_point>& cut,
    std::chrono::milliseconds limit) {
  std::vector<std::optional<std::chrono::steady_clock::time_point>> at(stats.size());
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < limit) {
    bool all = true;
    for (std::size_t i = 0; i < stats.size(); ++i) {
      if (!at[i] && stats[i]().paths_lost > 0) {
        at[i] = std::chrono::steady_clock::now();
      }
      all = all && at[i].has_value();
    }
    if (all) {
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  std::vector<std::chrono::milliseconds> out;
  for (std::size_t i = 0; i < stats.size(); ++i) {
    out.push_back(at[i] ? std::chrono::duration_cast<std::chrono::milliseconds>(*at[i] - cut[i])
                        : limit);
  }
  return out;
}

}  // namespace

TEST_CASE(
    "engine silence under load: a 500 ms window fails no healthy tcp or quic path and "
    "still catches a silent drop",
    "[.netns][engine][silence][load]") {
  lab::MultipathOptions opt;
  opt.paths = 2;
  auto made = EngineRig::create("rls" + std::to_string(::getpid()), opt);
  REQUIRE_OK(made);
  auto& rig = **made;
  QuicCerts k;
  auto ql = test::quic_lab::listen(rig, k, window_cfg());
  REQUIRE_OK(ql);
  ListenOptions lo;
  lo.flow = window_cfg();
  auto tl = rig.listen_tcp(lo);
  REQUIRE_OK(tl);

  auto pk = test::quic_lab::connect<PacketConnPtr>(
      rig, **ql, test::quic_lab::dial_opts(k, 1, (*ql)->port(), window_cfg()));
  DialOptions so;
  static_cast<engine::FlowConfig&>(so) = window_cfg();
  so.paths = {EngineRig::path(2, (*tl)->port(), "tcp")};
  auto st = test::quic_lab::connect<ConnPtr>(rig, **tl, so);

  CpuHogs hogs(2);
  REQUIRE(hogs.count() == 2);

  // Paced writers: 1 KB packets at ~2000 pps, 32 KiB of stream every 10 ms (~3.2 MB/s).
  constexpr int kPacketsPerTick = 10;
  constexpr auto kTick = 5ms;
  const int packets = static_cast<int>(kRun / kTick) * kPacketsPerTick;
  constexpr std::size_t kChunk = 32 * 1024;
  const std::uint64_t stream_total = static_cast<std::uint64_t>(kRun / 10ms) * kChunk;
  std::string pk_error;
  std::thread pk_writer([&] {
    std::vector<std::byte> p(1000);
    auto next = std::chrono::steady_clock::now();
    for (int i = 0; i < packets; ++i) {
      std::memcpy(p.data(), &i, sizeof i);
      if (auto w = pk.client->write(p, deadline_in(10s)); !w) {
        pk_error = w.error().message();
        return;
      }
      if ((i + 1) % kPacketsPerTick == 0) {
        next += kTick;
        std::this_thread::sleep_until(next);
      }
    }
  });
  std::string st_error;
  std::thread st_writer([&] {
    test::Pattern pat(77);
    std::vector<std::byte> buf(kChunk);
    auto next = std::chrono::steady_clock::now();
    for (std::uint64_t off = 0; off < stream_total; off += kChunk) {
      pat.fill(off, buf);
      if (auto w = st.client->write(buf, deadline_in(10s)); !w) {
        st_error = w.error().message();
        return;
      }
      next += 10ms;
      std::this_thread::sleep_until(next);
    }
  });
  std::vector<int> seen(static_cast<std::size_t>(packets), 0);
  std::string pk_read_error;
  std::thread pk_reader([&] {
    std::vector<std::byte> in;
    for (int n = 0; n < packets; ++n) {
      auto r = pk.server->read(in, deadline_in(10s));
      if (!r || !*r || in.size() != 1000) {
        pk_read_error = r ? "short read" : r.error().message();
        return;
      }
      int id = -1;
      std::memcpy(&id, in.data(), sizeof id);
      if (id < 0 || id >= packets) {
        pk_read_error = "bad id";
        return;
      }
      seen[static_cast<std::size_t>(id)] += 1;
    }
  });
  test::api::read_verify(*st.server, stream_total, 77);
  st_writer.join();
  pk_writer.join();
  pk_reader.join();
  CHECK(st_error.empty());
  CHECK(pk_error.empty());
  CHECK(pk_read_error.empty());
  CHECK(std::count(seen.begin(), seen.end(), 0) == 0);
  CHECK(std::count_if(seen.begin(), seen.end(), [](int n) { return n > 1; }) == 0);

  const auto pc = pk.client->stats();
  const auto ps = pk.server->stats();
  const auto sc = st.client->stats();
  const auto ss = st.server->stats();
  // The numbers docs/engine.md quotes: timer lateness and reprieves under this load.
  std::cout << stats_text("quic packet client", pc) << "\n"
            << stats_text("quic packet server", ps) << "\n"
            << stats_text("tcp stream client", sc) << "\n"
            << stats_text("tcp stream server", ss) << "\n";
  check_no_silence("quic packet client", pc);
  check_no_silence("quic packet server", ps);
  check_no_silence("tcp stream client", sc);
  check_no_silence("tcp stream server", ss);
  CHECK(pc.timer_fired > 0);
  CHECK(sc.timer_fired > 0);

  // A real blackhole, still under load: both paths dropped silently at once.
  // Each cut is timed from just before its nft command (which takes a while under load): a
  // lower bound, and the upper bound then also covers the command itself.
  const auto cut1 = std::chrono::steady_clock::now();
  REQUIRE_OK(rig.lab().drop(1, true));
  const auto cut2 = std::chrono::steady_clock::now();
  REQUIRE_OK(rig.lab().drop(2, true));
  constexpr auto kBound = std::chrono::milliseconds(2 * kWindow + kProbe + 300ms);
  const auto took =
      wait_lost({[&] { return pk.client->stats(); }, [&] { return st.client->stats(); }},
                {cut1, cut2}, 5000ms);
  const auto q_took = took[0];
  const auto t_took = took[1];
  std::cout << "silent drop detected: quic " << q_took.count() << " ms, tcp " << t_took.count()
            << " ms (bound " << kBound.count() << " ms); reprieves quic "
            << pk.client->stats().silence_pending_reprieves << " pending "
            << pk.client->stats().silence_starved_reprieves << " starved, tcp "
            << st.client->stats().silence_pending_reprieves << " pending "
            << st.client->stats().silence_starved_reprieves << " starved\n";
  CHECK(pk.client->stats().paths_lost == 1);
  CHECK(st.client->stats().paths_lost == 1);
  CHECK(q_took >= kWindow - kProbe);
  CHECK(t_took >= kWindow - kProbe);
  CHECK(q_took <= kBound);
  CHECK(t_took <= kBound);
  CHECK_THAT(pk.client->stats().last_path_down, Catch::Contains("silent"));
  CHECK_THAT(st.client->stats().last_path_down, Catch::Contains("silent"));
}
