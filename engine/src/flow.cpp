// SPDX-License-Identifier: Apache-2.0
#include <rendr/engine/errors.hpp>
#include <rendr/engine/flow.hpp>

#include "frame_cache.hpp"
#include "ledger.hpp"
#include "reorder.hpp"

#include <algorithm>
#include <bit>
#include <deque>
#include <atomic>
#include <map>
#include <unordered_map>

namespace rendr::engine {

std::string_view to_string(FlowState s) {
  switch (s) {
    case FlowState::init: return "init";
    case FlowState::handshaking: return "handshaking";
    case FlowState::active: return "active";
    case FlowState::migrating: return "migrating";
    case FlowState::closing: return "closing";
    case FlowState::dead: return "dead";
  }
  return "unknown";
}

std::string_view to_string(PathState s) {
  switch (s) {
    case PathState::pending: return "pending";
    case PathState::hello: return "hello";
    case PathState::bridging: return "bridging";
    case PathState::ready: return "ready";
  }
  return "unknown";
}

std::string_view to_string(MigrateCause c) {
  switch (c) {
    case MigrateCause::explicit_request: return "explicit";
    case MigrateCause::death: return "death";
    case MigrateCause::quality: return "quality";
  }
  return "unknown";
}

Status validate_config(const FlowConfig& c) {
  const auto bad = [](const char* what) { return make_error(errc::invalid_config, what); };
  if (c.max_payload == 0 || c.max_payload > kMaxPayload) {
    return bad("max_payload must be in 1..32768");
  }
  if (c.ledger_max_frames == 0 || c.ledger_max_bytes < kHeaderSize + c.max_payload) {
    return bad("ledger must hold at least one maximal frame");
  }
  if (c.unsent_max_bytes < kHeaderSize + c.max_payload) {
    return bad("unsent_max_bytes must hold at least one maximal frame");
  }
  if (c.reorder_max_frames == 0 || c.reorder_max_bytes < c.max_payload ||
      c.recv_window_bytes == 0) {
    return bad("reorder buffer and receive window must be non-empty");
  }
  if (c.handshake_timeout <= Duration::zero()) {
    return bad("handshake_timeout must be > 0");
  }
  if (c.probe_interval <= Duration::zero() || c.sched_tick <= Duration::zero() ||
      c.fresh_min <= Duration::zero() || c.stall_min <= Duration::zero() ||
      c.rto_min <= Duration::zero()) {
    return bad("probe_interval, sched_tick, fresh_min, stall_min, rto_min must be > 0");
  }
  if (c.migration_budget <= Duration::zero() || c.migration_budget > std::chrono::seconds(90)) {
    return bad("migration_budget must be in (0, 90 s]");
  }
  if (!(c.hysteresis > 0.0) || c.bond_pin == 0 || c.bond_pin > 256 ||
      c.zombie_max_migrations < 1) {
    return bad("hysteresis > 0, bond_pin 1..256, zombie_max_migrations >= 1");
  }
  return {};
}

namespace {

constexpr std::size_t kMaxPaths = 64;          // one bit per path slot in ledger masks
constexpr std::size_t kMaxCtrlQueue = 64;      // queued OOB controls per path (probe replies)
constexpr std::size_t kMaxOutstandingProbes = 16;
constexpr std::size_t kControlReserve = 8;
constexpr int kFastRetransmitDupAcks = 3;
// Stream receive chunks: a path starts with a small one (an idle flow stays small) and doubles
// the next while reads fill the space they were given, up to FrameCache::kChunkSize. A chunk
// with less than kRxMinRead left (or too little for the frame being read) is replaced.
constexpr std::size_t kRxFirstChunk = 16 * 1024;
constexpr std::size_t kRxMinRead = 4 * 1024;

std::uint64_t ns_since_epoch(TimePoint t) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
}

std::vector<std::byte> encode(const Frame& f) {
  std::vector<std::byte> out;
  // Frames built here are valid by construction; an encode error is a logic error.
  if (!encode_frame(f, out).ok()) {
    out.clear();
  }
  return out;
}

}  // namespace

