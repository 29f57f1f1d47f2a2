// SPDX-License-Identifier: Apache-2.0
// The flow core's parts on their own: replay ledger, reorder buffer, path estimator, and the
// prime / bond scheduler decisions, the frame buffer pool and cache, with made-up times.
#include <rendr/engine/core/frame_cache.hpp>
#include "ledger.hpp"
#include "reorder.hpp"

#include <rendr/engine/errors.hpp>
#include <rendr/engine/core/path_quality.hpp>
#include <rendr/engine/core/scheduler.hpp>

#include <catch2/catch.hpp>

using namespace rendr;
using namespace rendr::engine;
using namespace std::chrono_literals;

namespace {
const TimePoint t0 = TimePoint{} + 1h;
std::vector<std::byte> frame_of(std::size_t n) { return std::vector<std::byte>(n); }
}  // namespace

TEST_CASE("engine ledger: bounded by frames and bytes, released by cumulative ACK",
          "[engine][ledger]") {
  detail::Ledger l(4, 1000, 2);
  CHECK(l.can_push_data(5000));  // empty: one frame always fits
  for (int i = 0; i < 4; ++i) {
    REQUIRE(l.can_push_data(100));
    l.push(frame_of(100), true);
  }
  CHECK_FALSE(l.can_push_data(100));  // frame bound
  CHECK(l.next_seq() == 5);
  // Control frames use their own small reserve, so BYE never waits for window.
  REQUIRE(l.can_push_control());
  l.push(frame_of(9), false);
  REQUIRE(l.can_push_control());
  l.push(frame_of(9), false);
  CHECK_FALSE(l.can_push_control());
  auto rel = l.release_below(3);
  CHECK(rel.frames == 2);
  CHECK(rel.data_frames == 2);
  CHECK(l.ack_next() == 3);
  CHECK(l.find(2) == nullptr);
  REQUIRE(l.find(3) != nullptr);
  CHECK(l.find(3)->seq == 3);
  CHECK(l.can_push_data(100));
  CHECK_FALSE(l.can_push_data(900));  // byte bound: 218 in use
  rel = l.release_below(7);
  CHECK(rel.frames == 4);
  CHECK(l.empty());
  CHECK(l.bytes() == 0);
  CHECK(l.frames_high_water() == 6);
}

TEST_CASE("engine reorder: ring by SEQ distance, duplicates, hard caps", "[engine][reorder]") {
  detail::ReorderBuffer r(8, 100);
  const auto item = [](std::size_t n) {
    detail::RecvItem i;
    i.payload.own.resize(n);
    return i;
  };
  auto a = r.insert(3, item(10));
  REQUIRE(a.ok());
  CHECK(*a == detail::ReorderBuffer::Insert::stored);
  CHECK(r.has_gap());
  CHECK_FALSE(r.head_ready());
  auto dup = r.insert(3, item(10));
  REQUIRE(dup.ok());
  CHECK(*dup == detail::ReorderBuffer::Insert::duplicate);
  REQUIRE(r.insert(1, item(10)).ok());
  REQUIRE(r.insert(2, item(10)).ok());
  for (std::uint64_t s = 1; s <= 3; ++s) {
    REQUIRE(r.head_ready());
    (void)r.pop_head();
  }
  CHECK(r.expected() == 4);
  CHECK(r.frames() == 0);
  auto old = r.insert(2, item(1));
  REQUIRE(old.ok());
  CHECK(*old == detail::ReorderBuffer::Insert::duplicate);
  auto far = r.insert(12, item(1));  // distance 8 == cap
  REQUIRE_FALSE(far.ok());
  CHECK(far.error().code == make_error_code(errc::recv_window_exceeded));
  REQUIRE(r.insert(11, item(60)).ok());
  auto heavy = r.insert(10, item(60));
  REQUIRE_FALSE(heavy.ok());
  CHECK(r.frames_high_water() == 3);
}

