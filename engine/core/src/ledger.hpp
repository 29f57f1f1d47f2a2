// SPDX-License-Identifier: Apache-2.0
// Replay ledger (private): every sequenced frame this side published and the peer has not yet
// acknowledged, in SEQ order, with its encoded bytes. Bounded by frames and bytes for
// application DATA (the send window: no credit = the writer must wait), plus a small reserve
// for sequenced control frames (BYE) so closing never blocks on a full window. Released by the
// peer's cumulative ACK. Single-threaded; owned by one FlowCore.
#pragma once

#include <rendr/engine/core/path_quality.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

namespace rendr::engine::detail {

struct LedgerEntry {
  std::uint64_t seq = 0;
  std::vector<std::byte> frame;  // header + payload, no carrier prefix
  bool app_data = true;          // DATA (counts against the window) vs sequenced control
  // Who can still deliver this frame (bits are path slots):
  std::uint64_t queued_mask = 0;   // waiting in these paths' send queues
  std::uint64_t reliable_mask = 0; // committed on these stream carriers (delivered unless they die)
  TimePoint last_sent{};           // last committed transmission (poll_transmit)
  bool last_on_datagram = false;   // that transmission went over an unreliable carrier (RTO's job)
  std::uint32_t last_path = 0;   // path of that transmission (its RTT scales the RTO)
  std::uint32_t counted_path = 0; // path whose unacked-bytes count includes this frame
  std::uint32_t retransmits = 0;
};

struct LedgerRelease {
  std::size_t frames = 0;
  std::size_t data_frames = 0;
  std::size_t bytes = 0;
};

class Ledger {
 public:
  Ledger(std::size_t max_frames, std::size_t max_bytes, std::size_t control_reserve);

  // can_push_data: is there window for one DATA frame of |frame_bytes| (always true when no
  // DATA is outstanding, so one maximal frame always fits)?
  [[nodiscard]] bool can_push_data(std::size_t frame_bytes) const;
  [[nodiscard]] bool can_push_control() const;
  // push records the next sequenced frame; its SEQ is next_seq(). Precondition: credit checked.
  LedgerEntry& push(std::vector<std::byte> frame, bool app_data);
  // release_below drops entries with SEQ < |next| (a cumulative ACK); their frame buffers are
  // handed to |recycle| when given. Precondition: ack_next() <= next <= next_seq().
  LedgerRelease release_below(std::uint64_t next,
                              std::vector<std::vector<std::byte>>* recycle = nullptr);

  [[nodiscard]] LedgerEntry* find(std::uint64_t seq);
  [[nodiscard]] std::uint64_t ack_next() const { return ack_next_; }
  [[nodiscard]] std::uint64_t next_seq() const { return ack_next_ + entries_.size(); }
  [[nodiscard]] bool empty() const { return entries_.empty(); }
  [[nodiscard]] std::size_t frames() const { return entries_.size(); }
  [[nodiscard]] std::size_t data_frames() const { return data_frames_; }
  [[nodiscard]] std::size_t bytes() const { return bytes_; }
  [[nodiscard]] std::size_t max_frames() const { return max_frames_; }
  [[nodiscard]] std::size_t max_bytes() const { return max_bytes_; }
  [[nodiscard]] std::size_t frames_high_water() const { return frames_hw_; }
  [[nodiscard]] std::size_t bytes_high_water() const { return bytes_hw_; }
  std::deque<LedgerEntry>& entries() { return entries_; }
  [[nodiscard]] const std::deque<LedgerEntry>& entries() const { return entries_; }

 private:
  std::deque<LedgerEntry> entries_;
  std::uint64_t ack_next_ = 1;
  std::size_t max_frames_;
  std::size_t max_bytes_;
  std::size_t control_reserve_;
  std::size_t data_frames_ = 0;
  std::size_t control_frames_ = 0;
  std::size_t bytes_ = 0;
  std::size_t frames_hw_ = 0;
  std::size_t bytes_hw_ = 0;
};

}  // namespace rendr::engine::detail