// SeqQueue: FIFO of ledger SEQs for one path (a vector with a moving head; std::deque's
// push_back trips g++ 12's -Wnull-dereference false positive).
class SeqQueue {
 public:
  void push_back(std::uint64_t s) { v_.push_back(s); }
  [[nodiscard]] bool empty() const { return head_ == v_.size(); }
  [[nodiscard]] std::size_t size() const { return v_.size() - head_; }
  [[nodiscard]] std::uint64_t front() const { return v_[head_]; }
  void pop_front() {
    if (++head_ == v_.size()) {
      clear();
    } else if (head_ >= 1024 && head_ * 2 >= v_.size()) {
      v_.erase(v_.begin(), v_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }
  void clear() {
    v_.clear();
    head_ = 0;
  }

 private:
  std::vector<std::uint64_t> v_;
  std::size_t head_ = 0;
};


struct FlowCore::Impl {
  struct Path {
    PathId id = 0;
    unsigned slot = 0;
    Framing framing = Framing::stream;
    std::string name;
    PathState state = PathState::pending;
    // Stream receive: bytes are read into rx_chunk[0, rx_end) and parsed up to rx_parse; DATA
    // payloads are views of the chunk (detail::Payload), which lives while a view does.
    std::shared_ptr<std::vector<std::byte>> rx_chunk;
    std::size_t rx_parse = 0;
    std::size_t rx_end = 0;
    std::size_t rx_next = kRxFirstChunk;  // size of the next chunk: doubles while reads fill it
    bool rx_failed = false;
    std::deque<std::vector<std::byte>> ctrl;  // encoded OOB controls
    SeqQueue data;                            // ledger SEQs to send
    bool ack_pending = false;
    bool probe_due = false;
    std::size_t unacked_bytes = 0;  // committed here, not yet acknowledged (self-load signal)
    std::optional<TimePoint> tx_waiting_since;
    PathEstimator est;
    struct OutstandingProbe {
      std::uint64_t id = 0;
      TimePoint sent{};
      bool loaded = false;  // committed while this path's output was backlogged
    };
    std::deque<OutstandingProbe> probes;
    std::deque<OutstandingProbe> late;  // expired, still matched if the reply turns up
    TimePoint next_probe{};
    TimePoint last_rx{};
    TimePoint attached_at{};  // handshake clock for hello / bridging carriers
    std::optional<TimePoint> silent_probe;  // first probe committed since the last reception
    TimePoint next_handshake_tx{};  // datagram carriers: when to repeat HELLO / BRIDGE_TAG
    Duration handshake_backoff{0};
    PathInfo counters;  // frames/bytes/dups

    [[nodiscard]] bool has_output() const {
      return !ctrl.empty() || ack_pending || probe_due || !data.empty();
    }
    [[nodiscard]] std::uint64_t bit() const { return std::uint64_t{1} << slot; }
  };

  FlowConfig cfg;
  Side side;
  Id128 flow_id{};
  Id128 instance_id{};
  Id128 peer_instance{};
  std::uint32_t peer_caps = 0;
  FlowState state = FlowState::init;
  std::optional<Error> close_error;
  std::optional<ByeReason> peer_bye;
  std::optional<std::uint64_t> our_bye_seq;
  std::optional<TimePoint> close_deadline;
  std::optional<TimePoint> budget_deadline;

  std::map<PathId, Path> paths;
  PathId next_path_id = 1;
  std::uint64_t used_slots = 0;
  PathId active = 0;
  PathId last_active = 0;  // before entering migrating
  Mode mode;
  PrimeSelector prime;
  BondCursor bond;
  std::optional<TimePoint> next_tick;

  detail::Ledger ledger;
  detail::ReorderBuffer reorder;
  std::deque<detail::Payload> delivered;
  std::size_t delivered_front_off = 0;
  // The chunk being parsed (on_received): DATA frames inside it become views, not copies.
  std::shared_ptr<std::vector<std::byte>> rx_source;
  // Receive chunk memory alive for this flow (views keep chunks alive). A view pins its whole
  // chunk, so a peer that sends a little DATA among much else could make a few payload bytes
  // hold a lot of memory; past rx_pinned_max new payloads are copied instead, and memory stays
  // within twice the configured receive bounds.
  std::shared_ptr<std::atomic<std::size_t>> rx_pinned =
      std::make_shared<std::atomic<std::size_t>>(0);
  std::size_t rx_pinned_max = 0;
  std::size_t delivered_bytes = 0;
  std::uint64_t last_ack_sent = 1;

  int zombie_left;
  std::optional<TimePoint> last_death_migration;
  std::uint64_t next_probe_id = 1;
  detail::BufferPool pool;
  std::vector<std::vector<std::byte>> released;  // scratch for ledger releases
  // Ledger frames that gathered writes in flight point to (poll_transmit_gather): how many
  // writes per frame, the frames of each path's writes, and frames an ACK released meanwhile
  // (recycled at transmit_done).
  std::unordered_map<const std::byte*, std::uint32_t> pins;
  std::map<PathId, std::vector<const std::byte*>> pinned_by_path;
  std::unordered_map<const std::byte*, std::vector<std::byte>> released_pinned;
  std::vector<BufferLoan> read_scratch;           // read(): the loans it copies out
  int dup_acks = 0;

  std::deque<FlowEvent> events;
  FlowStats counters;  // only the counter fields are used

  Impl(const FlowConfig& c, Side s, const Id128& flow, const Id128& inst)
      : cfg(c),
        side(s),
        flow_id(flow),
        instance_id(inst),
        mode(c.mode),
        prime(PrimeSelector::Params{c.hysteresis, c.dwell, c.cooldown}),
        // Packet flows pin one frame per path: bursts of datagrams overflow carrier queues.
        bond((c.caps & kCapsPacketMode) != 0 ? 1 : c.bond_pin, c.bond_stuck_multiplier),
        ledger(c.ledger_max_frames, c.ledger_max_bytes, kControlReserve),
        reorder(c.reorder_max_frames, c.reorder_max_bytes),
        zombie_left(c.zombie_max_migrations) {
    rx_pinned_max = c.recv_window_bytes + c.reorder_max_bytes;
  }

  // ---------------------------------------------------------------- helpers

  // window_room: payload bytes the next DATA frame may carry without overrunning the ledger
  // bounds. Below half a frame of room it reports 0, so a nearly full window is not filled
  // with tiny frames (silly-window avoidance).
  [[nodiscard]] std::size_t window_room() const {
    if (ledger.data_frames() == 0) {
      return cfg.max_payload;
    }
    if (ledger.data_frames() >= ledger.max_frames() ||
        ledger.bytes() + kHeaderSize >= ledger.max_bytes()) {
      return 0;
    }
    const std::size_t unsent = unsent_bytes();
    if (unsent + kHeaderSize >= cfg.unsent_max_bytes) {
      return 0;
    }
    const std::size_t room = std::min({cfg.max_payload, ledger.max_bytes() - ledger.bytes() - kHeaderSize,
                                       cfg.unsent_max_bytes - unsent - kHeaderSize});
    return room * 2 >= cfg.max_payload ? room : 0;
  }

  // unsent_bytes: ledger bytes not committed to a live path (new, or orphaned by a dead one).
  [[nodiscard]] std::size_t unsent_bytes() const {
    std::size_t committed = 0;
    for (const auto& [id, p] : paths) {
      committed += p.unacked_bytes;
    }
    return ledger.bytes() > committed ? ledger.bytes() - committed : 0;
  }

  [[nodiscard]] bool packet() const { return (cfg.caps & kCapsPacketMode) != 0; }
  // other_ready_path: whether a ready path other than |id| exists.
  [[nodiscard]] bool other_ready_path(PathId id) const {
    for (const auto& [pid, q] : paths) {
      if (pid != id && q.state == PathState::ready) {
        return true;
      }
    }
    return false;
  }

  // room_for: may a payload of |n| bytes join the application's receive queue now?
  [[nodiscard]] bool room_for(std::size_t n) const {
    return delivered_bytes == 0 || delivered_bytes + n <= cfg.recv_window_bytes;
  }

  [[nodiscard]] bool established() const {
    return state == FlowState::active || state == FlowState::migrating ||
           state == FlowState::closing;
  }

  Path* find(PathId id) {
    auto it = paths.find(id);
    return it == paths.end() ? nullptr : &it->second;
  }
  [[nodiscard]] const Path* find(PathId id) const {
    auto it = paths.find(id);
    return it == paths.end() ? nullptr : &it->second;
  }

  [[nodiscard]] std::uint64_t live_mask() const {
    std::uint64_t m = 0;
    for (const auto& [id, p] : paths) {
      if (p.state == PathState::ready) {
        m |= p.bit();
      }
    }
    return m;
  }

  [[nodiscard]] std::vector<PathScore> scores() const {
    std::vector<PathScore> v;
    for (const auto& [id, p] : paths) {
      if (p.state == PathState::ready) {
        v.push_back({id, p.est.has_rtt() ? std::optional<double>(p.est.score_ms()) : std::nullopt});
      }
    }
    return v;
  }

  Result<Path*> new_path(const PathOptions& opts, PathState st, TimePoint now) {
    if (paths.size() >= kMaxPaths || used_slots == ~std::uint64_t{0}) {
      return make_error(errc::too_many_paths, "flow already has 64 paths");
    }
    if (opts.max_frame != 0 && opts.max_frame < kHeaderSize + cfg.max_payload) {
      return make_error(errc::invalid_config,
                        "path max_frame " + std::to_string(opts.max_frame) + " < " +
                            std::to_string(kHeaderSize + cfg.max_payload) +
                            " (8 + the flow's max_payload)");
    }
    const auto slot = static_cast<unsigned>(std::countr_one(used_slots));
    used_slots |= std::uint64_t{1} << slot;
    Path p;
    p.id = next_path_id++;
    p.slot = slot;
    p.framing = opts.framing;
    p.name = opts.name;
    p.state = st;
    p.last_rx = now;
    p.next_probe = now;
    p.attached_at = now;
    auto [it, inserted] = paths.emplace(p.id, std::move(p));
    (void)inserted;
    return &it->second;
  }

  // uncount removes |e| from the unacked-bytes count of the path it was last committed on.
  void uncount(detail::LedgerEntry& e) {
    if (Path* q = find(e.counted_path)) {
      q->unacked_bytes -= std::min(q->unacked_bytes, e.frame.size());
    }
    e.counted_path = 0;
  }

  void mark_waiting(Path& p, TimePoint now) {
    if (!p.tx_waiting_since) {
      p.tx_waiting_since = now;
    }
  }

  void queue_ctrl(Path& p, const Frame& f, TimePoint now) {
    if (p.ctrl.size() >= kMaxCtrlQueue) {
      return;  // a peer flooding probes does not grow our memory
    }
    p.ctrl.push_back(encode(f));
    mark_waiting(p, now);
  }

  void queue_data(Path& p, detail::LedgerEntry& e, TimePoint now) {
    p.data.push_back(e.seq);
    e.queued_mask |= p.bit();
    mark_waiting(p, now);
  }

  // dispatch queues ledger entry |e| on the path(s) the mode picks; nothing when no path is
  // usable (it is replayed when one becomes ready).
  void dispatch(detail::LedgerEntry& e, TimePoint now) {
    if (!established()) {
      return;
    }
    if (mode == Mode::race) {
      for (auto& [id, p] : paths) {
        if (p.state == PathState::ready) {
          queue_data(p, e, now);
        }
      }
      return;
    }
    if (mode == Mode::bond) {
      std::vector<BondPath> bp;
      for (const auto& [id, p] : paths) {
        if (p.state == PathState::ready) {
          bp.push_back({id, p.est.has_rtt() ? std::optional<Duration>(p.est.latest_rtt())
                                            : std::nullopt});
        }
      }
      if (bp.empty()) {
        return;
      }
      queue_data(*find(bond.next(bp)), e, now);
      return;
    }
    Path* a = find(active);
    if (a != nullptr && a->state == PathState::ready) {
      queue_data(*a, e, now);
    }
  }

  // covered: a usable path still has |e| queued or committed it on a reliable carrier.
  [[nodiscard]] static bool covered(const detail::LedgerEntry& e, std::uint64_t live) {
    return ((e.queued_mask | e.reliable_mask) & live) != 0;
  }
  // rto_owned: |e|'s last transmission went over a datagram carrier that is still usable and
  // nothing else covers it: the retransmission timer is responsible for it.
  [[nodiscard]] bool rto_owned(const detail::LedgerEntry& e, std::uint64_t live) const {
    if (!e.last_on_datagram || covered(e, live)) {
      return false;
    }
    const Path* p = find(e.last_path);
    return p != nullptr && p->state == PathState::ready;
  }

  // replay_orphans re-dispatches every unacknowledged frame that nothing can deliver any more:
  // not queued on or reliably committed to a usable path, and not awaiting an RTO on a usable
  // datagram path. (A past send on a lossy datagram path does not count as coverage.)
  void replay_orphans(TimePoint now) {
    const std::uint64_t live = live_mask();
    if (live == 0) {
      return;
    }
    for (auto& e : ledger.entries()) {
      if (!covered(e, live) && !rto_owned(e, live)) {
        dispatch(e, now);
        counters.replayed_frames += 1;
      }
    }
  }

  void schedule_ack(TimePoint now) {
    for (auto& [id, p] : paths) {
      if (p.state == PathState::ready && !p.ack_pending) {
        p.ack_pending = true;
        mark_waiting(p, now);
      }
    }
  }

  // trim_pool_if_idle (from the timers): a flow with nothing buffered either way at two checks
  // at least kPoolIdle apart, with no buffer taken in between, gives its pooled buffers back.
  // Not at the moment the ledger empties: a bulk writer empties it often, and re-growing the
  // pool each time cost up to half the throughput.
  void trim_pool_if_idle(TimePoint now) {
    const bool idle = ledger.empty() && delivered.empty() && reorder.frames() == 0;
    if (!idle) {
      pool_idle_since.reset();
      return;
    }
    if (!pool_idle_since || pool.takes() != pool_takes_at_idle) {
      pool_idle_since = now;
      pool_takes_at_idle = pool.takes();
      return;
    }
    if (now - *pool_idle_since >= kPoolIdle) {
      pool.trim();
    }
  }
  static constexpr Duration kPoolIdle = std::chrono::seconds(2);
  std::optional<TimePoint> pool_idle_since;
  std::uint64_t pool_takes_at_idle = 0;

  void refresh_zombie() {
    zombie_left = cfg.zombie_max_migrations;
    last_death_migration.reset();
  }

  void fail_flow(Error err, std::optional<ByeReason> bye, TimePoint now) {
    if (state == FlowState::dead) {
      return;
    }
    if (bye && established() && ledger.next_seq() <= kMaxSeq) {
      // Best effort: tell the peer why, on every usable path, bypassing the window.
      auto& e = ledger.push(encode(Bye{ledger.next_seq(), *bye}), false);
      for (auto& [id, p] : paths) {
        if (p.state == PathState::ready) {
          queue_data(p, e, now);
        }
      }
    }
    state = FlowState::dead;
    close_error = err;
    budget_deadline.reset();
    close_deadline.reset();
    events.emplace_back(EvClosed{std::move(err)});
  }

  void finish_clean() {
    if (state == FlowState::dead) {
      return;
    }
    state = FlowState::dead;
    budget_deadline.reset();
    close_deadline.reset();
    events.emplace_back(EvClosed{std::nullopt});
  }

  // activate makes |to| the active path after a death or when leaving migrating.
  void activate(PathId to, MigrateCause cause, TimePoint now) {
    const PathId from = active != 0 ? active : last_active;
    active = to;
    if (state == FlowState::migrating) {
      state = FlowState::active;
      budget_deadline.reset();
    }
    counters.migration_count += 1;
    prime.note_switch(now, cause == MigrateCause::quality);
    events.emplace_back(EvMigrated{from, to, cause});
    if (cause == MigrateCause::death) {
      if (last_death_migration && now - *last_death_migration > cfg.zombie_cooldown) {
        zombie_left = cfg.zombie_max_migrations;
      }
      zombie_left -= 1;
      last_death_migration = now;
      if (zombie_left <= 0) {
        fail_flow(make_error(errc::zombie, "flow migrated " +
                                               std::to_string(cfg.zombie_max_migrations) +
                                               " times after path deaths with no payload flowing"),
                  ByeReason::zombie, now);
      }
    }
  }

  void enter_migrating(TimePoint now) {
    last_active = active;
    active = 0;
    if (state == FlowState::active) {
      state = FlowState::migrating;
    }
    if (!budget_deadline) {
      budget_deadline = now + cfg.migration_budget;
    }
  }

  void kill_path(PathId id, Error reason, TimePoint now) {
    auto it = paths.find(id);
    if (it == paths.end()) {
      return;
    }
    const std::uint64_t bit = it->second.bit();
    const PathState was = it->second.state;
    used_slots &= ~bit;
    for (auto& e : ledger.entries()) {
      e.queued_mask &= ~bit;
      e.reliable_mask &= ~bit;
    }
    counters.paths_lost += 1;
    counters.last_path_down = "path " + std::to_string(id) + ": " + reason.message();
    paths.erase(it);
    events.emplace_back(EvPathDown{id, std::move(reason)});
    if (state == FlowState::dead) {
      return;
    }
    if (was == PathState::hello) {
      // The handshake carrier died: retry HELLO on the next carrier, if any.
      state = FlowState::init;
      for (auto& [pid, p] : paths) {
        if (p.state == PathState::pending) {
          start_hello(p, now);
          break;
        }
      }
      return;
    }
    if (!established()) {
      return;
    }
    if (id == active || (active == 0 && state != FlowState::migrating)) {
      const auto sc = scores();
      if (auto to = PrimeSelector::best_for_failover(sc)) {
        last_active = id;
        active = 0;
        activate(*to, MigrateCause::death, now);
      } else {
        active = id;
        enter_migrating(now);
      }
    }
    if (state != FlowState::dead) {
      replay_orphans(now);
    }
  }

  void start_hello(Path& p, TimePoint now) {
    p.state = PathState::hello;
    p.attached_at = now;
    arm_handshake_repeat(p, now);
    state = FlowState::handshaking;
    send_hello(p, now);
  }

  // Datagram carriers may lose the handshake: HELLO / BRIDGE_TAG are repeated with backoff
  // (200 ms doubling to 1 s) until answered or the handshake timeout drops the carrier.
  static constexpr Duration kHandshakeRepeat = std::chrono::milliseconds(200);
  static constexpr Duration kHandshakeRepeatMax = std::chrono::seconds(1);
  static void arm_handshake_repeat(Path& p, TimePoint now) {
    p.handshake_backoff = kHandshakeRepeat;
    p.next_handshake_tx = now + kHandshakeRepeat;
  }

  void send_hello(Path& p, TimePoint now) {
    Hello h;
    h.flow_id = flow_id;
    h.instance_id = instance_id;
    h.caps = cfg.caps;
    if (!p.name.empty()) {
      h.path_name = p.name.substr(0, kMaxName);
    }
    queue_ctrl(p, h, now);
  }

  void start_bridge(Path& p, TimePoint now) {
    p.state = PathState::bridging;
    p.attached_at = now;
    arm_handshake_repeat(p, now);
    send_bridge_tag(p, now);
  }

  void send_bridge_tag(Path& p, TimePoint now) {
    BridgeTag t;
    t.bridge_id = flow_id;
    t.instance_id = instance_id;
    t.expected_peer_instance_id = peer_instance;
    if (!p.name.empty()) {
      t.path_name = p.name.substr(0, kMaxName);
    }
    queue_ctrl(p, t, now);
  }

  // path_became_ready: probing starts; a migrating flow resumes on it; orphans are replayed.
  void path_became_ready(Path& p, TimePoint now) {
    p.state = PathState::ready;
    p.next_probe = now;
    p.last_rx = now;
    events.emplace_back(EvPathReady{p.id});
    if (state == FlowState::migrating || (established() && active == 0)) {
      activate(p.id, MigrateCause::death, now);
    }
    if (state != FlowState::dead) {
      replay_orphans(now);
    }
  }

  // ---------------------------------------------------------------- receive

  void handle_frame(Path& p, Frame&& f, TimePoint now) {
    p.last_rx = now;
    p.counters.frames_rx += 1;
    if (auto* d = std::get_if<Data>(&f)) {
      detail::RecvItem item;
      const std::byte* at = d->payload.data();
      if (rx_source && !d->payload.empty() && at >= rx_source->data() &&
          at + d->payload.size() <= rx_source->data() + rx_source->size() &&
          rx_pinned->load(std::memory_order_relaxed) <= rx_pinned_max) {
        item.payload.chunk = rx_source;
        item.payload.off = static_cast<std::size_t>(at - rx_source->data());
        item.payload.len = d->payload.size();
      } else {
        item.payload.own = pool.take(d->payload.size());
        item.payload.own.assign(d->payload.begin(), d->payload.end());
      }
      insert_sequenced(p, d->seq, std::move(item), now, true);
      return;
    }
    if (auto* b = std::get_if<Bye>(&f)) {
      detail::RecvItem item;
      item.kind = detail::RecvItem::Kind::bye;
      item.reason = b->reason;
      insert_sequenced(p, b->seq, std::move(item), now, false);
      return;
    }
    if (std::holds_alternative<MigrateNotify>(f) || std::holds_alternative<PathQualityReport>(f) ||
        std::holds_alternative<Heartbeat>(f)) {
      detail::RecvItem item;
      item.kind = detail::RecvItem::Kind::other;
      insert_sequenced(p, frame_seq(f), std::move(item), now, false);
      return;
    }
    if (auto* a = std::get_if<Ack>(&f)) {
      handle_ack(a->next_seq, now);
      return;
    }
    if (auto* pr = std::get_if<Probe>(&f)) {
      queue_ctrl(p, ProbeReply{pr->ts, pr->id}, now);
      return;
    }
    if (auto* rep = std::get_if<ProbeReply>(&f)) {
      for (auto it = p.probes.begin(); it != p.probes.end(); ++it) {
        if (it->id == rep->id) {
          p.est.on_rtt_sample(now - it->sent, it->loaded);
          p.est.on_probe_outcome(true);
          p.probes.erase(it);
          return;
        }
      }
      // A reply after its probe expired still tells how long the round trip really takes
      // (a backlogged carrier): the timing windows learn it; the loss record stands.
      for (auto it = p.late.begin(); it != p.late.end(); ++it) {
        if (it->id == rep->id) {
          p.est.on_rtt_sample(now - it->sent, true);
          p.late.erase(it);
          return;
        }
      }
      return;
    }
    if (auto* ha = std::get_if<HelloAck>(&f)) {
      handle_hello_ack(p, *ha, now);
      return;
    }
    if (auto* ba = std::get_if<BridgeAck>(&f)) {
      handle_bridge_ack(p, *ba, now);
      return;
    }
    // HELLO / BRIDGE_TAG repeated on its own carrier (our answer was lost on a datagram
    // carrier): answer again. Anything else there is a confused or hostile peer: ignore.
    if (side == Side::server) {
      if (const auto* h = std::get_if<Hello>(&f);
          h != nullptr && h->flow_id == flow_id && h->instance_id == peer_instance) {
        HelloAck ack;
        ack.flow_id = flow_id;
        ack.instance_id = instance_id;
        ack.caps = cfg.caps & ~kCapsL3Identity;
        if ((h->caps & kCapsL3Identity) != 0) {
          ack.caps |= cfg.caps & kCapsL3Identity;
        }
        queue_ctrl(p, ack, now);
        return;
      }
      if (const auto* t = std::get_if<BridgeTag>(&f);
          t != nullptr && t->bridge_id == flow_id &&
          (t->legacy || (t->instance_id == peer_instance &&
                         t->expected_peer_instance_id == instance_id))) {
        BridgeAck ack;
        ack.bridge_id = flow_id;
        ack.instance_id = instance_id;
        queue_ctrl(p, ack, now);
        return;
      }
    }
    counters.malformed_frames += 1;
  }

  void insert_sequenced(Path& p, std::uint64_t seq, detail::RecvItem item, TimePoint now,
                        bool payload) {
    if (state == FlowState::dead) {
      return;
    }
    const std::size_t size = item.payload.size();
    auto r = reorder.insert(seq, std::move(item));
    if (!r.ok()) {
      fail_flow(std::move(r).take_error().with_context("path " + std::to_string(p.id)),
                std::nullopt, now);
      return;
    }
    if (*r == detail::ReorderBuffer::Insert::duplicate) {
      counters.recv_dups += 1;
      p.counters.recv_dups += 1;
      // The sender may have missed our ACK (datagram carriers): repeat it.
      schedule_ack(now);
      return;
    }
    if (payload) {
      refresh_zombie();
      if (packet() && seq != reorder.expected()) {
        // Datagram semantics: hand it over now, even with earlier SEQs missing (when the
        // receive queue has room; otherwise it waits for the head like a stream frame).
        if (room_for(size)) {
          deliver_packet(reorder.deliver_early(seq));
        }
      }
    }
    if (p.framing == Framing::datagram && seq != reorder.expected()) {
      // Out of order on a lossy carrier: tell the sender now (a duplicate ACK) on this path.
      if (!p.ack_pending) {
        p.ack_pending = true;
        mark_waiting(p, now);
      }
    }
  }

  void handle_ack(std::uint64_t next, TimePoint now) {
    if (next > ledger.next_seq()) {
      counters.ignored_acks += 1;  // acknowledges frames never published
      return;
    }
    if (next < ledger.ack_next()) {
      return;
    }
    if (next == ledger.ack_next()) {
      // Duplicate ACK: the receiver saw later frames but not this one (it ACKs out-of-order
      // datagram arrivals). The third one triggers a fast retransmit of the head.
      if (!ledger.empty() && ++dup_acks == kFastRetransmitDupAcks &&
          rto_owned(ledger.entries().front(), live_mask())) {
        retransmit(ledger.entries().front(), now);
      }
      return;
    }
    dup_acks = 0;
    for (auto& e : ledger.entries()) {
      if (e.seq >= next) {
        break;
      }
      uncount(e);
    }
    const auto rel = ledger.release_below(next, &released);
    if (pins.empty()) {
      pool.give_all(released);
    } else {
      for (auto& b : released) {
        if (pins.contains(b.data())) {
          released_pinned.emplace(b.data(), std::move(b));  // a carrier write still reads it
        } else {
          pool.give(std::move(b));
        }
      }
      released.clear();
    }
    if (rel.data_frames > 0) {
      refresh_zombie();
    }
    if (our_bye_seq && next > *our_bye_seq) {
      if (state == FlowState::closing) {
        finish_clean();
      }
    }
  }

  void handle_hello_ack(Path& p, const HelloAck& ha, TimePoint now) {
    if (side != Side::client || p.state != PathState::hello) {
      counters.malformed_frames += 1;
      return;
    }
    if (ha.flow_id != flow_id) {
      fail_flow(make_error(errc::flow_mismatch, "hello_ack for another flow_id"), std::nullopt,
                now);
      return;
    }
    if ((ha.caps & kCapsPacketMode) != (cfg.caps & kCapsPacketMode)) {
      fail_flow(make_error(errc::peer_protocol, "hello_ack: packet-mode bit does not match"),
                ByeReason::proto_version, now);
      return;
    }
    peer_instance = ha.instance_id;
    peer_caps = ha.caps;
    // close() during the handshake queued a BYE behind the buffered writes: keep closing.
    state = our_bye_seq ? FlowState::closing : FlowState::active;
    active = p.id;
    p.state = PathState::ready;
    p.next_probe = now;
    events.emplace_back(EvHandshakeDone{});
    events.emplace_back(EvPathReady{p.id});
    for (auto& [id, q] : paths) {
      if (q.state == PathState::pending) {
        start_bridge(q, now);
      }
    }
    replay_orphans(now);
  }

  void handle_bridge_ack(Path& p, const BridgeAck& ba, TimePoint now) {
    if (side != Side::client || p.state != PathState::bridging) {
      counters.malformed_frames += 1;
      return;
    }
    if (ba.bridge_id != flow_id || ba.code != BridgeAckCode::ok) {
      std::string why = ba.bridge_id != flow_id
                            ? std::string("bridge_ack for another flow")
                            : "bridge_ack code " + std::to_string(static_cast<int>(ba.code));
      if (ba.reason) {
        why += " (" + *ba.reason + ")";
      }
      kill_path(p.id, make_error(errc::bridge_rejected, why), now);
      return;
    }
    path_became_ready(p, now);
  }

  void deliver_packet(detail::Payload payload) {
    delivered_bytes += payload.size();
    delivered.push_back(std::move(payload));  // empty packets are packets too
  }

  void drain_reorder(TimePoint now) {
    while (state != FlowState::dead && reorder.head_ready()) {
      auto& h = reorder.head();
      if (h.kind == detail::RecvItem::Kind::data) {
        if (!h.delivered && !room_for(h.payload.size())) {
          break;  // backpressure: the application must read first
        }
        auto item = reorder.pop_head();
        if (item.delivered) {
          continue;
        }
        if (packet()) {
          deliver_packet(std::move(item.payload));
        } else if (!item.payload.empty()) {
          delivered_bytes += item.payload.size();
          delivered.push_back(std::move(item.payload));
        }
        continue;
      }
      auto item = reorder.pop_head();
      if (item.kind == detail::RecvItem::Kind::bye) {
        handle_peer_bye(item.reason, now);
        break;
      }
    }
    if (reorder.expected() != last_ack_sent) {
      schedule_ack(now);
    }
  }

  void handle_peer_bye(ByeReason reason, TimePoint now) {
    peer_bye = reason;
    schedule_ack(now);  // the terminal ACK: shell flushes it after EvClosed
    switch (reason) {
      case ByeReason::normal:
        close_error = make_error(errc::closed, "peer closed the flow");
        finish_clean();
        break;
      case ByeReason::migration_budget:
        fail_flow(make_error(errc::migration_budget_exceeded, "peer: migration budget exhausted"),
                  std::nullopt, now);
        break;
      case ByeReason::zombie:
        fail_flow(make_error(errc::zombie, "peer declared the flow a zombie"), std::nullopt, now);
        break;
      case ByeReason::proto_version:
        fail_flow(make_error(errc::peer_proto_version, "peer: protocol version"), std::nullopt,
                  now);
        break;
      case ByeReason::app_request:
        fail_flow(make_error(errc::peer_closed, "peer application closed the flow"), std::nullopt,
                  now);
        break;
    }
  }

  void on_decode_error(Path& p, Error err, TimePoint now) {
    counters.malformed_frames += 1;
    if (p.framing == Framing::datagram && err.code != make_error_code(errc::unsupported_version)) {
      return;  // one bad datagram: drop it, keep the path
    }
    const bool version = err.code == make_error_code(errc::unsupported_version);
    const PathId id = p.id;
    kill_path(id, err.with_context("path " + std::to_string(id)), now);  // |p| is gone now
    if (version) {
      fail_flow(make_error(errc::peer_proto_version, "path " + std::to_string(id) + ": " +
                                                         err.message()),
                std::nullopt, now);
    }
  }

  // ---------------------------------------------------------------- timers

  [[nodiscard]] Duration fresh(const Path& p) const {
    return p.est.fresh_window(cfg.probe_interval, cfg.fresh_min, cfg.fresh_max);
  }

  // first_unanswered: send time of the first probe committed after the last reception on the
  // path (nothing at all came back since). Kept apart from the outstanding-probe list, whose
  // cap drops old entries: with fast probing the cap could span less than the freshness window
  // and a silent path would never look silent.
  [[nodiscard]] static std::optional<TimePoint> first_unanswered(const Path& p) {
    if (p.silent_probe && *p.silent_probe >= p.last_rx) {
      return p.silent_probe;
    }
    return std::nullopt;
  }

  [[nodiscard]] Duration rto_for(const detail::LedgerEntry& e) const {
    const Path* p = find(e.last_path);
    const Duration base = p != nullptr ? p->est.rto(cfg.rto_min, cfg.rto_max) : cfg.rto_min;
    const auto shift = std::min<std::uint32_t>(e.retransmits, 5);
    return std::min<Duration>(base * (1U << shift), cfg.rto_max);
  }

  void run_timers(TimePoint now) {
    if (state == FlowState::dead) {
      return;
    }
    if (budget_deadline && now >= *budget_deadline) {
      fail_flow(make_error(errc::migration_budget_exceeded,
                           "no path came back within " +
                               std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                                  cfg.migration_budget)
                                                  .count()) +
                               " s"),
                std::nullopt, now);
      return;
    }
    if (close_deadline && now >= *close_deadline) {
      fail_flow(make_error(errc::graceful_close_timeout, "BYE not acknowledged"), std::nullopt,
                now);
      return;
    }
    trim_pool_if_idle(now);
    std::vector<std::pair<PathId, Error>> dead;
    for (auto& [id, p] : paths) {
      if ((p.state == PathState::hello || p.state == PathState::bridging) &&
          now - p.attached_at >= cfg.handshake_timeout) {
        dead.emplace_back(id, make_error(errc::path_dead,
                                         "path " + std::to_string(id) + ": no " +
                                             (p.state == PathState::hello ? "HELLO_ACK"
                                                                          : "BRIDGE_ACK") +
                                             " within the handshake timeout"));
        continue;
      }
      if ((p.state == PathState::hello || p.state == PathState::bridging) &&
          p.framing == Framing::datagram && now >= p.next_handshake_tx) {
        if (p.state == PathState::hello) {
          send_hello(p, now);
        } else {
          send_bridge_tag(p, now);
        }
        p.handshake_backoff = std::min<Duration>(2 * p.handshake_backoff, kHandshakeRepeatMax);
        p.next_handshake_tx = now + p.handshake_backoff;
      }
      if (p.state != PathState::ready) {
        continue;
      }
      // Silent death: a committed probe that nothing at all followed within the window.
      const Duration fw = fresh(p);
      if (auto fu = first_unanswered(p); fu && now - *fu >= fw) {
        dead.emplace_back(id, make_error(errc::path_dead,
                                         "path " + std::to_string(id) +
                                             ": silent for the freshness window (" +
                                             std::to_string(fw.count() / 1000000) + " ms)"));
        continue;
      }
      // Overdue probes on a path that otherwise talks count as lost.
      // A probe that waited behind our own backlog and expired says nothing about loss.
      while (!p.probes.empty() && now - p.probes.front().sent >= fw) {
        if (!p.probes.front().loaded) {
          p.est.on_probe_outcome(false);
        }
        p.late.push_back(p.probes.front());
        p.probes.pop_front();
        if (p.late.size() > kMaxOutstandingProbes) {
          p.late.pop_front();
        }
      }
      // A write stall only moves traffic to another ready path: the last one is kept (its
      // output has nowhere else to go, and a receiver starved of CPU looks just like this);
      // silence still ends it.
      if (p.tx_waiting_since && other_ready_path(id) &&
          now - *p.tx_waiting_since >= p.est.stall_timeout(cfg.stall_min, cfg.stall_max)) {
        dead.emplace_back(id, make_error(errc::path_dead,
                                         "path " + std::to_string(id) + ": output stalled"));
        continue;
      }
      if (now >= p.next_probe) {
        if (!p.probe_due) {
          p.probe_due = true;
          mark_waiting(p, now);
        }
        p.next_probe = now + cfg.probe_interval;
      }
    }
    for (auto& [id, err] : dead) {
      kill_path(id, std::move(err), now);
      if (state == FlowState::dead) {
        return;
      }
    }
    // prime quality switches
    if (next_tick && now >= *next_tick) {
      next_tick = now + cfg.sched_tick;
      if (mode == Mode::prime && state == FlowState::active && active != 0) {
        const auto sc = scores();
        if (sc.size() >= 2) {
          if (auto to = prime.tick(active, sc, now)) {
            planned_switch(*to, MigrateCause::quality, now);
          }
        }
      }
    } else if (!next_tick) {
      next_tick = now + cfg.sched_tick;
    }
    // Retransmission timeout for the oldest unacknowledged frame when it went over an
    // unreliable carrier. Only the head: ACKs are cumulative, so later frames are most likely
    // sitting in the receiver's reorder buffer; once the head is repaired the ACK jumps and the
    // next hole (if any) becomes the head, already overdue.
    if (!ledger.empty()) {
      auto& e = ledger.entries().front();
      if (e.last_on_datagram && !covered(e, live_mask()) && now - e.last_sent >= rto_for(e)) {
        retransmit(e, now);
      }
    }
  }

