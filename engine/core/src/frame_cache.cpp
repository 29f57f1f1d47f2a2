// SPDX-License-Identifier: Apache-2.0
#include <rendr/engine/core/frame_cache.hpp>

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

namespace rendr::engine {

FrameCacheStats frame_cache_stats() { return detail::FrameCache::instance().stats(); }

void set_frame_cache_limit(std::size_t bytes) { detail::FrameCache::instance().set_limit(bytes); }

}  // namespace rendr::engine

namespace rendr::engine::detail {

namespace {
// prefault maps the pages of a fresh allocation in one call: touching them one by one costs a
// page fault each (about 10 us on a virtualised host, against well under 1 us per page here).
// Best effort: an old kernel (EINVAL) just leaves them to fault.
void prefault(void* p, std::size_t n) {
  static const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(p) & ~(page - 1);
  const auto end = (reinterpret_cast<std::uintptr_t>(p) + n + page - 1) & ~(page - 1);
  (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_WRITE);
}

// Below this an allocation comes from heap pages malloc has mapped already (a freed flow's
// buffers are the next one's): a madvise each was one syscall per packet (7 % of the CPU of
// rendr-bench's g3quic on this VM, where a syscall is dear), and for a short flow the 16 KiB
// first receive chunk of every carrier was one more (7.5 calls per new TUN ingress flow, all
// on pages already mapped). Larger ones (the 1 MiB receive chunks, 128 KiB send chunks) are
// mapped fresh by malloc, page by page unless prefaulted.
constexpr std::size_t kPrefaultMin = 64 * 1024;

Buffer fresh_buffer(std::size_t capacity) {
  Buffer b;
  b.reserve(capacity);
  if (capacity >= kPrefaultMin) {
    prefault(b.data(), capacity);
  }
  return b;
}
}  // namespace

FrameCache& FrameCache::instance() {
  // Never destroyed: flows owned by static objects may still give buffers back during exit.
  static auto* cache = new FrameCache;
  return *cache;
}

std::size_t FrameCache::take(std::vector<Buffer>& out, std::size_t n) {
  std::lock_guard lk(mu_);
  std::size_t got = 0;
  while (got < n && !free_.empty()) {
    held_ -= free_.back().capacity();
    out.push_back(std::move(free_.back()));
    free_.pop_back();
    ++got;
  }
  reused_ += got;
  ++activity_;
  return got;
}

void FrameCache::give(std::vector<Buffer>& vs) {
  {
    std::lock_guard lk(mu_);
    for (auto& v : vs) {
      const std::size_t cap = v.capacity();
      if (cap >= kMinCapacity && held_ + cap <= limit_) {
        held_ += cap;
        v.clear();
        free_.push_back(std::move(v));
      } else if (cap >= kMinCapacity) {
        ++released_;
      }
    }
    ++activity_;
  }
  vs.clear();  // what the cache did not keep is freed here, outside the lock
}

void FrameCache::free_over_limit_locked() {
  while (held_ > limit_ && !chunks_.empty()) {
    held_ -= chunks_.back().size();
    chunks_.pop_back();
    ++released_;
  }
  while (held_ > limit_ && !free_.empty()) {
    held_ -= free_.back().capacity();
    free_.pop_back();
    ++released_;
  }
}

std::shared_ptr<Buffer> FrameCache::make_chunk(std::size_t size,
                                               std::shared_ptr<std::atomic<std::size_t>> account) {
  Buffer b;
  if (size == kChunkSize) {
    std::lock_guard lk(mu_);
    if (!chunks_.empty()) {
      b = std::move(chunks_.back());
      chunks_.pop_back();
      held_ -= kChunkSize;
      ++reused_;
    }
    ++activity_;
  }
  if (b.size() != size) {
    b = fresh_buffer(size);
    b.resize(size);
  }
  if (account) {
    account->fetch_add(size, std::memory_order_relaxed);
  }
  return std::shared_ptr<Buffer>(new Buffer(std::move(b)), [account](Buffer* p) {
    if (account) {
      account->fetch_sub(p->size(), std::memory_order_relaxed);
    }
    if (p->size() == kChunkSize) {
      instance().give_chunk(std::move(*p));
    }
    delete p;
  });
}

void FrameCache::give_chunk(Buffer&& b) {
  std::lock_guard lk(mu_);
  ++activity_;
  if (held_ + b.size() <= limit_) {
    held_ += b.size();
    chunks_.push_back(std::move(b));
  } else {
    ++released_;
  }
}

void FrameCache::trim_if_idle(std::chrono::steady_clock::time_point now) {
  std::vector<Buffer> drop;
  {
    std::lock_guard lk(mu_);
    if (activity_ != activity_seen_) {
      activity_seen_ = activity_;
      quiet_since_ = now;
      return;
    }
    if ((free_.empty() && chunks_.empty()) || now - quiet_since_ < kIdle) {
      return;
    }
    released_ += free_.size() + chunks_.size();
    held_ = 0;
    drop.swap(free_);
    for (auto& c : chunks_) {
      drop.push_back(std::move(c));
    }
    chunks_.clear();
  }
  drop.clear();
  // The C allocator keeps freed heap pages mapped (buffers < 128 KiB come from the heap, and
  // the arena's top is rarely free): give them back after a mass close, once per idle period.
  (void)::malloc_trim(0);
}

void FrameCache::set_limit(std::size_t bytes) {
  std::lock_guard lk(mu_);
  limit_ = bytes;
  free_over_limit_locked();
}

FrameCacheStats FrameCache::stats() const {
  std::lock_guard lk(mu_);
  return FrameCacheStats{held_, free_.size() + chunks_.size(), limit_, reused_, released_};
}

BufferPool& BufferPool::operator=(BufferPool&& o) noexcept {
  if (this != &o) {
    FrameCache::instance().give(free_);
    FrameCache::instance().give(spill_);
    free_ = std::move(o.free_);
    spill_ = std::move(o.spill_);
    small_ = std::move(o.small_);
    takes_ = o.takes_;
  }
  return *this;
}

BufferPool::~BufferPool() {
  FrameCache::instance().give(free_);
  FrameCache::instance().give(spill_);
}

Buffer BufferPool::take(std::size_t capacity) {
  ++takes_;
  if (capacity < kSmallMax && !small_.empty()) {
    Buffer v = std::move(small_.back());
    small_.pop_back();
    v.clear();
    v.reserve(capacity);
    return v;
  }
  if (capacity < kSmallMax && free_.empty()) {
    return fresh_buffer(std::max(capacity, kSmallMin));  // the cache holds only large ones
  }
  if (free_.empty()) {
    (void)FrameCache::instance().take(free_, kBatch);
  }
  if (free_.empty()) {
    return fresh_buffer(capacity);
  }
  Buffer v = std::move(free_.back());
  free_.pop_back();
  v.clear();
  v.reserve(capacity);
  return v;
}

void BufferPool::give(Buffer&& v) {
  if (v.capacity() < kSmallMax) {
    if (v.capacity() >= kSmallMin && small_.size() < kMaxPooled) {
      small_.push_back(std::move(v));
    }
    return;
  }
  if (free_.size() < kMaxPooled) {
    free_.push_back(std::move(v));
    return;
  }
  spill_.push_back(std::move(v));
  if (spill_.size() >= kBatch) {
    FrameCache::instance().give(spill_);
  }
}

void BufferPool::give_all(std::vector<Buffer>& vs) {
  for (auto& v : vs) {
    give(std::move(v));
  }
  vs.clear();
}

void BufferPool::trim() {
  if (small_.size() > kIdleKeep) {
    small_.resize(kIdleKeep);
    small_.shrink_to_fit();
  }
  if (!spill_.empty()) {
    FrameCache::instance().give(spill_);
  }
  if (free_.size() > kIdleKeep) {
    spill_.assign(std::make_move_iterator(free_.begin() + kIdleKeep),
                  std::make_move_iterator(free_.end()));
    free_.resize(kIdleKeep);
    free_.shrink_to_fit();
    FrameCache::instance().give(spill_);
    spill_.shrink_to_fit();
  }
}

}  // namespace rendr::engine::detail