TEST_CASE("engine estimator: RTT, jitter, loss and the windows derived from them",
          "[engine][estimator]") {
  PathEstimator e;
  CHECK_FALSE(e.has_rtt());
  CHECK(e.fresh_window(1s, 500ms, 4s) == 3s);
  CHECK(e.rto(20ms, 1s) == 20ms);
  e.on_rtt_sample(100ms);
  e.on_rtt_sample(100ms);
  CHECK(e.srtt() == 100ms);
  CHECK(e.min_rtt() == 100ms);
  // fresh = clamp(max(3 x 10 ms, 4 x 100 + 2 x jitter + 10 ms), 500 ms, 4 s)
  CHECK(e.fresh_window(10ms, 500ms, 4s) >= 500ms);
  CHECK(e.fresh_window(10ms, 100ms, 4s) > 400ms);
  CHECK(e.fresh_window(1s, 500ms, 4s) == 3s);
  CHECK(e.fresh_window(10s, 500ms, 4s) == 4s);  // capped
  for (int i = 0; i < 9; ++i) {
    e.on_probe_outcome(true);
  }
  e.on_probe_outcome(false);
  CHECK(e.loss_ppt() == 100);  // 1 of 10 = 10 %
  // score = rtt + jitter + 10 ms per % loss = 100 + jitter + 100
  CHECK(e.score_ms() == Approx(200.0 + std::chrono::duration<double, std::milli>(e.jitter()).count()));
}

TEST_CASE("engine estimator: the clean RTT is the least of the last clean samples (nothing of ours queued ahead)",
          "[engine][estimator][bond]") {
  PathEstimator e;
  CHECK_FALSE(e.clean_rtt().has_value());
  e.on_rtt_sample(81us);
  e.on_clean_rtt(81us);
  REQUIRE(e.clean_rtt().has_value());
  CHECK(*e.clean_rtt() == 81us);
  // A probe behind up to 16 KiB of our own data in a 40 Mbit/s queue: an unloaded sample for
  // the score, not a clean one.
  e.on_rtt_sample(3009us);
  CHECK(e.latest_rtt() == 3009us);
  CHECK(*e.clean_rtt() == 81us);
  // One late wake-up is not a slow path; the path itself got slow when the whole window says so.
  e.on_clean_rtt(5ms);
  CHECK(*e.clean_rtt() == 81us);
  e.on_clean_rtt(60ms);
  CHECK(*e.clean_rtt() == 81us);
  e.on_clean_rtt(60ms);
  CHECK(*e.clean_rtt() == 5ms);
  e.on_clean_rtt(60ms);
  CHECK(*e.clean_rtt() == 60ms);
  // A healthy best path and this one's queue-inflated sample: not stuck when judged clean.
  BondCursor c(1, 3.0);
  std::vector<BondPath> judged_latest = {{1, 81us}, {2, 3009us}};
  (void)c.next(judged_latest);
  (void)c.next(judged_latest);
  CHECK(c.stuck_skips() > 0);  // what the latest sample did to the lab's bond gate
  BondCursor d(1, 3.0);
  std::vector<BondPath> judged_clean = {{1, 81us}, {2, 95us}};
  (void)d.next(judged_clean);
  (void)d.next(judged_clean);
  CHECK(d.stuck_skips() == 0);
}

TEST_CASE("engine estimator: loaded samples widen the windows but never move the score",
          "[engine][estimator]") {
  PathEstimator e;
  e.on_rtt_sample(20ms);
  CHECK(e.jitter() == 0ms);  // jitter grows from differences only
  const double score = e.score_ms();
  const auto fresh = e.fresh_window(10ms, 50ms, 4s);
  for (int i = 0; i < 20; ++i) {
    e.on_rtt_sample(300ms, true);  // a probe that queued behind our own bulk data
  }
  CHECK(e.srtt() == 20ms);
  CHECK(e.score_ms() == Approx(score));
  CHECK(e.window_rtt() > 250ms);
  CHECK(e.fresh_window(10ms, 50ms, 4s) > fresh);
  CHECK(e.rto(20ms, 2s) > 250ms);
}

TEST_CASE("engine prime: hysteresis margin, dwell and cooldown", "[engine][sched][prime]") {
  PrimeSelector sel({0.25, 5s, 30s});
  const PathId a = 1;
  const PathId b = 2;
  // b is better but inside the margin: 85 is not < 100 / 1.25 = 80.
  std::vector<PathScore> sc = {{a, 100.0}, {b, 85.0}};
  CHECK_FALSE(sel.tick(a, sc, t0).has_value());
  CHECK_FALSE(sel.tracked().has_value());
  // Outside the margin: tracked, but must stay best for the dwell.
  sc = {{a, 100.0}, {b, 70.0}};
  CHECK_FALSE(sel.tick(a, sc, t0 + 1s).has_value());
  CHECK(sel.tracked() == b);
  CHECK_FALSE(sel.tick(a, sc, t0 + 5s).has_value());
  // A blip back inside the margin restarts the dwell.
  CHECK_FALSE(sel.tick(a, {{{a, 100.0}, {b, 90.0}}}, t0 + 5500ms).has_value());
  CHECK_FALSE(sel.tick(a, sc, t0 + 6s).has_value());
  CHECK_FALSE(sel.tick(a, sc, t0 + 10s).has_value());
  auto sw = sel.tick(a, sc, t0 + 11s);
  REQUIRE(sw.has_value());
  CHECK(*sw == b);
  // Now on b; a gets much better, stays better past the dwell, but the cooldown (30 s from
  // the switch at 11 s) holds it until 41 s.
  sc = {{a, 10.0}, {b, 70.0}};
  CHECK_FALSE(sel.tick(b, sc, t0 + 12s).has_value());
  CHECK_FALSE(sel.tick(b, sc, t0 + 20s).has_value());
  CHECK_FALSE(sel.tick(b, sc, t0 + 40s).has_value());
  auto back = sel.tick(b, sc, t0 + 41s);
  REQUIRE(back.has_value());
  CHECK(*back == a);
  // No evidence for the active path: never a quality switch.
  CHECK_FALSE(sel.tick(a, {{{a, std::nullopt}, {b, 1.0}}}, t0 + 200s).has_value());
}

