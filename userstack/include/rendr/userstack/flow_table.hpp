// SPDX-License-Identifier: Apache-2.0
// FlowTable — per-flow state of userstack's shim, without lwIP: the random sequence offset each
// flow's outbound SEQ / inbound ACK is shifted by, and the freeze that HOLDS a flow's inbound
// packets (bounded) while its connection is being snapshotted or moved, to be replayed on thaw
// (or handed to whoever takes the flow over). Keys are the tuple as lwIP sees it: local = the
// original destination (VIP:port), remote = the peer. Not synchronised: the Stack uses it under
// the lwIP core lock only.
#pragma once

#include <rendr/common/endpoint.hpp>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <random>
#include <span>
#include <unordered_map>
#include <vector>

namespace rendr::userstack {

struct FourTupleHash {
  std::size_t operator()(const FourTuple& t) const noexcept;
};

struct HoldLimits {
  std::size_t max_packets = 4096;
  std::size_t max_bytes = 16U << 20;
};

struct FlowEntry {
  std::uint32_t offset = 0;  // wire SEQ = lwIP SEQ + offset (our direction only)
  bool frozen = false;
  std::deque<std::vector<std::byte>> held;  // inbound IP packets, wire form, oldest first
  std::size_t held_bytes = 0;
  std::uint64_t held_dropped = 0;  // packets that did not fit the hold limits
  // What lwIP emitted for the flow while frozen (wire form, offset applied): sent on thaw, or
  // discarded when the connection is snapshotted (the snapshot carries those bytes).
  std::deque<std::vector<std::byte>> out_held;
  std::size_t out_held_bytes = 0;
};

// InboundAction — what the shim does with one inbound packet.
enum class InboundAction : std::uint8_t { deliver, held, dropped };

class FlowTable {
 public:
  explicit FlowTable(std::uint64_t seed, HoldLimits limits = {}) : rng_(seed), limits_(limits) {}

  // on_syn creates the flow's entry with a fresh random offset (or keeps an existing one: a
  // retransmitted SYN must see the same ISS) and returns it.
  FlowEntry& on_syn(const FourTuple& key);
  // find returns the entry or nullptr.
  [[nodiscard]] FlowEntry* find(const FourTuple& key);
  // adopt creates/overwrites the entry with a given |offset| (a restored connection).
  FlowEntry& adopt(const FourTuple& key, std::uint32_t offset);
  void erase(const FourTuple& key) { flows_.erase(key); }

  // inbound decides for one packet of |key|; when the flow is frozen the packet is copied into
  // its hold queue (or dropped when the queue is full).
  InboundAction inbound(const FourTuple& key, std::span<const std::byte> pkt);

  // outbound decides for one packet lwIP emits for |key|: deliver, or (frozen) held/dropped.
  InboundAction outbound(const FourTuple& key, std::span<const std::byte> pkt);
  // take_outbound returns (and forgets) the outbound packets held for |key|.
  [[nodiscard]] std::deque<std::vector<std::byte>> take_outbound(const FourTuple& key);

  // freeze starts holding |key|'s inbound packets (creates the entry, offset 0, if unknown).
  void freeze(const FourTuple& key);
  // thaw ends the freeze and returns the held packets, oldest first (the caller replays them).
  [[nodiscard]] std::deque<std::vector<std::byte>> thaw(const FourTuple& key);

  [[nodiscard]] std::size_t size() const { return flows_.size(); }

  // prune erases the entries that are not frozen and for which |live(key)| is false (the
  // Stack passes "lwIP still has a PCB for this tuple"); returns how many it erased.
  template <typename Live>
  std::size_t prune(Live&& live) {
    std::size_t n = 0;
    for (auto it = flows_.begin(); it != flows_.end();) {
      if (!it->second.frozen && !live(it->first)) {
        it = flows_.erase(it);
        ++n;
      } else {
        ++it;
      }
    }
    return n;
  }

 private:
  std::unordered_map<FourTuple, FlowEntry, FourTupleHash> flows_;
  std::mt19937_64 rng_;
  HoldLimits limits_;
};

}  // namespace rendr::userstack