  void retransmit(detail::LedgerEntry& e, TimePoint now) {
    e.last_on_datagram = false;  // re-armed when the re-send is committed
    e.retransmits += 1;
    counters.retransmits += 1;
    dispatch(e, now);
  }

  [[nodiscard]] std::optional<TimePoint> deadline() const {
    std::optional<TimePoint> d;
    const auto take = [&d](TimePoint t) {
      if (!d || t < *d) {
        d = t;
      }
    };
    if (state == FlowState::dead) {
      return std::nullopt;
    }
    if (budget_deadline) {
      take(*budget_deadline);
    }
    if (close_deadline) {
      take(*close_deadline);
    }
    for (const auto& [id, p] : paths) {
      if (p.state == PathState::hello || p.state == PathState::bridging) {
        take(p.attached_at + cfg.handshake_timeout);
        if (p.framing == Framing::datagram) {
          take(p.next_handshake_tx);
        }
      }
      if (p.state != PathState::ready) {
        continue;
      }
      if (!p.probe_due) {
        take(p.next_probe);
      }
      const Duration fw = fresh(p);
      if (!p.probes.empty()) {
        take(p.probes.front().sent + fw);
      }
      if (auto fu = first_unanswered(p)) {
        take(*fu + fw);
      }
      if (p.tx_waiting_since && other_ready_path(id)) {
        take(*p.tx_waiting_since + p.est.stall_timeout(cfg.stall_min, cfg.stall_max));
      }
    }
    if (mode == Mode::prime && paths.size() >= 2) {
      take(next_tick.value_or(TimePoint{}));
    }
    if (!ledger.empty()) {
      const auto& e = ledger.entries().front();
      if (e.last_on_datagram && !covered(e, live_mask())) {
        take(e.last_sent + rto_for(e));
      }
    }
    return d;
  }

