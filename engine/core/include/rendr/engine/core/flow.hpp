// SPDX-License-Identifier: Apache-2.0
// FlowCore: one rendr flow (one logical connection, one side), I/O-free (STYLE M3). Part of the
// engine core (rendr::engine_core): not an embedder API; embedders use rendr/engine/conn.hpp.
//
// Input:  carrier bytes per path (on_receive), carrier failures (path_failed), application
//         writes/reads/close, admin calls (add_path, migrate, remove_path, set_mode), and "now".
// Output: carrier bytes per path (poll_transmit), events (poll_event: handshake done, path
//         ready/down, migrated, closed) and the next deadline (next_deadline -> on_timeout).
// It never blocks, sleeps, reads a clock or touches a socket; the Asio shell (engine/src,
// FlowDriver) shuttles bytes and timers. All methods must be called from one thread (the flow's
// executor); the object is movable, not copyable.
//
// Semantics follow the public rendr v0.3 engine (docs/wire.md, docs/engine.md): one SEQ space
// per direction shared by DATA and sequenced controls; every sequenced frame is kept in a
// bounded replay ledger until the peer's cumulative ACK releases it (the ledger bound is the
// send window: write() accepts less, or nothing, when it is full); the receiver admits frames
// in SEQ order through a hard-capped reorder buffer into a bounded delivery buffer and ACKs
// only what it admitted, so a reader that stops reading stops the sender (end-to-end
// backpressure). A path that dies (carrier error, unanswered probes past its RTT-scaled
// freshness window, stalled output, malformed input) is dropped and every unacknowledged frame
// that no surviving path carries is replayed on the survivors; a planned switch replays the
// whole ledger on the new path first. No path at all: state migrating for at most the
// migration budget, then migration_budget_exceeded.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/engine/core/path_quality.hpp>
#include <rendr/engine/core/scheduler.hpp>
#include <rendr/engine/core/wire.hpp>
#include <rendr/engine/types.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace rendr::engine {

struct PathOptions {
  Framing framing = Framing::stream;
  std::string name;  // sent as the str8 path name in HELLO / BRIDGE_TAG when non-empty
  // Largest frame the carrier takes (header + payload, no prefix); 0 = the framing's own limit.
  // Frames are encoded once and may be replayed on any path, so every path of a flow must take
  // 8 + max_payload bytes (udpflow: 1 392, QUIC DATAGRAM: 1 150).
  std::size_t max_frame = 0;
  // The wall clock at the |now| of the call that passes these options (add_path): a flow with a
  // listener key (FlowConfig::listener_key) dates its key blocks by it. Ignored otherwise.
  std::chrono::system_clock::time_point wall{};
};

struct EvHandshakeDone {};
struct EvPathReady {
  PathId path = 0;
};
// EvPathDown: the core dropped the path; the shell closes its carrier.
struct EvPathDown {
  PathId path = 0;
  Error reason;
};
struct EvMigrated {
  PathId from = 0;  // 0 when the flow was migrating (no path)
  PathId to = 0;
  MigrateCause cause = MigrateCause::death;
};
// EvClosed: the flow is dead. error empty = clean (our BYE acknowledged, or peer BYE normal).
// The shell flushes poll_transmit once more (final ACK/BYE) before closing carriers.
struct EvClosed {
  std::optional<Error> error;
};
using FlowEvent = std::variant<EvHandshakeDone, EvPathReady, EvPathDown, EvMigrated, EvClosed>;

struct ReadOutcome {
  std::size_t bytes = 0;
  bool eof = false;  // peer closed cleanly and every byte before its BYE was read
  // The read made room for frames the receive window held back: they were admitted and an ACK
  // is due, so the shell should run its output (a read that admitted nothing needs no flush).
  bool output = false;
};

// A frame buffer lent to a shell so it can copy payload bytes without holding its lock.
// Write reservations: the shell appends |payload| bytes to |buf| after the header space.
// Read loans: bytes() are the payload - [off, buf.size()) of |buf|, or, for bytes that came
// over a stream carrier, [off, off + payload) of the shared receive chunk |shared|.
struct BufferLoan {
  std::vector<std::byte> buf;
  std::size_t off = 0;
  std::size_t payload = 0;
  std::shared_ptr<const std::vector<std::byte>> shared;

  [[nodiscard]] std::span<const std::byte> bytes() const {
    return shared ? std::span<const std::byte>(shared->data() + off, payload)
                  : std::span<const std::byte>(buf).subspan(off);
  }
};

