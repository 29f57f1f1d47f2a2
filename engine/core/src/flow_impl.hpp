// SPDX-License-Identifier: Apache-2.0
// FlowCore::Impl (private): the state of one flow and the internal steps FlowCore's calls are
// made of. The implementation is split by role:
//   flow_paths.cpp      path attach (HELLO / BRIDGE_TAG), path death, failover and migration
//   flow_send.cpp       the send window, scheduling onto paths, carrier output, retransmission
//   flow_receive.cpp    carrier input, frame handling, ACKs, reorder and delivery, reads
//   flow_lifecycle.cpp  timers (probes, freshness, stalls, budget), close / abort, stats
#pragma once

#include <rendr/engine/errors.hpp>
#include <rendr/engine/core/flow.hpp>

#include <rendr/engine/core/frame_cache.hpp>
#include <rendr/engine/core/silence.hpp>
#include "ledger.hpp"
#include "reorder.hpp"

#include <algorithm>
#include <bit>
#include <deque>
#include <atomic>
#include <map>
#include <unordered_map>

namespace rendr::engine {

// Limits and helpers shared by the flow_*.cpp files.
inline constexpr std::size_t kMaxPaths = 64;      // one bit per path slot in ledger masks
inline constexpr std::size_t kMaxCtrlQueue = 64;  // queued OOB controls per path (probe replies)
inline constexpr std::size_t kMaxOutstandingProbes = 16;
// Bond: the soonest a path judged stuck is probed again (see dispatch).
inline constexpr Duration kBondRecheckMin = std::chrono::milliseconds(10);
inline constexpr std::size_t kControlReserve = 8;
inline constexpr int kFastRetransmitDupAcks = 3;
// Stream receive chunks: a path starts with a small one (an idle flow stays small) and doubles
// the next while reads fill the space they were given, up to FrameCache::kChunkSize. A chunk
// with less than kRxMinRead left (or too little for the frame being read) is replaced.
inline constexpr std::size_t kRxFirstChunk = 16 * 1024;
inline constexpr std::size_t kRxMinRead = 4 * 1024;
// ACK coalescing (stream carriers only): in-order DATA is acknowledged once kAckEveryBytes
// (at most an eighth of the ledger) or an eighth of the ledger's frames were delivered since
// the last ACK, or kAckDelay after the first unacknowledged delivery, whichever comes first.
// Anything else in sequence (BYE, SHUTDOWN_WRITE, the L3 record...), a duplicate, or a ready
// datagram path (its sender's RTO and fast retransmit read the ACKs) is acknowledged at once.
// An ACK per carrier read (~100 KB) cost the receiver a sendmsg and the sender a wake-up.
inline constexpr std::size_t kAckEveryBytes = 1U << 20;
inline constexpr Duration kAckDelay = std::chrono::milliseconds(5);

inline std::uint64_t ns_since_epoch(TimePoint t) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
}

