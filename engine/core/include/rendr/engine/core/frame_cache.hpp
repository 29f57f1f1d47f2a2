// SPDX-License-Identifier: Apache-2.0
// FrameCache (engine core, not API): the process-wide buffer cache behind
// rendr/engine/frame_cache.hpp, and BufferPool, the per-flow pool in front of it, and the
// receive chunks of stream carriers. A pool is used under its flow's lock; the cache has a mutex
// of its own and is touched only when a pool runs empty or full (in batches).
#pragma once

#include <rendr/engine/frame_cache.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace rendr::engine::detail {

using Buffer = std::vector<std::byte>;

class FrameCache {
 public:
  static FrameCache& instance();

  // take moves up to |n| cached buffers into |out| (appended); returns how many.
  std::size_t take(std::vector<Buffer>& out, std::size_t n);
  // give keeps the buffers of |vs| that fit under the bound and frees the rest; |vs| is left
  // empty. Buffers smaller than kMinCapacity are freed (the cache holds full frame buffers).
  void give(std::vector<Buffer>& vs);
  // trim_if_idle (from flow timers, real time) empties the cache when nothing was taken or
  // given for kIdle.
  void trim_if_idle(std::chrono::steady_clock::time_point now);
  void set_limit(std::size_t bytes);
  [[nodiscard]] FrameCacheStats stats() const;

  // make_chunk returns a receive chunk of |size| bytes (a stream carrier reads into it, the DATA
  // payloads it holds are views of it). Chunks of kChunkSize come from the cache and go back
  // to it when the last view is gone, from whichever thread drops it.
  // |account| (optional) is raised by |size| now and lowered again when the chunk is freed: a
  // flow's count of the chunk memory its views keep alive.
  std::shared_ptr<Buffer> make_chunk(std::size_t size,
                                     std::shared_ptr<std::atomic<std::size_t>> account = nullptr);
  // 1 MiB: a bulk read is as large as the queued data, not cut at the chunk's end (256 KiB
  // chunks: ~80 KB per recv and a wake-up of the reader per ~160 KB on a 2-core host; raw TCP's
  // reader takes 560 KB or more per recv). Idle paths never reach it: chunks start at 16 KiB and
  // double only while reads fill them.
  static constexpr std::size_t kChunkSize = 1024 * 1024;

  static constexpr std::size_t kMinCapacity = 16 * 1024;
  static constexpr std::size_t kDefaultLimit = 64U << 20;
  static constexpr std::chrono::seconds kIdle{5};

 private:
  void free_over_limit_locked();
  void give_chunk(Buffer&& b);
  mutable std::mutex mu_;
  std::vector<Buffer> free_;
  std::vector<Buffer> chunks_;
  std::size_t held_ = 0;
  std::size_t limit_ = kDefaultLimit;
  std::uint64_t reused_ = 0;
  std::uint64_t released_ = 0;
  std::uint64_t activity_ = 0;  // bumped by take/give
  std::uint64_t activity_seen_ = 0;
  std::chrono::steady_clock::time_point quiet_since_{};
};

// BufferPool recycles one flow's frame and payload buffers (ledger frames released by ACKs,
// payloads the application has read). Up to kMaxPooled stay with the flow; beyond that, and
// when the flow trims or ends, they go to the FrameCache. An empty pool refills from the cache
// kBatch at a time before it allocates. Small buffers (a packet flow's frames and payloads,
// kSmallMin up to kSmallMax bytes) are kept on their own list, never handed to the cache: a
// packet flow reuses them instead of one malloc and free per datagram each way.
class BufferPool {
 public:
  static constexpr std::size_t kMaxPooled = 512;
  static constexpr std::size_t kIdleKeep = 4;
  static constexpr std::size_t kBatch = 16;
  static constexpr std::size_t kSmallMin = 256;
  static constexpr std::size_t kSmallMax = 4096;  // below this a buffer is small

  BufferPool() = default;
  BufferPool(BufferPool&&) noexcept = default;
  BufferPool& operator=(BufferPool&& o) noexcept;
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;
  ~BufferPool();

  // take returns an empty buffer with at least |capacity| reserved.
  Buffer take(std::size_t capacity);
  void give(Buffer&& v);
  void give_all(std::vector<Buffer>& vs);
  // trim: an idle flow keeps only kIdleKeep (bytes per idle flow); the rest go to the cache.
  void trim();
  [[nodiscard]] std::uint64_t takes() const { return takes_; }
  [[nodiscard]] std::size_t size() const { return free_.size() + small_.size(); }

 private:
  std::vector<Buffer> free_;
  std::vector<Buffer> small_;  // capacity in [kSmallMin, kSmallMax)
  std::vector<Buffer> spill_;  // scratch for handing buffers to the cache
  std::uint64_t takes_ = 0;
};

}  // namespace rendr::engine::detail
