// SPDX-License-Identifier: Apache-2.0
// Reorder buffer (private): sequenced frames received ahead of the next expected SEQ, in a ring
// indexed by SEQ distance. The hard cap is on distance (a frame more than max_frames ahead of
// the head is refused: the peer ran further ahead than its own window allows) and on buffered
// payload bytes; both refusals are recv_window_exceeded, which ends the flow. Duplicates (below
// the head, or a slot already filled: race mode, replay) are reported, never stored twice.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/engine/core/wire.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <vector>

namespace rendr::engine::detail {

// Payload: the bytes of one DATA frame. Frames from datagram carriers own a buffer; frames from
// stream carriers are views into the receive chunk they arrived in (no copy), which lives as
// long as a view of it does.
struct Payload {
  std::vector<std::byte> own;
  std::shared_ptr<const std::vector<std::byte>> chunk;  // set: the bytes are chunk[off, off+len)
  std::size_t off = 0;
  std::size_t len = 0;

  [[nodiscard]] std::size_t size() const { return chunk ? len : own.size(); }
  [[nodiscard]] bool empty() const { return size() == 0; }
  [[nodiscard]] std::span<const std::byte> bytes() const {
    return chunk ? std::span<const std::byte>(chunk->data() + off, len)
                 : std::span<const std::byte>(own);
  }
};

struct RecvItem {
  enum class Kind : std::uint8_t { data, bye, l3_identity, fin, refuse, other } kind = Kind::data;
  Payload payload;  // DATA bytes; the record of an l3_identity frame; a refuse's detail
  std::uint8_t code = 0;  // refuse: the refusal code
  ByeReason reason = ByeReason::normal;
  bool delivered = false;  // packet mode: handed to the application on arrival already
};

class ReorderBuffer {
 public:
  enum class Insert : std::uint8_t { stored, duplicate };

  ReorderBuffer(std::size_t max_frames, std::size_t max_bytes);

  [[nodiscard]] Result<Insert> insert(std::uint64_t seq, RecvItem item);
  // deliver_early (packet mode) moves the payload of the stored, undelivered DATA frame |seq|
  // out and marks it delivered; the slot stays until the head passes it (dedup).
  // Precondition: insert(seq) just returned stored.
  [[nodiscard]] Payload deliver_early(std::uint64_t seq);
  [[nodiscard]] bool head_ready() const { return !slots_.empty() && slots_.front().has_value(); }
  [[nodiscard]] RecvItem& head() { return *slots_.front(); }
  // pop_head consumes the head slot (precondition: head_ready()) and advances expected().
  RecvItem pop_head();

  [[nodiscard]] std::uint64_t expected() const { return expected_; }
  [[nodiscard]] std::size_t frames() const { return frames_; }
  [[nodiscard]] std::size_t bytes() const { return bytes_; }
  [[nodiscard]] std::size_t frames_high_water() const { return hwm_; }
  // has_gap: frames are buffered but the head is missing.
  [[nodiscard]] bool has_gap() const { return frames_ > 0 && !head_ready(); }

 private:
  std::deque<std::optional<RecvItem>> slots_;  // slot i holds SEQ expected_ + i
  std::uint64_t expected_ = 1;
  std::size_t max_frames_;
  std::size_t max_bytes_;
  std::size_t frames_ = 0;
  std::size_t bytes_ = 0;
  std::size_t hwm_ = 0;
};

}  // namespace rendr::engine::detail