inline std::vector<std::byte> encode(const Frame& f) {
  std::vector<std::byte> out;
  // Frames built here are valid by construction; an encode error is a logic error.
  if (!encode_frame(f, out).ok()) {
    out.clear();
  }
  return out;
}

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
    // Since when unacked_bytes has been non-zero (empty while it is 0), and when the
    // transport-silence rule may ask the carrier again (ack_silence_min).
    std::optional<TimePoint> inflight_since;
    TimePoint next_transport_check{};
    bool transport_blind = false;  // the carrier cannot tell (transport_ack empty): not asked again
    std::optional<TimePoint> tx_waiting_since;
    PathEstimator est;
    struct OutstandingProbe {
      std::uint64_t id = 0;
      TimePoint sent{};
      bool loaded = false;  // committed while this path's output was backlogged
      bool clean = false;   // committed with none of our bytes unacknowledged on this path
    };
    std::deque<OutstandingProbe> probes;
    std::deque<OutstandingProbe> late;  // expired, still matched if the reply turns up
    TimePoint next_probe{};
    TimePoint last_rx{};
    TimePoint attached_at{};  // handshake clock for hello / bridging carriers
    std::optional<TimePoint> silent_probe;  // first probe committed since the last reception
    // A silence verdict postponed (judge_silence: pending input, starved thread) until
    // |silence_hold|, for the unanswered probe sent at |silence_hold_for|.
    std::optional<TimePoint> silence_hold;
    TimePoint silence_hold_for{};
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
  // L3 identity (docs/wire.md): the client's from its config; the server's once the record
  // was admitted. |l3_expected|: the server echoed caps bits 1 + 14, so SEQ 1 must be the record.
  std::optional<L3Identity> l3_id;
  bool l3_expected = false;
  // Half-close (docs/wire.md): we sent SHUTDOWN_WRITE (no more writes) / the peer's reached the
  // head of the reorder buffer (reads end in EOF after what came before it).
  bool write_shut = false;
  bool peer_fin = false;
  FlowState state = FlowState::init;
  std::optional<Error> close_error;
  std::optional<ByeReason> peer_bye;
  std::optional<Refusal> peer_refusal;  // the peer's REFUSE, once admitted
  std::optional<std::uint64_t> our_bye_seq;
  std::optional<TimePoint> close_deadline;
  std::optional<TimePoint> budget_deadline;
  // Server: a frame other than HELLO / BRIDGE_TAG arrived on some path (the client spoke);
  // until then a flow without carriers gets cfg.silent_budget, not the migration budget.
  bool heard = false;
  // Client with a listener key: the wall clock at |wall_steady| (the latest add_path) dates
  // the key blocks; |key_nonce| numbers them (tags differ even within one second).
  std::chrono::system_clock::time_point wall_base{};
  TimePoint wall_steady{};
  std::uint64_t key_nonce = 0;
  bool silent_deadline = false;  // budget_deadline is the silent budget's

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
  // Coalesced ACKs: DATA delivered since the last ACK was queued, and when one is due anyway.
  std::size_t ack_owed_bytes = 0;
  std::size_t ack_owed_frames = 0;
  std::optional<TimePoint> ack_deadline;

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
  // hello_ack_caps (server): the caps of a HELLO_ACK answering a HELLO with |asked|: our own
  // packet-mode and keyed bits, the L3 identity bits only when asked and supported (bit 14
  // only together with bit 1), half-close when asked, never the mode hint.
  [[nodiscard]] std::uint32_t hello_ack_caps(std::uint32_t asked) const {
    std::uint32_t c =
        cfg.caps &
        ~(kCapsL3Identity | kCapsL3Record | kCapsModeMask | kCapsHalfClose | kCapsRefuse);
    c |= asked & (kCapsHalfClose | kCapsRefuse);  // every core of this version reads both
    const std::uint32_t l3 = asked & cfg.caps & kCapsL3Identity;
    c |= l3;
    if (l3 != 0) {
      c |= asked & cfg.caps & kCapsL3Record;
    }
    return c;
  }
  [[nodiscard]] static bool l3_negotiated(std::uint32_t caps) {
    return (caps & (kCapsL3Identity | kCapsL3Record)) == (kCapsL3Identity | kCapsL3Record);
  }
  // take_l3_record (drain_reorder) checks and stores the record at the head; false = the flow
  // failed (bad_l3_identity).
  bool take_l3_record(std::uint64_t seq, const detail::Payload& record, TimePoint now);
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

  Result<Path*> new_path(const PathOptions& opts, PathState st, TimePoint now);

  // uncount removes |e| from the unacked-bytes count of the path it was last committed on.
  void uncount(detail::LedgerEntry& e) {
    if (Path* q = find(e.counted_path)) {
      q->unacked_bytes -= std::min(q->unacked_bytes, e.frame.size());
      if (q->unacked_bytes == 0) {
        q->inflight_since.reset();
      }
    }
    e.counted_path = 0;
  }

  void mark_waiting(Path& p, TimePoint now) {
    if (!p.tx_waiting_since) {
      p.tx_waiting_since = now;
    }
  }

  // probe_first: a path that is ready from now on probes at once - due now, so it leaves in the
  // transmit that follows (with the HELLO_ACK, L3 identity or DATA sent then) rather than in a
  // segment of its own after a timer turn (a short flow sent 2 of its ~13 segments so).
  void probe_first(Path& p, TimePoint now) {
    p.next_probe = now + cfg.probe_interval;
    if (!p.probe_due) {
      p.probe_due = true;
      mark_waiting(p, now);
    }
  }

  void queue_ctrl(Path& p, const Frame& f, TimePoint now) {
    if (p.ctrl.size() >= kMaxCtrlQueue) {
      return;  // a peer flooding probes does not grow our memory
    }
    p.ctrl.push_back(encode(f));
    mark_waiting(p, now);
  }
  // queue_first_frame queues a HELLO / BRIDGE_TAG, sealed with the listener key if any.
  void queue_first_frame(Path& p, FirstFrame f, TimePoint now);

  void queue_data(Path& p, detail::LedgerEntry& e, TimePoint now) {
    p.data.push_back(e.seq);
    e.queued_mask |= p.bit();
    mark_waiting(p, now);
  }

  // dispatch queues ledger entry |e| on the path(s) the mode picks; nothing when no path is
  // usable (it is replayed when one becomes ready).
  void dispatch(detail::LedgerEntry& e, TimePoint now);

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
  void replay_orphans(TimePoint now);

  // ack_delayable: may in-order DATA wait for a coalesced ACK (every ready path is a stream)?
  [[nodiscard]] bool ack_delayable() const {
    for (const auto& [id, p] : paths) {
      if (p.state == PathState::ready && p.framing == Framing::datagram) {
        return false;
      }
    }
    return true;
  }
  // ack_delivered (drain_reorder): |n| payload bytes of in-order DATA were delivered (or the
  // head moved past a sequenced frame with |urgent|): ACK now or arm the coalescing deadline.
  void ack_delivered(TimePoint now, bool urgent) {
    const std::size_t every_bytes = std::min(kAckEveryBytes, cfg.ledger_max_bytes / 8);
    const std::size_t every_frames = std::max<std::size_t>(1, cfg.ledger_max_frames / 8);
    if (urgent || ack_owed_bytes >= every_bytes || ack_owed_frames >= every_frames ||
        !ack_delayable()) {
      schedule_ack(now);
    } else if (!ack_deadline) {
      ack_deadline = now + kAckDelay;
    }
  }
  void schedule_ack(TimePoint now) {
    ack_owed_bytes = 0;
    ack_owed_frames = 0;
    ack_deadline.reset();
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
  void trim_pool_if_idle(TimePoint now);
  static constexpr Duration kPoolIdle = std::chrono::seconds(2);
  std::optional<TimePoint> pool_idle_since;
  std::uint64_t pool_takes_at_idle = 0;

  void refresh_zombie() {
    zombie_left = cfg.zombie_max_migrations;
    last_death_migration.reset();
  }

  void fail_flow(Error err, std::optional<ByeReason> bye, TimePoint now);

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
  void activate(PathId to, MigrateCause cause, TimePoint now);

  void enter_migrating(TimePoint now);

  void kill_path(PathId id, Error reason, TimePoint now);

  void start_hello(Path& p, TimePoint now);

  // Datagram carriers may lose the handshake: HELLO / BRIDGE_TAG are repeated with backoff
  // (200 ms doubling to 1 s) until answered or the handshake timeout drops the carrier.
  static constexpr Duration kHandshakeRepeat = std::chrono::milliseconds(200);
  static constexpr Duration kHandshakeRepeatMax = std::chrono::seconds(1);
  static void arm_handshake_repeat(Path& p, TimePoint now);

  void send_hello(Path& p, TimePoint now);

  void start_bridge(Path& p, TimePoint now);

  void send_bridge_tag(Path& p, TimePoint now);

  // path_became_ready: probing starts; a migrating flow resumes on it; orphans are replayed.
  void path_became_ready(Path& p, TimePoint now);

  // ---------------------------------------------------------------- receive

  void handle_frame(Path& p, Frame&& f, TimePoint now);

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
      if (packet() && seq != reorder.expected() && !(l3_expected && !l3_id)) {
        // Datagram semantics: hand it over now, even with earlier SEQs missing (when the
        // receive queue has room; otherwise it waits for the head like a stream frame).
        // Not before the negotiated L3 identity record: no packet precedes it.
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

  void handle_ack(std::uint64_t next, TimePoint now);

  void handle_hello_ack(Path& p, const HelloAck& ha, TimePoint now);

  void handle_bridge_ack(Path& p, const BridgeAck& ba, TimePoint now);

  void deliver_packet(detail::Payload payload);

  void drain_reorder(TimePoint now);

  void handle_peer_bye(ByeReason reason, TimePoint now);
  void handle_peer_refuse(const detail::RecvItem& item, TimePoint now);
  // half_close: did the handshake negotiate SHUTDOWN_WRITE (both sides read it)?
  [[nodiscard]] bool half_close() const { return (peer_caps & kCapsHalfClose) != 0; }
  [[nodiscard]] bool refuse_ok() const { return (peer_caps & kCapsRefuse) != 0; }

  void on_decode_error(Path& p, Error err, TimePoint now);

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
  // silence_due: when the path's silence is next judged (the window's end, or a postponed
  // verdict's recheck); empty when nothing is unanswered.
  [[nodiscard]] std::optional<TimePoint> silence_due(const Path& p) const {
    const auto fu = first_unanswered(p);
    if (!fu) {
      return std::nullopt;
    }
    const TimePoint end = *fu + fresh(p);
    if (p.silence_hold && p.silence_hold_for == *fu) {
      return std::max(end, *p.silence_hold);
    }
    return end;
  }

  // transport_due: when the transport-silence rule next looks at |p| (empty: not for this
  // path now - off, no frames of ours in flight, not a stream, or no other ready path).
  [[nodiscard]] std::optional<TimePoint> transport_due(PathId id, const Path& p) const {
    if (cfg.ack_silence_min <= Duration::zero() || !p.inflight_since || p.transport_blind ||
        p.framing != Framing::stream || !other_ready_path(id)) {
      return std::nullopt;
    }
    return std::max(*p.inflight_since + cfg.ack_silence_min, p.next_transport_check);
  }
  // transport_silent: asks the carrier (ctx.transport_ack) whether |p|'s transport has heard
  // no acknowledgement for too long with our frames in flight; the reason when so.
  [[nodiscard]] std::optional<std::string> transport_silent(PathId id, Path& p, TimePoint now,
                                                            const FlowCore::TimerContext& ctx);
  static constexpr Duration kTransportCheck = std::chrono::milliseconds(5);
  // A receiver may hold the ACK of less than two full segments for its delayed-ACK timer: up
  // to 200 ms on Linux (TCP_DELACK_MAX; it grows there for sparse small segments, which is
  // what an echo sends) and in Windows' default. Fewer than kDelayedAckPackets packets in
  // flight wait that long plus ack_silence_min. 3 x ack_silence_min (90 ms) failed a healthy
  // path in CI: one echo segment to a loaded rendr-impair waited 104 ms for its ACK.
  static constexpr std::uint32_t kDelayedAckPackets = 3;
  static constexpr Duration kDelayedAckMax = std::chrono::milliseconds(200);

  [[nodiscard]] Duration rto_for(const detail::LedgerEntry& e) const {
    const Path* p = find(e.last_path);
    const Duration base = p != nullptr ? p->est.rto(cfg.rto_min, cfg.rto_max) : cfg.rto_min;
    const auto shift = std::min<std::uint32_t>(e.retransmits, 5);
    return std::min<Duration>(base * (1U << shift), cfg.rto_max);
  }

  void run_timers(TimePoint now, const FlowCore::TimerContext& ctx);
  // silent_now: judge_silence for |p| (postponing the verdict when it says so).
  [[nodiscard]] bool silent_now(PathId id, Path& p, TimePoint now,
                                const FlowCore::TimerContext& ctx);

  void retransmit(detail::LedgerEntry& e, TimePoint now);

  [[nodiscard]] std::optional<FlowCore::Deadline> deadline() const;

  // planned_switch: replay the whole unacknowledged ledger on |to| first, then switch.
  void planned_switch(PathId to, MigrateCause cause, TimePoint now);

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
                       std::vector<GatherPiece>* gather = nullptr);
};

}  // namespace rendr::engine