// A gathered transmission for a stream carrier (FlowCore::poll_transmit_gather): write
// |pieces| in order. They point into |owned| (length prefixes, control frames) or straight into
// frames of the replay ledger, which the core keeps unchanged until transmit_done(path).
struct TxGather {
  std::vector<std::byte> owned;
  std::vector<std::span<const std::byte>> pieces;
  std::size_t bytes = 0;  // total of |pieces|
  void clear() {
    owned.clear();
    pieces.clear();
    bytes = 0;
  }
};

// Where a stream carrier should read next (FlowCore::recv_space): |space| lies in memory that
// |hold| keeps alive; keep |hold| until the read has completed.
struct RecvSpace {
  std::shared_ptr<void> hold;
  std::span<std::byte> space;
};

class FlowCore {
 public:
  // client creates the dialing side of flow |flow_id|. Fails with invalid_config.
  [[nodiscard]] static Result<FlowCore> client(const FlowConfig& cfg, const Id128& flow_id,
                                               const Id128& instance_id);
  // server creates the accepting side from the HELLO that arrived first on a fresh carrier;
  // that carrier becomes path 1 (ready) and the HELLO_ACK is queued on it. Fails with
  // invalid_config. The flow is a packet flow when |cfg.caps| has kCapsPacketMode (the listener
  // decides from the HELLO's caps which kind it accepts); the HELLO_ACK echoes that bit.
  [[nodiscard]] static Result<FlowCore> server(const FlowConfig& cfg, const Hello& hello,
                                               const Id128& instance_id,
                                               const PathOptions& first_path, TimePoint now);

  FlowCore(FlowCore&&) noexcept;
  FlowCore& operator=(FlowCore&&) noexcept;
  FlowCore(const FlowCore&) = delete;
  FlowCore& operator=(const FlowCore&) = delete;
  ~FlowCore();

  // --- paths ---
  // add_path (client) registers a freshly dialled carrier: the first one carries HELLO, later
  // ones BRIDGE_TAG once the handshake is done. Errors: wrong_side, too_many_paths, closed,
  // invalid_config (opts.max_frame smaller than the flow's frames).
  [[nodiscard]] Result<PathId> add_path(const PathOptions& opts, TimePoint now);
  // accept_bridge (server) attaches a carrier whose first frame was |tag|; queues BRIDGE_ACK(ok).
  // Errors (the shell answers with the matching BRIDGE_ACK code and closes the carrier):
  // flow_mismatch, instance_mismatch, too_many_paths, closed, wrong_side.
  [[nodiscard]] Result<PathId> accept_bridge(const BridgeTag& tag, const PathOptions& opts,
                                             TimePoint now);
  // accept_hello_again (server) attaches a carrier whose first frame repeats this flow's HELLO
  // from the same client instance: the client re-sent it on another carrier because the
  // HELLO_ACK was lost. Queues HELLO_ACK again. Errors: flow_mismatch (another flow or
  // instance: a real duplicate), wrong_mode, too_many_paths, closed, wrong_side.
  [[nodiscard]] Result<PathId> accept_hello_again(const Hello& hello, const PathOptions& opts,
                                                  TimePoint now);
  // on_receive feeds carrier bytes: any split for stream paths, exactly one frame per call for
  // datagram paths. Protocol problems never surface here: they drop the path (EvPathDown) or
  // end the flow (EvClosed). Errors: unknown_path only.
  [[nodiscard]] Status on_receive(PathId path, std::span<const std::byte> bytes, TimePoint now);
  // The same for stream paths without a copy: the shell reads into recv_space(path) and
  // reports how many bytes it got with on_received. DATA payloads stay where they were read
  // and are lent to the reader from there. recv_space of an unknown or datagram path is empty;
  // on_received errors: unknown_path, invalid_argument (more than the space, datagram path).
  [[nodiscard]] RecvSpace recv_space(PathId path);
  [[nodiscard]] Status on_received(PathId path, std::size_t n, TimePoint now);
  // release_recv_space lets go of |path|'s receive chunk when nothing in it is needed any more
  // (no partial frame, no payload lent out: a chunk still viewed is kept and filled further).
  // A shell calls it before waiting for a carrier that has nothing to read, so idle paths
  // hold no receive memory; the next recv_space takes a chunk from the cache. Returns whether
  // it let go.
  bool release_recv_space(PathId path);
  // path_failed reports a carrier error/EOF seen by the shell; the path is dropped and its
  // frames replayed elsewhere. Errors: unknown_path.
  [[nodiscard]] Status path_failed(PathId path, const Error& cause, TimePoint now);
  // remove_path fails over first when |path| is active, then drops it. Errors: unknown_path,
  // last_path.
  [[nodiscard]] Status remove_path(PathId path, TimePoint now);
  // migrate makes |path| active after replaying every unacknowledged frame on it.
  // Errors: unknown_path, not_ready (path not ready or flow not established).
  [[nodiscard]] Status migrate(PathId path, TimePoint now);
  [[nodiscard]] Status set_mode(Mode m);

