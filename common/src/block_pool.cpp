// SPDX-License-Identifier: Apache-2.0
#include <rendr/common/block_pool.hpp>

#include <new>

namespace rendr {

BlockPool::~BlockPool() {
  for (std::byte* p : free_) {
    ::operator delete(p);
  }
}

BlockPool::Block& BlockPool::Block::operator=(Block&& o) noexcept {
  if (this != &o) {
    reset();
    pool_ = o.pool_;
    p_ = o.p_;
    o.p_ = nullptr;
  }
  return *this;
}

void BlockPool::Block::reset() {
  if (p_ != nullptr) {
    pool_->give(p_);
    p_ = nullptr;
  }
}

BlockPool::Block BlockPool::take() {
  {
    std::lock_guard lk(mu_);
    if (!free_.empty()) {
      std::byte* p = free_.back();
      free_.pop_back();
      return Block(this, p);
    }
  }
  return Block(this, static_cast<std::byte*>(::operator new(size_)));
}

void BlockPool::give(std::byte* p) {
  {
    std::lock_guard lk(mu_);
    if (free_.size() < keep_) {
      free_.push_back(p);
      return;
    }
  }
  ::operator delete(p);
}

std::size_t BlockPool::free_blocks() const {
  std::lock_guard lk(mu_);
  return free_.size();
}

}  // namespace rendr