  // planned_switch: replay the whole unacknowledged ledger on |to| first, then switch.
  void planned_switch(PathId to, MigrateCause cause, TimePoint now) {
    Path* np = find(to);
    if (np == nullptr || to == active) {
      return;
    }
    if (Path* old = find(active); old != nullptr && mode == Mode::prime) {
      // Frames still queued on the old path are about to be replayed on the new one.
      old->data.clear();
      for (auto& e : ledger.entries()) {
        e.queued_mask &= ~old->bit();
      }
    }
    for (auto& e : ledger.entries()) {
      queue_data(*np, e, now);
      counters.replayed_frames += 1;
    }
    activate(to, cause, now);
  }

  // ---------------------------------------------------------------- transmit

  // transmit appends frames for |p| to |out|; with |gather| (stream paths) ledger frames are not
  // copied: |out| collects prefixes and control frames, and |gather| records, per piece, an
  // offset into |out| or a pinned ledger frame (see poll_transmit_gather).
  struct GatherPiece {
    const std::byte* frame = nullptr;  // a pinned ledger frame, or null: out[off, off + len)
    std::size_t off = 0;
    std::size_t len = 0;
  };
  std::vector<GatherPiece> gather_scratch;  // poll_transmit_gather's, kept between calls
  std::size_t transmit(Path& p, std::vector<std::byte>& out, std::size_t max_bytes, TimePoint now,
                       std::vector<GatherPiece>* gather = nullptr) {
    const bool stream = p.framing == Framing::stream;
    const std::size_t overhead = stream ? kStreamPrefixSize : 0;
    std::size_t written = 0;
    std::size_t frames = 0;
    const auto fits = [&](std::size_t n) { return written + overhead + n <= max_bytes; };
    const auto owned_piece = [&](std::size_t from) {
      if (gather == nullptr || out.size() == from) {
        return;
      }
      if (!gather->empty() && gather->back().frame == nullptr &&
          gather->back().off + gather->back().len == from) {
        gather->back().len += out.size() - from;  // adjacent owned bytes: one piece
      } else {
        gather->push_back(GatherPiece{nullptr, from, out.size() - from});
      }
    };
    const auto count = [&](std::size_t size) {
      written += overhead + size;
      frames += 1;
      p.counters.frames_tx += 1;
      p.counters.bytes_tx += size;
    };
    const auto emit = [&](std::span<const std::byte> frame) {
      const std::size_t from = out.size();
      if (stream) {
        append_stream_prefix(frame.size(), out);
      }
      out.insert(out.end(), frame.begin(), frame.end());
      owned_piece(from);
      count(frame.size());
    };
    const auto emit_ledger = [&](const std::vector<std::byte>& frame) {
      if (gather == nullptr) {
        emit(frame);
        return;
      }
      const std::size_t from = out.size();
      append_stream_prefix(frame.size(), out);
      owned_piece(from);
      gather->push_back(GatherPiece{frame.data(), 0, frame.size()});
      pins[frame.data()] += 1;
      pinned_by_path[p.id].push_back(frame.data());
      count(frame.size());
    };
    const auto more = [&] { return stream || frames == 0; };
    // Our own unacknowledged bytes on this carrier sit in its buffers ahead of a probe sent now:
    // such a probe measures our queue (self-load), not the path.
    const bool backlogged = p.unacked_bytes >= cfg.self_load_bytes;

    while (more() && !p.ctrl.empty() && fits(p.ctrl.front().size())) {
      emit(p.ctrl.front());
      p.ctrl.pop_front();
    }
    if (more() && p.ack_pending && p.ctrl.empty()) {
      auto f = encode(Ack{reorder.expected()});
      if (fits(f.size())) {
        emit(f);
        p.ack_pending = false;
        last_ack_sent = reorder.expected();
      }
    }
    if (more() && p.probe_due && p.ctrl.empty() && !p.ack_pending) {
      const std::uint64_t id = next_probe_id++;
      auto f = encode(Probe{ns_since_epoch(now), id});
      if (fits(f.size())) {
        emit(f);
        p.probe_due = false;
        p.probes.push_back({id, now, backlogged});
        if (!p.silent_probe || *p.silent_probe < p.last_rx) {
          p.silent_probe = now;
        }
        if (p.probes.size() > kMaxOutstandingProbes) {
          if (!p.probes.front().loaded) {
            p.est.on_probe_outcome(false);
          }
          p.probes.pop_front();
        }
      }
    }
    while (more() && p.ctrl.empty() && !p.ack_pending && !p.probe_due && !p.data.empty()) {
      detail::LedgerEntry* e = ledger.find(p.data.front());
      if (e == nullptr) {  // acknowledged while queued
        p.data.pop_front();
        continue;
      }
      if (!fits(e->frame.size())) {
        break;
      }
      emit_ledger(e->frame);
      e->last_sent = now;
      e->last_on_datagram = !stream;
      e->last_path = p.id;
      e->queued_mask &= ~p.bit();
      if (stream) {
        e->reliable_mask |= p.bit();
      }
      if (e->counted_path != p.id) {
        uncount(*e);
        p.unacked_bytes += e->frame.size();
        e->counted_path = p.id;
      }
      p.data.pop_front();
    }
    if (!p.has_output()) {
      p.tx_waiting_since.reset();
    } else if (frames > 0) {
      p.tx_waiting_since = now;  // progress: the stall clock restarts
    }
    return written;
  }
};