  // --- carrier output ---
  // poll_transmit appends whole frames for |path| to |out| (with the u16 prefix on stream
  // paths; exactly one frame per call on datagram paths) while they fit in |max_bytes| and
  // returns how many bytes it appended (0: nothing to send / does not fit; pass at least
  // kMaxStreamFrame + 2 to always make progress). A path whose output is not taken for its
  // stall timeout is declared dead.
  std::size_t poll_transmit(PathId path, std::vector<std::byte>& out, std::size_t max_bytes,
                            TimePoint now);
  // poll_transmit_gather is poll_transmit for stream paths without copying DATA frames: it
  // appends to |out| (cleared first) and returns the bytes it holds. Ledger frames it points to
  // stay pinned - not recycled even when an ACK releases them - until transmit_done(path), which
  // the shell must call once its write of |out| completed or failed, also after the path died.
  std::size_t poll_transmit_gather(PathId path, TxGather& out, std::size_t max_bytes,
                                   TimePoint now);
  void transmit_done(PathId path);
  [[nodiscard]] bool wants_transmit(PathId path) const;
  [[nodiscard]] std::vector<PathId> path_ids() const;
  [[nodiscard]] std::optional<FlowEvent> poll_event();
  // has_events: poll_event would return one.
  [[nodiscard]] bool has_events() const;
  [[nodiscard]] std::optional<TimePoint> next_deadline() const;
  // next_deadline_why: next_deadline with the timer it belongs to (the shell counts deadlines
  // that were already past when it armed its timer, by kind).
  struct Deadline {
    TimePoint at{};
    DeadlineKind kind = DeadlineKind::probe;
  };
  [[nodiscard]] std::optional<Deadline> next_deadline_why() const;
  void on_timeout(TimePoint now);
  // on_timeout with what the shell knows about its own timing: |ctx.lateness| is how late its
  // thread ran this timer, |ctx.pending_input| (may be empty) reports the unread bytes waiting
  // on a path's carrier. A freshness window that ran out is then judged by judge_silence
  // (silence.hpp): unread input or a late thread postpone the verdict, at most to two windows.
  struct TimerContext {
    Duration lateness{0};
    std::function<std::size_t(PathId)> pending_input;
    // transport_ack: the path's transport view (empty: the carrier cannot tell), asked for a
    // stream path with our frames in flight and another path ready (ack_silence_min).
    std::function<std::optional<TransportAck>(PathId)> transport_ack;
  };
  void on_timeout(TimePoint now, const TimerContext& ctx);

