// SPDX-License-Identifier: Apache-2.0
#include "admission.hpp"

#include <algorithm>
#include <cstring>

namespace rendr::detail {

using engine::Id128;
using engine::TimePoint;

SourceKey source_key(std::span<const std::uint8_t> addr) {
  SourceKey k{};
  if (addr.size() == 4) {
    std::memcpy(k.data(), addr.data(), 4);
    return k;
  }
  if (addr.size() != 16) {
    return k;
  }
  static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(addr.data(), kMapped, sizeof kMapped) == 0) {
    std::memcpy(k.data(), addr.data() + 12, 4);  // the same key as the plain IPv4 address
    return k;
  }
  std::memcpy(k.data(), addr.data(), 8);  // the /64
  k[15] = 6;  // never equal to an IPv4 key (those end in 12 zero bytes)
  return k;
}

// --- carriers ---

void Admission::drop_pending(std::map<CarrierId, Pending>::iterator it) {
  if (auto s = pending_by_src_.find(it->second.src); s != pending_by_src_.end()) {
    s->second.erase(it->first);
    if (s->second.empty()) {
      pending_by_src_.erase(s);
    }
  }
  pending_.erase(it);
}

Admission::CarrierAdmit Admission::carrier_opened(const SourceKey& src, TimePoint now) {
  CarrierAdmit out;
  if (auto s = pending_by_src_.find(src); s != pending_by_src_.end()) {
    while (!s->second.empty() && s->second.size() >= lim_.pending_per_source) {
      const CarrierId oldest = *s->second.begin();
      out.close.push_back(oldest);
      drop_pending(pending_.find(oldest));  // may erase |s| with its last entry
      s = pending_by_src_.find(src);
      if (s == pending_by_src_.end()) {
        break;
      }
    }
  }
  while (!pending_.empty() && pending_.size() >= lim_.pending_carriers) {
    out.close.push_back(pending_.begin()->first);
    drop_pending(pending_.begin());
  }
  counters_.carriers_dropped += out.close.size();
  out.id = next_carrier_++;
  pending_.emplace(out.id, Pending{src, now});
  pending_by_src_[src].insert(out.id);
  return out;
}

void Admission::carrier_done(CarrierId id) {
  if (auto it = pending_.find(id); it != pending_.end()) {
    drop_pending(it);
  }
}

std::vector<Admission::CarrierId> Admission::expire(TimePoint now) {
  // Ids are handed out in time order, so the oldest carrier is always the first.
  std::vector<CarrierId> out;
  while (!pending_.empty() && pending_.begin()->second.started + lim_.first_frame_timeout <= now) {
    out.push_back(pending_.begin()->first);
    drop_pending(pending_.begin());
  }
  counters_.first_frame_timeouts += out.size();
  return out;
}

std::optional<TimePoint> Admission::next_deadline() const {
  if (pending_.empty()) {
    return std::nullopt;
  }
  return pending_.begin()->second.started + lim_.first_frame_timeout;
}

// --- flows ---

void Admission::unkey(Flow& f) {
  if (!f.key) {
    return;
  }
  half_open_.erase(*f.key);
  if (auto s = half_open_by_src_.find(f.src); s != half_open_by_src_.end()) {
    s->second.erase(*f.key);
    if (s->second.empty()) {
      half_open_by_src_.erase(s);
    }
  }
  f.key.reset();
}

void Admission::rekey(const Id128& id, Flow& f) {
  int rank = -1;
  if (!f.accepted) {
    rank = f.carriers == 0 ? 0 : 2;
  } else if (f.carriers == 0) {
    rank = 1;
  }
  if (f.key && std::get<0>(*f.key) == rank) {
    return;  // same rank: keeps its age
  }
  unkey(f);
  if (rank < 0) {
    return;  // live
  }
  f.key = Key{rank, stamp_++, id};
  half_open_.insert(*f.key);
  half_open_by_src_[f.src].insert(*f.key);
}

Admission::Room Admission::make_room(const SourceKey& src) {
  Room r;
  // The new flow will be half-open (not accepted yet) from |src|.
  if (auto s = half_open_by_src_.find(src);
      s != half_open_by_src_.end() && s->second.size() >= lim_.half_open_per_source) {
    r.evict = std::get<2>(*s->second.begin());
    return r;
  }
  if (unaccepted_ >= lim_.unaccepted) {
    // Every flow not accepted yet is half-open (rank 0 or 2): the first of rank 0, else of 2.
    if (!half_open_.empty() && std::get<0>(*half_open_.begin()) == 0) {
      r.evict = std::get<2>(*half_open_.begin());
      return r;
    }
    if (auto it = half_open_.lower_bound(Key{2, 0, Id128{}}); it != half_open_.end()) {
      r.evict = std::get<2>(*it);
      return r;
    }
  }
  if (flows_.size() >= lim_.flows) {
    if (!half_open_.empty()) {
      r.evict = std::get<2>(*half_open_.begin());
      return r;
    }
    counters_.flows_refused += 1;
    return r;
  }
  r.fits = true;
  return r;
}

void Admission::flow_added(const Id128& id, const SourceKey& src, std::size_t carriers) {
  forget(id);
  Flow& f = flows_[id];
  f.src = src;
  f.carriers = carriers;
  unaccepted_ += 1;
  rekey(id, f);
}

void Admission::accepted(const Id128& id) {
  auto it = flows_.find(id);
  if (it == flows_.end() || it->second.accepted) {
    return;
  }
  it->second.accepted = true;
  unaccepted_ -= 1;
  rekey(id, it->second);
}

void Admission::carriers(const Id128& id, std::size_t n) {
  auto it = flows_.find(id);
  if (it == flows_.end()) {
    return;
  }
  it->second.carriers = n;
  rekey(id, it->second);
}

void Admission::forget(const Id128& id) {
  auto it = flows_.find(id);
  if (it == flows_.end()) {
    return;
  }
  unkey(it->second);
  if (!it->second.accepted) {
    unaccepted_ -= 1;
  }
  flows_.erase(it);
}

void Admission::evicted(const Id128& id) {
  if (flows_.count(id) != 0) {
    counters_.flows_evicted += 1;
  }
  forget(id);
}

void Admission::gone(const Id128& id) { forget(id); }

AdmissionStats Admission::stats() const {
  AdmissionStats s = counters_;
  s.flows = flows_.size();
  s.unaccepted = unaccepted_;
  s.half_open = half_open_.size();
  s.pending_carriers = pending_.size();
  return s;
}

}  // namespace rendr::detail