// ------------------------------------------------------------------ FlowCore

FlowCore::FlowCore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FlowCore::FlowCore(FlowCore&&) noexcept = default;
FlowCore& FlowCore::operator=(FlowCore&&) noexcept = default;
FlowCore::~FlowCore() = default;

Result<FlowCore> FlowCore::client(const FlowConfig& cfg, const Id128& flow_id,
                                  const Id128& instance_id) {
  RENDR_TRY_CTX(validate_config(cfg), "flow config");
  return FlowCore(std::make_unique<Impl>(cfg, Side::client, flow_id, instance_id));
}

Result<FlowCore> FlowCore::server(const FlowConfig& cfg, const Hello& hello,
                                  const Id128& instance_id, const PathOptions& first_path,
                                  TimePoint now) {
  RENDR_TRY_CTX(validate_config(cfg), "flow config");
  auto impl = std::make_unique<Impl>(cfg, Side::server, hello.flow_id, instance_id);
  impl->peer_instance = hello.instance_id;
  impl->peer_caps = hello.caps;
  auto p = impl->new_path(first_path, PathState::ready, now);
  if (!p.ok()) {
    return std::move(p).take_error();
  }
  HelloAck ack;
  ack.flow_id = hello.flow_id;
  ack.instance_id = instance_id;
  ack.caps = cfg.caps & ~kCapsL3Identity;
  if ((hello.caps & kCapsL3Identity) != 0) {
    ack.caps |= cfg.caps & kCapsL3Identity;
  }
  impl->queue_ctrl(**p, ack, now);
  impl->state = FlowState::active;
  impl->active = (*p)->id;
  impl->events.emplace_back(EvHandshakeDone{});
  impl->events.emplace_back(EvPathReady{(*p)->id});
  return FlowCore(std::move(impl));
}

