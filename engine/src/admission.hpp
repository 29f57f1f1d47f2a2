// SPDX-License-Identifier: Apache-2.0
// Admission: what a listener keeps when it is flooded (docs/engine.md "Listener limits").
// I/O-free: the listener reports carriers that wait for their first frame, the flows it
// created, how many carriers each flow has and which ones the application accepted; Admission
// answers which older carriers to close and which flows to evict so that a new one fits, and
// when a waiting carrier's first frame is overdue. Time comes in as |now|. One owner at a time
// (the listener calls it under its mutex).
//
// Flows are live (accepted by the application, at least one carrier) or half-open. Half-open
// flows are evicted oldest first, in this order:
//   0  not accepted, no carrier left    (a HELLO whose carrier closed: nobody will come back)
//   1  accepted, no carrier left        (a client that may come back within its budget)
//   2  not accepted, carriers           (usually a client that connected a moment ago)
// Live flows are never evicted: when only live flows fill the table a new HELLO is refused.
#pragma once

#include <rendr/engine/core/flow.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <tuple>
#include <vector>

namespace rendr::detail {

// SourceKey: the address whose flows and waiting carriers are counted together: an IPv4
// address (also IPv4-mapped IPv6), or an IPv6 /64 (a host usually holds a whole /64).
using SourceKey = std::array<std::uint8_t, 16>;
// source_key takes the 4 or 16 address bytes in network order.
[[nodiscard]] SourceKey source_key(std::span<const std::uint8_t> addr);

struct AdmissionLimits {
  std::size_t flows = 4096;             // flows counted (live and half-open)
  std::size_t unaccepted = 1024;        // flows the application has not accepted yet
  std::size_t half_open_per_source = 256;
  std::size_t pending_carriers = 1024;  // carriers waiting for their first frame
  std::size_t pending_per_source = 128;
  engine::Duration first_frame_timeout = std::chrono::seconds(5);
};

struct AdmissionStats {
  std::size_t flows = 0;
  std::size_t unaccepted = 0;
  std::size_t half_open = 0;
  std::size_t pending_carriers = 0;
  std::uint64_t flows_evicted = 0;
  std::uint64_t flows_refused = 0;
  std::uint64_t carriers_dropped = 0;     // waiting carriers closed to make room
  std::uint64_t first_frame_timeouts = 0;
};

class Admission {
 public:
  using CarrierId = std::uint64_t;
  explicit Admission(AdmissionLimits limits) : lim_(limits) {}

  // --- carriers waiting for their first frame ---
  // carrier_opened registers a fresh carrier from |src| and returns its id and the older
  // waiting carriers to close to make room for it (already forgotten): the oldest of its own
  // source while that source is at pending_per_source, then the oldest overall while the
  // listener is at pending_carriers.
  struct CarrierAdmit {
    CarrierId id = 0;
    std::vector<CarrierId> close;
  };
  [[nodiscard]] CarrierAdmit carrier_opened(const SourceKey& src, engine::TimePoint now);
  // carrier_done: its first frame was handled, or it closed. Unknown ids are ignored.
  void carrier_done(CarrierId id);
  // expire returns (and forgets) the carriers whose first frame is overdue at |now|.
  [[nodiscard]] std::vector<CarrierId> expire(engine::TimePoint now);
  // next_deadline: when the oldest waiting carrier's first frame is due.
  [[nodiscard]] std::optional<engine::TimePoint> next_deadline() const;

  // --- flows ---
  // make_room: may a new flow from |src| be created now? fits = yes; otherwise |evict| names
  // the flow to evict first (the caller evicts it with evicted(), or reports accepted() when
  // the application took it meanwhile, and asks again); neither = refused (only live flows
  // left; counted).
  struct Room {
    bool fits = false;
    std::optional<engine::Id128> evict;
  };
  [[nodiscard]] Room make_room(const SourceKey& src);
  // flow_added: a HELLO created |id| from |src| with |carriers| carriers (not accepted yet).
  void flow_added(const engine::Id128& id, const SourceKey& src, std::size_t carriers);
  void accepted(const engine::Id128& id);
  void carriers(const engine::Id128& id, std::size_t n);
  // evicted forgets |id| and counts it; gone forgets it (the flow ended). Unknown ids are
  // ignored by every flow call.
  void evicted(const engine::Id128& id);
  void gone(const engine::Id128& id);

  [[nodiscard]] AdmissionStats stats() const;
  [[nodiscard]] const AdmissionLimits& limits() const { return lim_; }

 private:
  // (rank, stamp, id): the eviction order of half-open flows; stamp = when it took that rank.
  using Key = std::tuple<int, std::uint64_t, engine::Id128>;
  struct Flow {
    SourceKey src{};
    bool accepted = false;
    std::size_t carriers = 0;
    std::optional<Key> key;  // set while half-open
  };
  struct Pending {
    SourceKey src{};
    engine::TimePoint started{};
  };
  void rekey(const engine::Id128& id, Flow& f);
  void unkey(Flow& f);
  void forget(const engine::Id128& id);
  void drop_pending(std::map<CarrierId, Pending>::iterator it);

  AdmissionLimits lim_;
  std::map<engine::Id128, Flow> flows_;
  std::set<Key> half_open_;
  std::map<SourceKey, std::set<Key>> half_open_by_src_;
  std::size_t unaccepted_ = 0;
  std::uint64_t stamp_ = 0;
  std::map<CarrierId, Pending> pending_;  // id order = age order
  std::map<SourceKey, std::set<CarrierId>> pending_by_src_;
  CarrierId next_carrier_ = 1;
  AdmissionStats counters_;
};

}  // namespace rendr::detail