TEST_CASE("engine prime: failover picks the best scored path, unscored last",
          "[engine][sched][prime]") {
  std::vector<PathScore> sc = {{3, std::nullopt}, {5, 40.0}, {4, 20.0}};
  CHECK(PrimeSelector::best_for_failover(sc) == PathId{4});
  sc = {{7, std::nullopt}, {6, std::nullopt}};
  CHECK(PrimeSelector::best_for_failover(sc) == PathId{6});
  CHECK_FALSE(PrimeSelector::best_for_failover({}).has_value());
}

TEST_CASE("engine bond: round robin with N-frame pinning, stuck paths skipped",
          "[engine][sched][bond]") {
  BondCursor c(3, 3.0);
  std::vector<BondPath> paths = {{1, 10ms}, {2, 12ms}};
  std::vector<PathId> got;
  for (int i = 0; i < 12; ++i) {
    got.push_back(c.next(paths));
  }
  CHECK(got == std::vector<PathId>{1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2});
  CHECK(c.stuck_skips() == 0);
  // Path 2 becomes stuck (RTT > 3 x best): skipped, counted.
  paths = {{1, 10ms}, {2, 40ms}};
  got.clear();
  for (int i = 0; i < 6; ++i) {
    got.push_back(c.next(paths));
  }
  CHECK(got == std::vector<PathId>{1, 1, 1, 1, 1, 1});
  CHECK(c.stuck_skips() > 0);
  // Sub-millisecond paths: 3x the best RTT but only 200 us slower is noise, not stuck (the lab's
  // bond gate lost a third of its throughput to such skips); 3x and 2 ms slower is stuck.
  BondCursor e(1, 3.0);
  std::vector<BondPath> lan = {{1, 54us}, {2, 254us}};
  got.clear();
  for (int i = 0; i < 4; ++i) {
    got.push_back(e.next(lan));
  }
  CHECK(got == std::vector<PathId>{1, 2, 1, 2});
  CHECK(e.stuck_skips() == 0);
  lan = {{1, 54us}, {2, 2500us}};
  CHECK(e.next(lan) == 1);
  CHECK(e.next(lan) == 1);
  CHECK(e.stuck_skips() > 0);
  // A path without an RTT sample is never stuck.
  BondCursor d(1, 3.0);
  std::vector<BondPath> fresh = {{1, 10ms}, {2, std::nullopt}};
  CHECK(d.next(fresh) == 1);
  CHECK(d.next(fresh) == 2);
  // Mode switch rules.
  CHECK(check_mode_switch(Mode::prime, Mode::bond).ok());
  CHECK(check_mode_switch(Mode::race, Mode::prime).ok());
  CHECK_FALSE(check_mode_switch(Mode::bond, Mode::race).ok());
}

