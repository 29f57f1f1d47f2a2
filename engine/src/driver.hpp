// SPDX-License-Identifier: Apache-2.0
// The Asio shell around one FlowCore (docs/engine.md "What the shell must do").
//
// IoRuntime: an io_context and, unless the embedder brought one, the thread that runs it.
// FlowDriver: one flow's FlowCore plus its carriers, timer and application waiters. All state is
// guarded by |mu|; carrier and timer operations are issued only on the io thread (application
// threads change the core under the lock and post service()). Handlers hold a shared_ptr to
// the driver and to the carrier slot whose buffers they use (the reason for shared_ptr here:
// asynchronous operations outlive the caller's handle).
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/engine/carrier.hpp>
#include <rendr/engine/conn.hpp>
#include <rendr/engine/core/flow.hpp>
#include <rendr/engine/core/silence.hpp>
#include <rendr/engine/dialer.hpp>

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace rendr::detail {

class IoRuntime {
 public:
  // owned starts a thread running a fresh io_context; external wraps the caller's.
  [[nodiscard]] static std::shared_ptr<IoRuntime> owned(std::string name);
  [[nodiscard]] static std::shared_ptr<IoRuntime> external(asio::io_context& io);
  ~IoRuntime();
  IoRuntime(const IoRuntime&) = delete;
  IoRuntime& operator=(const IoRuntime&) = delete;
  asio::io_context& io() { return *io_; }

 private:
  IoRuntime() = default;
  std::shared_ptr<asio::io_context> io_shared_;  // co-owned by the thread
  asio::io_context* io_ = nullptr;
  std::unique_ptr<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread thread_;
};

// Dialing context a client flow keeps for add_path.
struct DialContext {
  std::map<std::string, StreamFactory> stream_factories;
  std::map<std::string, PacketFactory> packet_factories;
  RetryPolicy retry;
};

// RetryQueue: a client flow's paths waiting to be dialled in the background (deferred paths,
// re-dials), one at a time, on the io thread: a timer for each wait, async_dial_carrier for the
// attempt, the path's BRIDGE_ACK watched by run_hooks_locked. Guarded by the flow's mu.
struct RetryQueue {
  explicit RetryQueue(asio::io_context& io) : timer(io) {}
  struct Pending {
    PathSpec spec;
    std::chrono::milliseconds wait{};  // before this attempt
    bool retry = true;                 // dial again (backing off) when the attempt fails
    bool later = false;                // a path dial deferred at dial time, not a re-dial
  };
  std::deque<Pending> pending;
  std::optional<Pending> current;  // waiting, dialling, or attached and waiting for BRIDGE_ACK
  bool waiting = false;            // current's timer runs
  bool hurry = false;              // dial the deferred paths now (DialOptions::later_paths_bytes)
  std::optional<engine::PathId> attached;  // current's path, until it is ready or gone
  Deadline attempt_deadline{};
  std::uint64_t gen = 0;  // each timer wait's generation: a cancelled, replaced one is ignored
  asio::steady_timer timer;
};

// Dial |spec| through |ctx| (built-ins first). Returns the carrier in one of two slots.
struct DialedCarrier {
  StreamCarrierPtr stream;
  PacketCarrierPtr packet;
};
[[nodiscard]] Result<DialedCarrier> dial_carrier(const DialContext& ctx, asio::io_context& io,
                                                 const PathSpec& spec, Deadline deadline);
// async_dial_carrier: the same without blocking. tcp connects through |io|'s reactor; other
// transports (blocking factories) dial on a thread of their own. |done| runs once, on |io|'s
// thread.
void async_dial_carrier(std::shared_ptr<const DialContext> ctx, asio::io_context& io,
                        const PathSpec& spec, Deadline deadline,
                        std::function<void(Result<DialedCarrier>)> done);

class FlowDriver : public std::enable_shared_from_this<FlowDriver> {
 public:
  // client: owns |core|. server: |core| lives in the listener's BridgeTable, |listener| keeps it
  // alive and |on_finished| (run by the destructor, on any thread) arranges its removal.
  FlowDriver(std::shared_ptr<IoRuntime> rt, engine::FlowCore owned_core,
             std::shared_ptr<const DialContext> dial);
  FlowDriver(std::shared_ptr<IoRuntime> rt, engine::FlowCore* table_core,
             std::shared_ptr<void> listener, std::function<void()> on_finished);
  ~FlowDriver();

  std::mutex mu;
  std::condition_variable cv;  // state changes (handshake, paths, close): any waiter
  // Application readers and writers wait on their own variables and are woken only when the
  // call they wait in can make progress (a writer for half a window, not for every frame).
  std::condition_variable read_cv;
  std::condition_variable write_cv;

  // --- io thread or under mu ---
  engine::FlowCore& core() { return *core_; }
  // attach_*_locked registers a carrier for |path| (mu held); service() starts its I/O.
  void attach_stream_locked(engine::PathId path, StreamCarrierPtr c, std::string transport,
                            std::vector<std::byte> initial_input);
  void attach_packet_locked(engine::PathId path, PacketCarrierPtr c, std::string transport);
  // request_service_locked posts one service() to the io thread (coalesced; mu held).
  void request_service_locked();
  // pump_locked: the post-processing after any core call on the io thread (events, carrier
  // output, timer, waiters). Deferred callbacks, and the wake-up of waiting readers and
  // writers, are run by run_deferred after unlocking: every pump_locked is followed by one.
  void pump_locked();
  void run_deferred(std::unique_lock<std::mutex>& lk);

  // --- application side (any thread except io) ---
  [[nodiscard]] Result<std::size_t> read_some(std::span<std::byte> buf, Deadline d);
  [[nodiscard]] Result<std::size_t> write_some(std::span<const std::byte> data, Deadline d);
  [[nodiscard]] Status write_packet(std::span<const std::byte> p, Deadline d);
  [[nodiscard]] Result<bool> read_packet(std::vector<std::byte>& out, Deadline d);
  [[nodiscard]] Result<engine::PathId> add_path(const PathSpec& spec, Deadline d);
  // note_path_locked remembers which spec |path| was dialled from (for the re-dial);
  // forget_path_locked stops its re-dial (remove_path). schedule_redial queues |spec|.
  void note_path_locked(engine::PathId path, const PathSpec& spec);
  void forget_path_locked(engine::PathId path);
  void schedule_redial_locked(const PathSpec& spec);
  // schedule_later_locked queues |spec|, dialled for the first time after |wait| (a path
  // DialOptions::later_paths_after deferred); retried like a re-dial only when |retry|.
  void schedule_later_locked(const PathSpec& spec, std::chrono::milliseconds wait, bool retry);
  void enqueue_dial_locked(RetryQueue::Pending p);
  // The retry queue's steps (io thread, mu held): start the next wait, dial when it ends, attach
  // what was dialled, and end the attempt (|ok|: the path is ready).
  void next_dial_locked();
  void retry_timer_fired(std::uint64_t gen);
  void retry_dialled(std::uint64_t gen, Result<DialedCarrier> c);
  void check_retry_locked();  // the attached path ready, gone, or out of time
  void retry_attempt_done_locked(bool ok);
  // attach_dialled_locked adds |c| as a new path dialled from |spec| (BRIDGE_TAG follows).
  [[nodiscard]] Result<engine::PathId> attach_dialled_locked(const PathSpec& spec,
                                                             DialedCarrier c);
  // arm_later_locked: the deferred paths are also dialled once the application moved |bytes|
  // (read + written; DialOptions::later_paths_bytes, 0 = time only).
  void arm_later_locked(std::uint64_t bytes);
  // note_moved_locked counts |n| application bytes towards that and wakes the queue once.
  void note_moved_locked(std::size_t n) {
    if (later_left_ > 0) {
      later_left_ = n >= later_left_ ? 0 : later_left_ - n;
      if (later_left_ == 0) {
        hurry_later_locked();
      }
    }
  }
  void hurry_later_locked();
  // redial_wanted_locked: the flow still wants its paths back (not shut down, closed or dead).
  [[nodiscard]] bool redial_wanted_locked() const;
  // begin_close_locked starts close / close_async once: BYE(normal), or a REFUSE when
  // |refusal| is set.
  void begin_close_locked(const engine::Refusal* refusal);
  // close ends the flow with BYE(normal), or with a REFUSE when |refusal| is set, and waits.
  [[nodiscard]] Status close(const engine::Refusal* refusal = nullptr);
  // shutdown closes carriers and the timer (io thread, posted); idempotent. A carrier with a
  // write in flight on a flow that ended is closed once that write and the flow's last frames
  // (its BYE, the terminal ACK) are out, or after kDrainCap.
  void shutdown();
  // evict_locked (server flows, io thread): the flow leaves the listener's table - the driver
  // owns its core from now on, no longer reports carriers nor asks for its removal - and ends
  // with |why| (FlowCore::abort: BYE, then its carriers close). The caller then removes the
  // (moved-from) table entry.
  void evict_locked(Error why);
  // set_carriers_hook: |hook| runs (mu held, io thread) with the number of carriers whenever
  // one is attached or closed (the listener's admission control counts them).
  void set_carriers_hook(std::function<void(std::size_t)> hook);
  // hold_for_accept_locked (server flows, mu held): the flow's L3 identity record is pending
  // (FlowCore::l3_identity_pending), so the listener keeps it from accept() until the core
  // admitted it or the flow died; then |released| runs (mu held, io thread). accept_held /
  // accept_refused may be read without mu (refused: it died before its record was admitted).
  void hold_for_accept_locked(std::function<void()> released);
  [[nodiscard]] bool accept_held() const { return held_.load(std::memory_order_acquire); }
  [[nodiscard]] bool accept_refused() const { return refused_.load(std::memory_order_acquire); }
  void kill_path(engine::PathId path);
  // rebind_path moves |path|'s carrier to |local| in place (Admin::rebind_path); blocks the
  // calling thread (never the io thread) until the io thread did it.
  [[nodiscard]] Status rebind_path(engine::PathId path, const std::string& local);
  std::uint64_t add_migrate_callback(MigrateCallback cb);
  void remove_migrate_callback(std::uint64_t id);
  [[nodiscard]] engine::FlowStats stats_locked();
  // dial helpers: wait for the handshake and the dialled paths.
  [[nodiscard]] Status wait_established(Deadline d);
  // on_settled_locked (mu held): |done| runs once, on the io thread, with what
  // wait_established(|d|) would return, as soon as that is known (Dialer::async_dial).
  void on_settled_locked(Deadline d, std::function<void(Status)> done);
  // close_async: close(|refusal|) without waiting; |done| runs once on the io thread with what
  // close() would return, after the flow ended and was shut down (Admin::async_close).
  void close_async(const engine::Refusal* refusal, std::function<void(Status)> done);
  void start_async_read(std::span<std::byte> buf, IoHandler h);
  void start_async_write(std::span<const std::byte> buf, IoHandler h);
  void cancel_async();

  asio::io_context& io() { return rt_->io(); }
  [[nodiscard]] std::size_t max_payload() const { return max_payload_; }
  void set_max_payload(std::size_t n) { max_payload_ = n; }
  [[nodiscard]] bool is_client() const { return dial_ != nullptr; }

 private:
  // An idle stream carrier's next read goes into a buffer of this size in its slot (frames of
  // an interactive or short flow fit; a full one is followed by a read into the chunk).
  static constexpr std::size_t kIdleRead = 1024;
  struct Slot {
    engine::PathId id = 0;
    std::string transport;
    StreamCarrierPtr stream;
    PacketCarrierPtr packet;
    bool started = false;
    bool closed = false;
    bool writing = false;  // stream: async_write pending; packet: waiting for writable
    std::vector<std::byte> out;  // datagram: the frame being sent
    engine::TxGather gather;     // stream: the write in flight
    std::vector<std::byte> initial;
    std::string local;
    std::string remote;
    // Direct receive (driver_direct.cpp): the application's reader owns this carrier's input
    // (app_rx) and may be in recv/poll on its fd without |mu| (app_busy); a carrier closed
    // meanwhile is closed by the io thread once the reader is out (close_deferred).
    bool app_rx = false;
    bool app_busy = false;
    bool close_deferred = false;
    bool direct = false;      // set_input_watch(false) in force
    int app_fd = -1;          // the carrier's direct_read_fd
    std::size_t app_last = 0;  // the reader's last recv
    bool app_lowat = false;    // SO_RCVLOWAT raised for bulk input
    bool needs_read = false;  // given back by the reader: the io thread reads it again
    bool no_offer = false;    // the reader saw it end or fail: the io thread fails it
    // stream: an idle carrier's next input (start_read_locked), copied into the core.
    std::array<std::byte, kIdleRead> idle_in;
  };
  using SlotPtr = std::shared_ptr<Slot>;

  void service();  // io thread: lock, pump, run deferred
  // pump_pass_locked: true when it started a carrier (its input may queue events);
  // |hold_flush| is set once an async dial's callback was queued (no flush until it ran).
  bool pump_pass_locked(bool& hold_flush);
  // output_pending_locked: a live carrier is writing, or the core has frames for one.
  [[nodiscard]] bool output_pending_locked() const;
  void start_slot_locked(const SlotPtr& s);
  void start_read_locked(const SlotPtr& s, bool drained);
  // read_done: what every stream read's completion does around |fed| (which feeds the core
  // what was read, with the handler's start time): the lock, the closed check, handler
  // timing, a failed read, then the pump (driver_carriers.cpp; io thread).
  template <typename Fed>
  void read_done(const SlotPtr& s, std::error_code ec, Fed&& fed);
  void flush_locked(const SlotPtr& s);
  void close_slot_locked(const SlotPtr& s);
  void drain_locked(const SlotPtr& s);  // after shutdown(): flush once more, close when idle
  void carrier_failed_locked(const SlotPtr& s, std::error_code ec, const char* what);
  void arm_timer_locked();
  // Io-thread timing (FlowStats timer_*, handler_max, io_lock_wait_max): a handler calls
  // begin_handler_locked once it holds mu (|asked|: when it asked for mu) and
  // end_handler_locked(<what begin returned>) when its work under mu is done.
  engine::TimePoint begin_handler_locked(engine::TimePoint asked);
  void end_handler_locked(engine::TimePoint began);
  // pending_input_locked: unread bytes on |path|'s carrier (the silence check asks).
  std::size_t pending_input_locked(engine::PathId path) const;
  // transport_ack_locked: |path|'s transport view (the transport-silence check asks).
  std::optional<engine::TransportAck> transport_ack_locked(engine::PathId path) const;
  void complete_async_locked();
  bool path_settled_locked(engine::PathId id) const;
  // settled_status_locked: wait_established's answer now, or nothing while it must wait.
  [[nodiscard]] std::optional<Status> settled_status_locked(Deadline d);
  // run_hooks_locked: the on_settled / close_async callbacks whose moment came (deferred).
  // True when it queued an on_settled callback for an established flow.
  bool run_hooks_locked();

  // --- direct receive (driver_direct.cpp) ---
  // offer_to_app_locked (io thread, after a bulk read of |s|, instead of starting the next):
  // hands |s|'s input to a reader inside read_some when it can take it; true when it did.
  bool offer_to_app_locked(const SlotPtr& s);
  // app_slot_locked: the slot whose input the reader owns (null when none).
  [[nodiscard]] SlotPtr app_slot_locked() const;
  // app_receive_locked (reader thread, read_mu_ and mu held): one recv from |s|, or a poll
  // until it or the io thread has something; false once |d| passed.
  bool app_receive_locked(std::unique_lock<std::mutex>& lk, const SlotPtr& s, Deadline d);
  // return_input_locked: the io thread reads |s| again (the reader gave it back or it is taken).
  void return_input_locked(const SlotPtr& s);
  // end_direct_locked (io thread): |s| goes back into the io thread's reactor (SO_RCVLOWAT
  // back to 1, set_input_watch(true)).
  void end_direct_locked(const SlotPtr& s);
  // reclaim_input_locked (any thread): input the reader owns but is not receiving goes back to
  // the io thread now; a reader in poll is told to give it back.
  void reclaim_input_locked();
  // reclaim_idle_locked (io thread, timer): the same when the reader has left read_some.
  void reclaim_idle_locked();
  void wake_app_reader_locked();
  // leave_read_locked (read_some, on every return): the reader is out; input it still holds
  // is looked at by the io thread's timer soon, which needs a service when nothing is armed
  // that soon.
  void leave_read_locked();
  // app_input_check_locked: how soon the io thread must look at input the reader holds.
  [[nodiscard]] std::optional<engine::TimePoint> app_input_check_locked() const;

  std::shared_ptr<IoRuntime> rt_;
  std::size_t max_payload_ = engine::kMaxPayload;
  std::optional<engine::FlowCore> owned_core_;
  engine::FlowCore* core_ = nullptr;
  std::shared_ptr<const DialContext> dial_;
  std::shared_ptr<void> listener_;
  std::function<void()> on_finished_;
  std::function<void(std::size_t)> carriers_hook_;
  std::function<void()> accept_gate_;
  std::function<void(Status)> settled_hook_;  // on_settled_locked
  Deadline settled_by_{};
  std::unique_ptr<asio::steady_timer> settle_timer_;
  std::function<void(Status)> closed_hook_;  // close_async
  std::atomic<bool> held_{false};
  std::atomic<bool> refused_{false};

  std::map<engine::PathId, SlotPtr> slots_;
  std::map<engine::PathId, PathSpec> path_specs_;  // client: what each path was dialled from
  std::unique_ptr<RetryQueue> retry_;              // created on the first re-dial
  std::uint64_t redials_ = 0;                      // paths brought back by the re-dial
  std::uint64_t later_paths_ = 0;                  // deferred paths added (later_paths_after)
  std::uint64_t later_left_ = 0;  // application bytes until the deferred paths are dialled
  asio::steady_timer timer_;
  asio::steady_timer drain_timer_;  // bounds the final flush after shutdown()
  std::optional<engine::TimePoint> armed_;
  engine::TimerLateness timing_;
  bool service_posted_ = false;
  bool wake_reader_ = false;  // notify_locked: read_cv / write_cv to notify once mu is released
  bool wake_writer_ = false;
  bool closed_event_ = false;  // EvClosed seen: flush once more, then close carriers
  bool shut_ = false;
  bool user_closed_ = false;
  std::vector<std::function<void()>> deferred_;
  std::map<std::uint64_t, MigrateCallback> migrate_cbs_;
  std::uint64_t next_cb_id_ = 1;

  struct PendingRead {
    std::span<std::byte> buf;
    IoHandler h;
  };
  struct PendingWrite {
    std::span<const std::byte> buf;
    IoHandler h;
  };
  void notify_locked();
  std::mutex read_mu_;   // one application reader at a time (taken before mu)
  std::mutex write_mu_;  // one application writer at a time (taken before mu)
  std::vector<engine::BufferLoan> read_loans_;   // guarded by read_mu_
  std::vector<engine::BufferLoan> write_loans_;  // guarded by write_mu_
  bool wait_locked(std::unique_lock<std::mutex>& lk, std::condition_variable& v, int& waiters,
                   Deadline d);
  bool wait_writable_locked(std::unique_lock<std::mutex>& lk, std::size_t want, Deadline d);
  int read_waiters_ = 0;
  int write_waiters_ = 0;
  std::size_t write_want_ = 0;  // smallest room a waiting writer wants
  std::optional<PendingRead> pending_read_;
  std::optional<PendingWrite> pending_write_;
  // Direct receive state (guarded by mu).
  bool app_inside_ = false;     // the reader is inside read_some (it takes bulk input offered)
  bool app_reclaim_ = false;    // the io thread wants the input back
  bool app_woken_ = false;      // app_wake_ was signalled and not yet drained
  UniqueFd app_wake_;           // eventfd: wakes the reader out of its poll
  std::uint64_t direct_rx_bytes_ = 0;
  std::uint64_t direct_handovers_ = 0;
  std::uint64_t direct_reclaims_ = 0;
};

}  // namespace rendr::detail
