// SPDX-License-Identifier: Apache-2.0
// BlockPool — fixed-size byte blocks kept on a bounded free list for the next taker. Short-lived
// users (a rendr-tun relay, a userstack Pump: two buffers per flow each) take blocks and give
// them back; a fresh malloc of a large block per flow and direction made glibc grow and trim
// its heap (sysmalloc, madvise) on every flow. At most |keep| free blocks stay; the rest go
// back to the allocator. Blocks are uninitialised: a short flow must not pay for zeroing (and
// faulting in) memory it never touches. Any thread (one mutex; taken twice per block).
#pragma once

#include <cstddef>
#include <mutex>
#include <vector>

namespace rendr {

class BlockPool {
 public:
  BlockPool(std::size_t block_size, std::size_t keep) : size_(block_size), keep_(keep) {}
  ~BlockPool();
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // Block: one block of its pool, given back when it goes (move-only).
  class Block {
   public:
    Block() = default;
    Block(Block&& o) noexcept : pool_(o.pool_), p_(o.p_) { o.p_ = nullptr; }
    Block& operator=(Block&& o) noexcept;
    Block(const Block&) = delete;
    Block& operator=(const Block&) = delete;
    ~Block() { reset(); }
    [[nodiscard]] std::byte* data() const { return p_; }
    [[nodiscard]] std::size_t size() const { return p_ != nullptr ? pool_->size_ : 0; }
    void reset();

   private:
    friend class BlockPool;
    Block(BlockPool* pool, std::byte* p) : pool_(pool), p_(p) {}
    BlockPool* pool_ = nullptr;
    std::byte* p_ = nullptr;
  };

  // take: a block from the free list, or a new one.
  [[nodiscard]] Block take();
  // free_blocks: blocks kept for the next taker now (at most keep).
  [[nodiscard]] std::size_t free_blocks() const;

 private:
  void give(std::byte* p);
  const std::size_t size_;
  const std::size_t keep_;
  mutable std::mutex mu_;
  std::vector<std::byte*> free_;
};

}  // namespace rendr