  // --- application ---
  // write accepts up to |data.size()| bytes into the send window and returns how many it took
  // (0 = window full, wait for writable() > 0). Errors: not_ready (no path added yet), closed,
  // or the flow's close error.
  [[nodiscard]] Result<std::size_t> write(std::span<const std::byte> data, TimePoint now);
  // read copies delivered bytes; {0, false} = nothing yet; {0, true} = clean EOF. After a
  // non-clean end, buffered bytes are still returned, then the close error.
  [[nodiscard]] Result<ReadOutcome> read(std::span<std::byte> out, TimePoint now);
  // The same two calls in two steps each, for shells whose application threads should not copy
  // bulk data while holding the lock that the io thread needs (docs/engine.md):
  // reserve_write lends frame buffers for up to |n| bytes of window (0 = full; errors as
  // write()); the shell appends each loan's |payload| bytes, then commit_write publishes them
  // in order (SEQs are assigned there) and returns the bytes taken. One writer at a time.
  // read_loan hands over delivered buffers for up to |out.size()| bytes instead of copying
  // them: the shell copies |loans| in order to the start of |out|; a piece that did not fit
  // whole was already copied after them. recycle gives lent buffers back. One reader at a time.
  [[nodiscard]] Result<std::size_t> reserve_write(std::size_t n, std::vector<BufferLoan>& loans);
  [[nodiscard]] Result<std::size_t> commit_write(std::vector<BufferLoan>& loans, TimePoint now);
  [[nodiscard]] Result<ReadOutcome> read_loan(std::span<std::byte> out,
                                              std::vector<BufferLoan>& loans, TimePoint now);
  void recycle(std::vector<BufferLoan>& loans);
  // write_packet (packet flows) sends |packet| as one DATA frame: true = taken, false = window
  // full. Errors: packet_too_large (> max_payload), wrong_mode, and those of write().
  [[nodiscard]] Result<bool> write_packet(std::span<const std::byte> packet, TimePoint now);
  // read_packet (packet flows) moves the next packet into |out| (replacing its contents):
  // {size, false}, {0, false} = none yet, {0, true} = clean EOF. Packets come in arrival order,
  // each exactly once; an empty packet is {0, false} with packet_ready() having been true.
  // |output| is set when the read admitted frames the window held back (an ACK is due): only
  // then does the shell need to run its output.
  [[nodiscard]] Result<ReadOutcome> read_packet(std::vector<std::byte>& out, TimePoint now);
  [[nodiscard]] bool packet_ready() const;
  [[nodiscard]] bool packet_mode() const;
  [[nodiscard]] std::size_t readable() const;
  // writable: about how many bytes write() would take now (0 = window full).
  [[nodiscard]] std::size_t writable() const;
  // For a shell's waiters: read_ready = read() would return data, EOF or an error now;
  // write_ready(n) = a write would take |n| bytes (or fail) now; write_wake_bytes = how much
  // room a blocked writer should wait for (half the window: a writer woken for every frame
  // the carrier takes costs a context switch per frame).
  [[nodiscard]] bool read_ready() const;
  [[nodiscard]] bool write_ready(std::size_t want) const;
  [[nodiscard]] std::size_t write_wake_bytes() const;
  // close sends BYE(normal) and ends the flow once the peer acknowledged it (or after
  // min(budget, graceful_close_timeout): graceful_close_timeout). Idempotent.
  void close(TimePoint now);
  // shutdown_write ends this side's direction (a half-close, docs/wire.md "Half-close"): a
  // SHUTDOWN_WRITE takes the next SEQ after everything written, is replayed like data, and the
  // peer reads EOF after the last byte; reads here and the peer's writes go on. Later writes
  // fail with closed; close() still ends the whole flow. Idempotent. Errors: peer_unsupported
  // (the HELLO / HELLO_ACK did not negotiate caps bit 13: nothing is closed), not_ready (before
  // the handshake), closed (after close()), the flow's close error.
  [[nodiscard]] Status shutdown_write(TimePoint now);
  // refuse ends the flow as a refusal (docs/wire.md "Refusal"): a REFUSE with |code| and
  // |detail| (cut to 255 bytes) takes the next SEQ after everything written, and the flow ends
  // like close() once the peer acknowledged it (or after min(budget, graceful_close_timeout)).
  // A peer that did not negotiate caps bit 15 (or a flow before its handshake) gets
  // BYE(app_request) at once instead (its flow ends with peer_closed). No-op on a flow that is
  // already ending; the flow's close error is closed ("refused: <code>").
  [[nodiscard]] Status refuse(RefusalCode code, std::string_view detail, TimePoint now);
  // abort ends the flow at once with |why| as its close error (the application's next call
  // returns it): BYE(app_request) goes out on every ready path, best effort, then EvClosed.
  // The listener uses it to evict a half-open flow. No-op on a dead flow.
  void abort(Error why, TimePoint now);

  // --- observation ---
  [[nodiscard]] FlowState state() const;
  [[nodiscard]] Side side() const;
  [[nodiscard]] Mode mode() const;
  [[nodiscard]] PathId active_path() const;
  [[nodiscard]] const Id128& flow_id() const;
  [[nodiscard]] const std::optional<Error>& close_error() const;
  [[nodiscard]] FlowStats stats() const;
  // l3_identity: the client's configured identity; on the server the peer's, once its record
  // (SEQ 1) was admitted. l3_identity_pending (server): the HELLO_ACK negotiated the record,
  // it has not been admitted yet and the flow is alive (a listener holds such flows back from
  // accept()).
  [[nodiscard]] const std::optional<L3Identity>& l3_identity() const;
  [[nodiscard]] bool l3_identity_pending() const;

 private:
  struct Impl;
  explicit FlowCore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rendr::engine