Result<PathId> FlowCore::add_path(const PathOptions& opts, TimePoint now) {
  auto& m = *impl_;
  if (m.side != Side::client) {
    return make_error(errc::wrong_side, "add_path: servers attach paths with accept_bridge");
  }
  // A closing flow still takes paths: its BYE may need one to reach the peer.
  if (m.state == FlowState::dead) {
    return make_error(errc::closed, "add_path: flow is dead");
  }
  auto p = m.new_path(opts, PathState::pending, now);
  if (!p.ok()) {
    return std::move(p).take_error();
  }
  Impl::Path& path = **p;
  if (m.state == FlowState::init) {
    m.start_hello(path, now);
  } else if (m.state != FlowState::handshaking) {
    m.start_bridge(path, now);
  }
  return path.id;
}

Result<PathId> FlowCore::accept_bridge(const BridgeTag& tag, const PathOptions& opts,
                                       TimePoint now) {
  auto& m = *impl_;
  if (m.side != Side::server) {
    return make_error(errc::wrong_side, "accept_bridge on a client flow");
  }
  if (m.state == FlowState::dead) {
    return make_error(errc::closed, "accept_bridge: flow is dead");
  }
  if (tag.bridge_id != m.flow_id) {
    return make_error(errc::flow_mismatch, "bridge_tag for another flow_id");
  }
  if (!tag.legacy && (tag.expected_peer_instance_id != m.instance_id ||
                      tag.instance_id != m.peer_instance)) {
    return make_error(errc::instance_mismatch, "bridge_tag names another rendr instance");
  }
  auto p = m.new_path(opts, PathState::ready, now);
  if (!p.ok()) {
    return std::move(p).take_error();
  }
  BridgeAck ack;
  ack.bridge_id = m.flow_id;
  ack.instance_id = m.instance_id;
  ack.code = BridgeAckCode::ok;
  m.queue_ctrl(**p, ack, now);
  const PathId id = (*p)->id;
  m.path_became_ready(**p, now);
  return id;
}

Result<PathId> FlowCore::accept_hello_again(const Hello& hello, const PathOptions& opts,
                                            TimePoint now) {
  auto& m = *impl_;
  if (m.side != Side::server) {
    return make_error(errc::wrong_side, "accept_hello_again on a client flow");
  }
  if (m.state == FlowState::dead) {
    return make_error(errc::closed, "accept_hello_again: flow is dead");
  }
  if (hello.flow_id != m.flow_id || hello.instance_id != m.peer_instance) {
    return make_error(errc::flow_mismatch, "HELLO for a live flow_id from another instance");
  }
  if ((hello.caps & kCapsPacketMode) != (m.cfg.caps & kCapsPacketMode)) {
    return make_error(errc::wrong_mode, "repeated HELLO changes the packet-mode bit");
  }
  auto p = m.new_path(opts, PathState::ready, now);
  if (!p.ok()) {
    return std::move(p).take_error();
  }
  HelloAck ack;
  ack.flow_id = m.flow_id;
  ack.instance_id = m.instance_id;
  ack.caps = m.cfg.caps & ~kCapsL3Identity;
  if ((hello.caps & kCapsL3Identity) != 0) {
    ack.caps |= m.cfg.caps & kCapsL3Identity;
  }
  m.queue_ctrl(**p, ack, now);
  const PathId id = (*p)->id;
  m.path_became_ready(**p, now);
  return id;
}

Status FlowCore::on_receive(PathId path, std::span<const std::byte> bytes, TimePoint now) {
  auto& m = *impl_;
  Impl::Path* p = m.find(path);
  if (p == nullptr) {
    return make_error(errc::unknown_path, "on_receive: path " + std::to_string(path));
  }
  if (p->framing == Framing::datagram) {
    p->counters.bytes_rx += bytes.size();  // (stream bytes are counted by on_received)
    auto f = decode_frame(bytes);
    if (!f.ok()) {
      m.on_decode_error(*p, std::move(f).take_error(), now);
    } else {
      m.handle_frame(*p, std::move(*f), now);
    }
  } else {
    // Through the receive chunk, like a carrier read (a copy: these bytes are the caller's).
    while (!bytes.empty()) {
      auto sp = recv_space(path);
      if (sp.space.empty()) {
        break;  // the path died on the way
      }
      const std::size_t n = std::min(sp.space.size(), bytes.size());
      std::copy_n(bytes.begin(), n, sp.space.begin());
      bytes = bytes.subspan(n);
      (void)on_received(path, n, now);
    }
    return {};
  }
  m.drain_reorder(now);
  return {};
}

RecvSpace FlowCore::recv_space(PathId path) {
  auto& m = *impl_;
  Impl::Path* p = m.find(path);
  if (p == nullptr || p->framing != Framing::stream || p->rx_failed) {
    return {};
  }
  std::size_t need = kRxMinRead;  // room this read should have at least
  const std::size_t pending = p->rx_end - p->rx_parse;
  if (pending >= kStreamPrefixSize) {
    // Part of a frame is here: its whole length must fit in the chunk.
    const std::size_t len = stream_prefix_length(p->rx_chunk->data() + p->rx_parse);
    need = std::max(need, kStreamPrefixSize + len - pending);
  }
  if (p->rx_chunk && pending == 0 && p->rx_chunk.use_count() == 1) {
    p->rx_parse = p->rx_end = 0;  // nothing in it is still viewed: start it over
  }
  if (!p->rx_chunk || p->rx_chunk->size() - p->rx_end < need) {
    const std::size_t size =
        std::max(p->rx_next, std::bit_ceil(pending + need));  // a frame always fits whole
    auto fresh = detail::FrameCache::instance().make_chunk(size, m.rx_pinned);
    if (pending > 0) {
      std::copy_n(p->rx_chunk->data() + p->rx_parse, pending, fresh->data());
    }
    p->rx_chunk = std::move(fresh);
    p->rx_parse = 0;
    p->rx_end = pending;
  }
  auto& c = *p->rx_chunk;
  return RecvSpace{p->rx_chunk, std::span<std::byte>(c.data() + p->rx_end, c.size() - p->rx_end)};
}

bool FlowCore::release_recv_space(PathId path) {
  Impl::Path* p = impl_->find(path);
  if (p == nullptr || !p->rx_chunk || p->rx_end != p->rx_parse || p->rx_chunk.use_count() != 1) {
    return false;
  }
  p->rx_chunk.reset();
  p->rx_parse = p->rx_end = 0;
  return true;
}

Status FlowCore::on_received(PathId path, std::size_t n, TimePoint now) {
  auto& m = *impl_;
  Impl::Path* p = m.find(path);
  if (p == nullptr) {
    return make_error(errc::unknown_path, "on_received: path " + std::to_string(path));
  }
  if (p->framing != Framing::stream || !p->rx_chunk || n > p->rx_chunk->size() - p->rx_end) {
    return rendr::make_error(std::errc::invalid_argument,
                      "on_received: " + std::to_string(n) + " bytes do not fit recv_space");
  }
  if (p->rx_failed) {
    return {};
  }
  p->counters.bytes_rx += n;
  if (n == p->rx_chunk->size() - p->rx_end) {
    p->rx_next = std::min(p->rx_next * 2, detail::FrameCache::kChunkSize);
  }
  p->rx_end += n;
  // Hold the chunk here: handle_frame may kill this very path (bridge rejected), and the frame
  // being handled lies in it. Re-find the path after every frame.
  const auto chunk = p->rx_chunk;
  m.rx_source = chunk;
  while (true) {
    p = m.find(path);
    if (p == nullptr || p->rx_chunk != chunk) {
      break;
    }
    const std::size_t avail = p->rx_end - p->rx_parse;
    if (avail < kStreamPrefixSize) {
      break;
    }
    const std::byte* q = chunk->data() + p->rx_parse;
    const std::size_t len = stream_prefix_length(q);
    if (len < kHeaderSize) {
      p->rx_failed = true;
      m.on_decode_error(*p, short_stream_prefix(len), now);
      break;
    }
    if (avail < kStreamPrefixSize + len) {
      break;
    }
    p->rx_parse += kStreamPrefixSize + len;
    auto f = decode_frame(std::span<const std::byte>(q + kStreamPrefixSize, len));
    if (!f.ok()) {
      m.on_decode_error(*p, std::move(f).take_error(), now);
      break;
    }
    m.handle_frame(*p, std::move(*f), now);
    // Drain per frame: in-order frames never pile up in the reorder buffer, so its high-water
    // mark measures real reordering (G5 evidence), not batch size.
    m.drain_reorder(now);
  }
  m.rx_source.reset();
  m.drain_reorder(now);
  return {};
}

