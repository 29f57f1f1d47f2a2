// SPDX-License-Identifier: Apache-2.0
#include "reorder.hpp"

#include <rendr/engine/errors.hpp>

#include <algorithm>
#include <string>

namespace rendr::engine::detail {

ReorderBuffer::ReorderBuffer(std::size_t max_frames, std::size_t max_bytes)
    : max_frames_(max_frames), max_bytes_(max_bytes) {}

Result<ReorderBuffer::Insert> ReorderBuffer::insert(std::uint64_t seq, RecvItem item) {
  if (seq < expected_) {
    return Insert::duplicate;
  }
  const std::uint64_t off = seq - expected_;
  if (off >= max_frames_) {
    return make_error(errc::recv_window_exceeded,
                      "SEQ " + std::to_string(seq) + " is " + std::to_string(off) +
                          " frames ahead of " + std::to_string(expected_) + " (cap " +
                          std::to_string(max_frames_) + ")");
  }
  const auto idx = static_cast<std::size_t>(off);
  if (idx < slots_.size() && slots_[idx].has_value()) {
    return Insert::duplicate;
  }
  if (bytes_ + item.payload.size() > max_bytes_) {
    return make_error(errc::recv_window_exceeded,
                      "reorder buffer would hold " + std::to_string(bytes_ + item.payload.size()) +
                          " bytes (cap " + std::to_string(max_bytes_) + ")");
  }
  if (idx >= slots_.size()) {
    slots_.resize(idx + 1);
  }
  bytes_ += item.payload.size();
  slots_[idx] = std::move(item);
  frames_ += 1;
  hwm_ = std::max(hwm_, frames_);
  return Insert::stored;
}

Payload ReorderBuffer::deliver_early(std::uint64_t seq) {
  auto& slot = *slots_[static_cast<std::size_t>(seq - expected_)];
  Payload out = std::move(slot.payload);
  slot.payload = Payload{};
  slot.delivered = true;
  bytes_ -= out.size();
  return out;
}

RecvItem ReorderBuffer::pop_head() {
  RecvItem item = std::move(*slots_.front());
  slots_.pop_front();
  frames_ -= 1;
  bytes_ -= item.payload.size();
  expected_ += 1;
  return item;
}

}  // namespace rendr::engine::detail