TEST_CASE("engine frame cache: bounded, refills empty pools, emptied when idle",
          "[engine][memory]") {
  auto& cache = detail::FrameCache::instance();
  cache.set_limit(0);  // start empty whatever ran before in this process
  constexpr std::size_t kFrame = kHeaderSize + kMaxPayload;
  cache.set_limit(4 * kFrame);
  const auto base = cache.stats();
  CHECK(base.held_buffers == 0);
  CHECK(base.limit_bytes == 4 * kFrame);

  std::vector<detail::Buffer> six;
  for (int i = 0; i < 6; ++i) {
    six.emplace_back(kFrame);
  }
  six.emplace_back(100);  // too small to cache: freed
  cache.give(six);
  CHECK(six.empty());
  auto s = cache.stats();
  CHECK(s.held_buffers == 4);  // the bound, not the count given
  CHECK(s.held_bytes == 4 * kFrame);
  CHECK(s.released - base.released == 2);

  {
    detail::BufferPool pool;
    auto a = pool.take(kFrame);  // an empty pool refills from the cache
    CHECK(a.empty());
    CHECK(a.capacity() >= kFrame);
    CHECK(pool.size() == 3);
    CHECK(cache.stats().held_buffers == 0);
    CHECK(cache.stats().reused - base.reused == 4);
    pool.give(std::move(a));
    CHECK(pool.size() == 4);
  }  // a pool that ends hands its buffers to the cache
  CHECK(cache.stats().held_buffers == 4);

  // Idle: the first call marks the quiet start, a later one within kIdle keeps, after it empties.
  const auto t = std::chrono::steady_clock::time_point{} + 1h;
  cache.trim_if_idle(t);
  cache.trim_if_idle(t + detail::FrameCache::kIdle - 1ms);
  CHECK(cache.stats().held_buffers == 4);
  cache.trim_if_idle(t + detail::FrameCache::kIdle);
  CHECK(cache.stats().held_buffers == 0);
  CHECK(cache.stats().held_bytes == 0);

  // A lower limit frees at once; 0 turns the cache off.
  std::vector<detail::Buffer> two(2, detail::Buffer(kFrame));
  cache.give(two);
  CHECK(cache.stats().held_buffers == 2);
  cache.set_limit(kFrame);
  CHECK(cache.stats().held_buffers == 1);
  cache.set_limit(0);
  CHECK(cache.stats().held_buffers == 0);
  cache.set_limit(detail::FrameCache::kDefaultLimit);
}

TEST_CASE("engine buffer pool: keeps a bounded number, spills the rest to the cache in batches",
          "[engine][memory]") {
  auto& cache = detail::FrameCache::instance();
  cache.set_limit(0);
  cache.set_limit(detail::FrameCache::kDefaultLimit);
  constexpr std::size_t kFrame = kHeaderSize + kMaxPayload;
  detail::BufferPool pool;
  const std::size_t n = detail::BufferPool::kMaxPooled + detail::BufferPool::kBatch;
  for (std::size_t i = 0; i < n; ++i) {
    pool.give(detail::Buffer(kFrame));
  }
  CHECK(pool.size() == detail::BufferPool::kMaxPooled);
  CHECK(cache.stats().held_buffers == detail::BufferPool::kBatch);
  pool.give(detail::Buffer(10));  // too small to keep
  CHECK(pool.size() == detail::BufferPool::kMaxPooled);
  pool.trim();
  CHECK(pool.size() == detail::BufferPool::kIdleKeep);
  CHECK(cache.stats().held_buffers ==
        n - detail::BufferPool::kIdleKeep);  // all fit under the default bound
  cache.set_limit(0);
  cache.set_limit(detail::FrameCache::kDefaultLimit);
}

TEST_CASE("engine buffer pool: reuses small (packet) buffers, bounded, never via the cache",
          "[engine][memory]") {
  auto& cache = detail::FrameCache::instance();
  cache.set_limit(0);
  cache.set_limit(detail::FrameCache::kDefaultLimit);
  detail::BufferPool pool;
  // A packet flow's frame: taken, released (ACK or read), taken again - the same memory.
  auto a = pool.take(1040);
  CHECK(a.capacity() >= 1040);
  const std::byte* mem = a.data();
  pool.give(std::move(a));
  CHECK(pool.size() == 1);
  auto b = pool.take(1040);
  CHECK(b.data() == mem);
  CHECK(b.empty());
  CHECK(pool.size() == 0);
  // A fresh small buffer is at least kSmallMin, so it comes back to the pool.
  auto tiny = pool.take(20);
  CHECK(tiny.capacity() >= detail::BufferPool::kSmallMin);
  pool.give(std::move(tiny));
  pool.give(detail::Buffer(10));  // below kSmallMin: freed
  CHECK(pool.size() == 1);
  const std::size_t n = detail::BufferPool::kMaxPooled + 10;
  for (std::size_t i = 0; i < n; ++i) {
    pool.give(detail::Buffer(1040));
  }
  CHECK(pool.size() == detail::BufferPool::kMaxPooled);
  CHECK(cache.stats().held_buffers == 0);  // small ones are freed, never cached
  pool.trim();
  CHECK(pool.size() == detail::BufferPool::kIdleKeep);
  CHECK(cache.stats().held_buffers == 0);
}