Status FlowCore::path_failed(PathId path, const Error& cause, TimePoint now) {
  auto& m = *impl_;
  if (m.find(path) == nullptr) {
    return make_error(errc::unknown_path, "path_failed: path " + std::to_string(path));
  }
  m.kill_path(path, cause, now);
  return {};
}

Status FlowCore::remove_path(PathId path, TimePoint now) {
  auto& m = *impl_;
  Impl::Path* p = m.find(path);
  if (p == nullptr) {
    return make_error(errc::unknown_path, "remove_path: path " + std::to_string(path));
  }
  if (p->state == PathState::ready) {
    std::vector<PathScore> others;
    for (const auto& s : m.scores()) {
      if (s.id != path) {
        others.push_back(s);
      }
    }
    if (others.empty()) {
      return make_error(errc::last_path, "remove_path: path " + std::to_string(path) +
                                             " is the only usable path");
    }
    if (path == m.active) {
      if (auto to = PrimeSelector::best_for_failover(others)) {
        m.planned_switch(*to, MigrateCause::explicit_request, now);
      }
    }
  }
  m.kill_path(path, make_error(errc::path_dead, "path " + std::to_string(path) + " removed"),
              now);
  return {};
}

Status FlowCore::migrate(PathId path, TimePoint now) {
  auto& m = *impl_;
  Impl::Path* p = m.find(path);
  if (p == nullptr) {
    return make_error(errc::unknown_path, "migrate: path " + std::to_string(path));
  }
  if (p->state != PathState::ready || !m.established()) {
    return make_error(errc::not_ready, "migrate: path " + std::to_string(path) + " is " +
                                           std::string(to_string(p->state)) + ", flow is " +
                                           std::string(to_string(m.state)));
  }
  m.planned_switch(path, MigrateCause::explicit_request, now);
  return {};
}

Status FlowCore::set_mode(Mode mode) {
  auto& m = *impl_;
  RENDR_TRY(check_mode_switch(m.mode, mode));
  m.mode = mode;
  return {};
}

std::size_t FlowCore::poll_transmit(PathId path, std::vector<std::byte>& out,
                                    std::size_t max_bytes, TimePoint now) {
  auto& m = *impl_;
  Impl::Path* p = m.find(path);
  if (p == nullptr) {
    return 0;
  }
  return m.transmit(*p, out, max_bytes, now);
}

std::size_t FlowCore::poll_transmit_gather(PathId path, TxGather& out, std::size_t max_bytes,
                                           TimePoint now) {
  auto& m = *impl_;
  out.clear();
  Impl::Path* p = m.find(path);
  if (p == nullptr) {
    return 0;
  }
  if (p->framing != Framing::stream) {
    const std::size_t n = m.transmit(*p, out.owned, max_bytes, now);
    if (n > 0) {
      out.pieces.emplace_back(out.owned);
      out.bytes = n;
    }
    return n;
  }
  auto& pieces = m.gather_scratch;
  pieces.clear();
  const std::size_t n = m.transmit(*p, out.owned, max_bytes, now, &pieces);
  // |owned| no longer grows: its pieces can point into it now.
  for (const auto& g : pieces) {
    out.pieces.push_back(g.frame != nullptr ? std::span<const std::byte>(g.frame, g.len)
                                            : std::span<const std::byte>(out.owned).subspan(
                                                  g.off, g.len));
  }
  out.bytes = n;
  return n;
}

void FlowCore::transmit_done(PathId path) {
  auto& m = *impl_;
  auto it = m.pinned_by_path.find(path);
  if (it == m.pinned_by_path.end()) {
    return;
  }
  for (const std::byte* f : it->second) {
    auto pin = m.pins.find(f);
    if (pin == m.pins.end() || --pin->second > 0) {
      continue;
    }
    m.pins.erase(pin);
    if (auto r = m.released_pinned.find(f); r != m.released_pinned.end()) {
      m.pool.give(std::move(r->second));
      m.released_pinned.erase(r);
    }
  }
  m.pinned_by_path.erase(it);
}

bool FlowCore::wants_transmit(PathId path) const {
  const Impl::Path* p = impl_->find(path);
  return p != nullptr && p->has_output();
}

std::vector<PathId> FlowCore::path_ids() const {
  std::vector<PathId> v;
  for (const auto& [id, p] : impl_->paths) {
    v.push_back(id);
  }
  return v;
}

std::optional<FlowEvent> FlowCore::poll_event() {
  auto& ev = impl_->events;
  if (ev.empty()) {
    return std::nullopt;
  }
  FlowEvent e = std::move(ev.front());
  ev.pop_front();
  return e;
}

std::optional<TimePoint> FlowCore::next_deadline() const { return impl_->deadline(); }

void FlowCore::on_timeout(TimePoint now) { impl_->run_timers(now); }

namespace {
// The checks write() and reserve_write() make before taking bytes.
Status check_writable(FlowState state, bool closing, bool packet,
                      const std::optional<Error>& close_error) {
  if (state == FlowState::dead) {
    return close_error.value_or(make_error(errc::closed, "write: flow is dead"));
  }
  if (state == FlowState::closing || closing) {
    return make_error(errc::closed, "write after close");
  }
  if (state == FlowState::init) {
    return make_error(errc::not_ready, "write: no path added yet");
  }
  if (packet) {
    return make_error(errc::wrong_mode, "write on a packet flow (use write_packet)");
  }
  return {};
}
}  // namespace

Result<std::size_t> FlowCore::write(std::span<const std::byte> data, TimePoint now) {
  auto& m = *impl_;
  if (auto st = check_writable(m.state, m.our_bye_seq.has_value(), m.packet(), m.close_error);
      !st) {
    return std::move(st).take_error();
  }
  std::size_t taken = 0;
  bool blocked = false;
  while (taken < data.size()) {
    const std::size_t n = std::min({m.cfg.max_payload, data.size() - taken, m.window_room()});
    if (n == 0) {
      blocked = true;
      break;
    }
    const std::uint64_t seq = m.ledger.next_seq();
    if (seq > kMaxSeq) {
      if (taken == 0) {
        return make_error(errc::sequence_exhausted, "write: 2^48-1 frames sent");
      }
      break;
    }
    std::vector<std::byte> frame = m.pool.take(kHeaderSize + n);
    encode_data_header(seq, frame);
    const auto chunk = data.subspan(taken, n);
    frame.insert(frame.end(), chunk.begin(), chunk.end());
    auto& e = m.ledger.push(std::move(frame), true);
    m.dispatch(e, now);
    taken += n;
  }
  if (blocked) {
    m.counters.backpressure_events += 1;
  }
  return taken;
}


Result<std::size_t> FlowCore::reserve_write(std::size_t n, std::vector<BufferLoan>& loans) {
  auto& m = *impl_;
  loans.clear();
  if (auto st = check_writable(m.state, m.our_bye_seq.has_value(), m.packet(), m.close_error);
      !st) {
    return std::move(st).take_error();
  }
  std::size_t left = std::min(n, writable());
  std::size_t total = 0;
  while (left > 0) {
    BufferLoan l;
    l.payload = std::min(left, m.cfg.max_payload);
    l.buf = m.pool.take(kHeaderSize + l.payload);
    l.buf.resize(kHeaderSize);
    left -= l.payload;
    total += l.payload;
    loans.push_back(std::move(l));
  }
  if (total == 0 && n > 0) {
    m.counters.backpressure_events += 1;
  }
  return total;
}

Result<std::size_t> FlowCore::commit_write(std::vector<BufferLoan>& loans, TimePoint now) {
  auto& m = *impl_;
  if (auto st = check_writable(m.state, m.our_bye_seq.has_value(), m.packet(), m.close_error);
      !st) {
    recycle(loans);
    return std::move(st).take_error();
  }
  std::size_t taken = 0;
  std::vector<std::byte> hdr;
  hdr.reserve(kHeaderSize);
  for (auto& l : loans) {
    if (l.buf.size() != kHeaderSize + l.payload) {
      recycle(loans);
      return make_error(errc::invalid_config, "commit_write: a loan was not filled");
    }
    const std::uint64_t seq = m.ledger.next_seq();
    if (seq > kMaxSeq) {
      if (taken == 0) {
        recycle(loans);
        return make_error(errc::sequence_exhausted, "write: 2^48-1 frames sent");
      }
      break;
    }
    hdr.clear();
    encode_data_header(seq, hdr);
    std::copy(hdr.begin(), hdr.end(), l.buf.begin());
    taken += l.payload;
    auto& e = m.ledger.push(std::move(l.buf), true);
    m.dispatch(e, now);
  }
  recycle(loans);
  return taken;
}

Result<ReadOutcome> FlowCore::read_loan(std::span<std::byte> out, std::vector<BufferLoan>& loans,
                                        TimePoint now) {
  auto& m = *impl_;
  loans.clear();
  if (m.packet()) {
    return make_error(errc::wrong_mode, "read on a packet flow (use read_packet)");
  }
  std::size_t n = 0;
  while (n < out.size() && !m.delivered.empty()) {
    auto& front = m.delivered.front();
    const std::size_t avail = front.size() - m.delivered_front_off;
    if (avail <= out.size() - n) {
      if (front.chunk) {
        loans.push_back(
            BufferLoan{{}, front.off + m.delivered_front_off, avail, std::move(front.chunk)});
      } else {
        loans.push_back(BufferLoan{std::move(front.own), m.delivered_front_off, 0, nullptr});
      }
      m.delivered.pop_front();
      m.delivered_front_off = 0;
      m.delivered_bytes -= avail;
      n += avail;
      continue;
    }
    // Does not fit whole: copy the part that does, after the loans.
    const std::size_t k = out.size() - n;
    std::copy_n(front.bytes().begin() + static_cast<std::ptrdiff_t>(m.delivered_front_off), k,
                out.begin() + static_cast<std::ptrdiff_t>(n));
    n += k;
    m.delivered_front_off += k;
    m.delivered_bytes -= k;
  }
  if (n > 0) {
    if (m.state != FlowState::dead) {
      m.drain_reorder(now);  // room in the window: admit more, ACK it
    }
    return ReadOutcome{n, false};
  }
  if (m.peer_bye == ByeReason::normal) {
    return ReadOutcome{0, true};
  }
  if (m.state == FlowState::dead) {
    return m.close_error.value_or(make_error(errc::closed, "read: flow is dead"));
  }
  return ReadOutcome{0, false};
}

