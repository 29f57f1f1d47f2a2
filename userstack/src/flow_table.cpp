// SPDX-License-Identifier: Apache-2.0
#include <rendr/userstack/flow_table.hpp>

#include <utility>

namespace rendr::userstack {
namespace {
std::size_t mix(std::size_t h, std::uint64_t v) {
  return h ^ (v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2));
}
std::size_t hash_endpoint(std::size_t h, const Endpoint& e) {
  for (std::size_t i = 0; i < e.addr.size(); i += 8) {
    std::uint64_t w = 0;
    for (std::size_t j = 0; j < 8; ++j) {
      w = (w << 8) | e.addr[i + j];
    }
    h = mix(h, w);
  }
  return mix(h, (static_cast<std::uint64_t>(e.port) << 8) | static_cast<std::uint8_t>(e.family));
}
}  // namespace

std::size_t FourTupleHash::operator()(const FourTuple& t) const noexcept {
  return hash_endpoint(hash_endpoint(0, t.local), t.remote);
}

FlowEntry& FlowTable::on_syn(const FourTuple& key) {
  auto [it, inserted] = flows_.try_emplace(key);
  if (inserted) {
    it->second.offset = static_cast<std::uint32_t>(rng_());
  }
  return it->second;
}

FlowEntry* FlowTable::find(const FourTuple& key) {
  auto it = flows_.find(key);
  return it == flows_.end() ? nullptr : &it->second;
}

FlowEntry& FlowTable::adopt(const FourTuple& key, std::uint32_t offset) {
  FlowEntry& e = flows_[key];
  e.offset = offset;
  return e;
}

InboundAction FlowTable::inbound(const FourTuple& key, std::span<const std::byte> pkt) {
  FlowEntry* e = find(key);
  if (e == nullptr || !e->frozen) {
    return InboundAction::deliver;
  }
  if (e->held.size() >= limits_.max_packets || e->held_bytes + pkt.size() > limits_.max_bytes) {
    ++e->held_dropped;
    return InboundAction::dropped;
  }
  e->held.emplace_back(pkt.begin(), pkt.end());
  e->held_bytes += pkt.size();
  return InboundAction::held;
}

InboundAction FlowTable::outbound(const FourTuple& key, std::span<const std::byte> pkt) {
  FlowEntry* e = find(key);
  if (e == nullptr || !e->frozen) {
    return InboundAction::deliver;
  }
  if (e->out_held.size() >= limits_.max_packets ||
      e->out_held_bytes + pkt.size() > limits_.max_bytes) {
    return InboundAction::dropped;
  }
  e->out_held.emplace_back(pkt.begin(), pkt.end());
  e->out_held_bytes += pkt.size();
  return InboundAction::held;
}

std::deque<std::vector<std::byte>> FlowTable::take_outbound(const FourTuple& key) {
  FlowEntry* e = find(key);
  if (e == nullptr) {
    return {};
  }
  e->out_held_bytes = 0;
  return std::exchange(e->out_held, {});
}

void FlowTable::freeze(const FourTuple& key) { flows_[key].frozen = true; }

std::deque<std::vector<std::byte>> FlowTable::thaw(const FourTuple& key) {
  FlowEntry* e = find(key);
  if (e == nullptr) {
    return {};
  }
  e->frozen = false;
  e->held_bytes = 0;
  return std::exchange(e->held, {});
}

}  // namespace rendr::userstack
