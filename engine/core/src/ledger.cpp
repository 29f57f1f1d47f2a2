// SPDX-License-Identifier: Apache-2.0
#include "ledger.hpp"

#include <algorithm>

namespace rendr::engine::detail {

Ledger::Ledger(std::size_t max_frames, std::size_t max_bytes, std::size_t control_reserve)
    : max_frames_(max_frames), max_bytes_(max_bytes), control_reserve_(control_reserve) {}

bool Ledger::can_push_data(std::size_t frame_bytes) const {
  if (data_frames_ == 0) {
    return true;
  }
  return data_frames_ < max_frames_ && bytes_ + frame_bytes <= max_bytes_;
}

bool Ledger::can_push_control() const { return control_frames_ < control_reserve_; }

LedgerEntry& Ledger::push(std::vector<std::byte> frame, bool app_data) {
  LedgerEntry e;
  e.seq = next_seq();
  e.app_data = app_data;
  bytes_ += frame.size();
  e.frame = std::move(frame);
  (app_data ? data_frames_ : control_frames_) += 1;
  entries_.push_back(std::move(e));
  frames_hw_ = std::max(frames_hw_, entries_.size());
  bytes_hw_ = std::max(bytes_hw_, bytes_);
  return entries_.back();
}

LedgerRelease Ledger::release_below(std::uint64_t next,
                                    std::vector<std::vector<std::byte>>* recycle) {
  LedgerRelease r;
  while (!entries_.empty() && entries_.front().seq < next) {
    auto& e = entries_.front();
    r.frames += 1;
    r.bytes += e.frame.size();
    if (e.app_data) {
      r.data_frames += 1;
      data_frames_ -= 1;
    } else {
      control_frames_ -= 1;
    }
    bytes_ -= e.frame.size();
    if (recycle != nullptr) {
      recycle->push_back(std::move(e.frame));
    }
    entries_.pop_front();
    ack_next_ += 1;
  }
  return r;
}

LedgerEntry* Ledger::find(std::uint64_t seq) {
  if (seq < ack_next_ || seq >= next_seq()) {
    return nullptr;
  }
  return &entries_[static_cast<std::size_t>(seq - ack_next_)];
}

}  // namespace rendr::engine::detail