void FlowCore::recycle(std::vector<BufferLoan>& loans) {
  for (auto& l : loans) {
    impl_->pool.give(std::move(l.buf));  // chunk views just let go: the last one frees it
  }
  loans.clear();
}

Result<bool> FlowCore::write_packet(std::span<const std::byte> packet, TimePoint now) {
  auto& m = *impl_;
  if (!m.packet()) {
    return make_error(errc::wrong_mode, "write_packet on a stream flow (use write)");
  }
  if (packet.size() > m.cfg.max_payload) {
    return make_error(errc::packet_too_large, "packet of " + std::to_string(packet.size()) +
                                                  " bytes > max_payload " +
                                                  std::to_string(m.cfg.max_payload));
  }
  if (m.state == FlowState::dead) {
    return m.close_error.value_or(make_error(errc::closed, "write_packet: flow is dead"));
  }
  if (m.state == FlowState::closing || m.our_bye_seq) {
    return make_error(errc::closed, "write_packet after close");
  }
  if (m.state == FlowState::init) {
    return make_error(errc::not_ready, "write_packet: no path added yet");
  }
  if (m.ledger.next_seq() > kMaxSeq) {
    return make_error(errc::sequence_exhausted, "write_packet: 2^48-1 frames sent");
  }
  // A packet is never split: it needs window for all of it (an empty ledger always fits one).
  if (m.ledger.data_frames() > 0 && m.window_room() < std::max<std::size_t>(packet.size(), 1)) {
    m.counters.backpressure_events += 1;
    return false;
  }
  std::vector<std::byte> frame = m.pool.take(kHeaderSize + packet.size());
  encode_data_header(m.ledger.next_seq(), frame);
  frame.insert(frame.end(), packet.begin(), packet.end());
  auto& e = m.ledger.push(std::move(frame), true);
  m.dispatch(e, now);
  return true;
}

Result<ReadOutcome> FlowCore::read_packet(std::vector<std::byte>& out, TimePoint now) {
  auto& m = *impl_;
  if (!m.packet()) {
    return make_error(errc::wrong_mode, "read_packet on a stream flow (use read)");
  }
  if (!m.delivered.empty()) {
    auto& front = m.delivered.front();
    if (front.chunk) {
      out.assign(front.bytes().begin(), front.bytes().end());  // packets are handed over owned
    } else {
      m.pool.give(std::move(out));
      out = std::move(front.own);
    }
    m.delivered.pop_front();
    m.delivered_bytes -= out.size();
    if (m.state != FlowState::dead) {
      m.drain_reorder(now);
    }
    return ReadOutcome{out.size(), false};
  }
  out.clear();
  if (m.peer_bye == ByeReason::normal) {
    return ReadOutcome{0, true};
  }
  if (m.state == FlowState::dead) {
    return m.close_error.value_or(make_error(errc::closed, "read_packet: flow is dead"));
  }
  return ReadOutcome{0, false};
}

bool FlowCore::packet_ready() const { return !impl_->delivered.empty(); }
bool FlowCore::packet_mode() const { return impl_->packet(); }

Result<ReadOutcome> FlowCore::read(std::span<std::byte> out, TimePoint now) {
  // The lending read, copied out at once (one loop for both).
  std::vector<BufferLoan>& loans = impl_->read_scratch;
  auto r = read_loan(out, loans, now);
  std::size_t off = 0;
  for (const auto& l : loans) {
    const auto b = l.bytes();
    std::copy(b.begin(), b.end(), out.begin() + static_cast<std::ptrdiff_t>(off));
    off += b.size();
  }
  recycle(loans);
  return r;
}

std::size_t FlowCore::readable() const { return impl_->delivered_bytes; }

std::size_t FlowCore::writable() const {
  const auto& m = *impl_;
  if (m.state == FlowState::dead || m.state == FlowState::closing || m.state == FlowState::init ||
      m.our_bye_seq) {
    return 0;
  }
  if (m.window_room() == 0) {
    return 0;
  }
  const auto& l = m.ledger;
  // Bytes left under both bounds (ledger and unsent), less one header per frame they need.
  const std::size_t unsent = m.unsent_bytes();
  const std::size_t room = std::min(l.max_bytes() - std::min(l.max_bytes(), l.bytes()),
                                    m.cfg.unsent_max_bytes - std::min(m.cfg.unsent_max_bytes, unsent));
  const std::size_t per = m.cfg.max_payload + kHeaderSize;
  const std::size_t frames = (room + per - 1) / per;
  const std::size_t payload = room - std::min(room, frames * kHeaderSize);
  const std::size_t frames_left = l.max_frames() - std::min(l.max_frames(), l.data_frames());
  const std::size_t n = std::min(payload, frames_left * m.cfg.max_payload);
  // An empty window always takes one maximal frame.
  return l.data_frames() == 0 ? std::max(n, m.cfg.max_payload) : n;
}

std::size_t FlowCore::write_wake_bytes() const {
  const auto& m = *impl_;
  const std::size_t cap = std::min(m.ledger.max_bytes(), m.cfg.unsent_max_bytes);
  return std::max<std::size_t>(1, std::min(cap / 2, cap - std::min(cap, m.cfg.max_payload + kHeaderSize)));
}

bool FlowCore::read_ready() const {
  const auto& m = *impl_;
  return !m.delivered.empty() || m.peer_bye == ByeReason::normal || m.state == FlowState::dead;
}

bool FlowCore::write_ready(std::size_t want) const {
  const auto& m = *impl_;
  if (m.state == FlowState::dead || m.state == FlowState::closing || m.our_bye_seq) {
    return true;  // the write fails now
  }
  return writable() >= std::max<std::size_t>(want, 1);
}

void FlowCore::close(TimePoint now) {
  auto& m = *impl_;
  switch (m.state) {
    case FlowState::init:
      m.close_error = make_error(errc::closed, "closed before any path was added");
      m.finish_clean();
      return;
    case FlowState::handshaking:  // BYE queues behind buffered writes, sent after HELLO_ACK
    case FlowState::active:
    case FlowState::migrating: {
      if (m.ledger.next_seq() > kMaxSeq) {
        m.fail_flow(make_error(errc::sequence_exhausted, "close: no SEQ left for BYE"),
                    std::nullopt, now);
        return;
      }
      const std::uint64_t seq = m.ledger.next_seq();
      auto& e = m.ledger.push(encode(Bye{seq, ByeReason::normal}), false);
      m.our_bye_seq = seq;
      m.dispatch(e, now);
      if (m.state != FlowState::handshaking) {
        m.state = FlowState::closing;
      }
      m.close_deadline = now + std::min(m.cfg.migration_budget, m.cfg.graceful_close_timeout);
      return;
    }
    case FlowState::closing:
    case FlowState::dead:
      return;
  }
}

void FlowCore::abort(Error why, TimePoint now) {
  impl_->fail_flow(std::move(why), ByeReason::app_request, now);
}

FlowState FlowCore::state() const { return impl_->state; }
Side FlowCore::side() const { return impl_->side; }
Mode FlowCore::mode() const { return impl_->mode; }
PathId FlowCore::active_path() const { return impl_->active; }
const Id128& FlowCore::flow_id() const { return impl_->flow_id; }
const std::optional<Error>& FlowCore::close_error() const { return impl_->close_error; }

FlowStats FlowCore::stats() const {
  const auto& m = *impl_;
  FlowStats s = m.counters;
  s.flow_id = m.flow_id;
  s.side = m.side;
  s.state = m.state;
  s.mode = m.mode;
  s.active_path = m.active;
  s.peer_caps = m.peer_caps;
  s.peer_instance_id = m.peer_instance;
  s.recv_queue_hwm = m.reorder.frames_high_water();
  s.bond_stuck_skips = m.bond.stuck_skips();
  s.ledger_frames = m.ledger.frames();
  s.ledger_bytes = m.ledger.bytes();
  s.ledger_frames_high_water = m.ledger.frames_high_water();
  s.ledger_bytes_high_water = m.ledger.bytes_high_water();
  s.published_next = m.ledger.next_seq();
  s.ack_next = m.ledger.ack_next();
  s.recv_next = m.reorder.expected();
  s.reorder_frames = m.reorder.frames();
  s.delivered_unread = m.delivered_bytes;
  s.pooled_buffers = m.pool.size();
  s.recv_chunk_bytes = m.rx_pinned->load(std::memory_order_relaxed);
  for (const auto& [id, p] : m.paths) {
    PathInfo i = p.counters;
    i.id = id;
    i.name = p.name;
    i.framing = p.framing;
    i.state = p.state;
    i.active = id == m.active;
    i.has_rtt = p.est.has_rtt();
    i.srtt = p.est.srtt();
    i.jitter = p.est.jitter();
    i.loss_ppt = p.est.loss_ppt();
    i.queued_frames = p.data.size() + p.ctrl.size();
    s.paths.push_back(std::move(i));
  }
  return s;
}

}  // namespace rendr::engine
