// SPDX-License-Identifier: Apache-2.0
// FlowDriver: construction, carrier attach, the service loop (pump_locked: core events,
// carrier output, timer, waiters), close / shutdown / eviction, migrate callbacks, stats.
// The other roles are in driver_carriers.cpp, driver_app.cpp and driver_dial.cpp.
#include "driver_internal.hpp"

#include <rendr/engine/core/frame_cache.hpp>

#include <asio/error.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <type_traits>
#include <utility>
#include <variant>

namespace rendr::detail {

// ---------------------------------------------------------------------------------------------
// FlowDriver

FlowDriver::FlowDriver(std::shared_ptr<IoRuntime> rt, engine::FlowCore owned_core,
                       std::shared_ptr<const DialContext> dial)
    : rt_(std::move(rt)),
      owned_core_(std::move(owned_core)),
      dial_(std::move(dial)),
      timer_(rt_->io()),
      drain_timer_(rt_->io()) {
  core_ = &*owned_core_;
}

FlowDriver::FlowDriver(std::shared_ptr<IoRuntime> rt, engine::FlowCore* table_core,
                       std::shared_ptr<void> listener, std::function<void()> on_finished)
    : rt_(std::move(rt)),
      core_(table_core),
      listener_(std::move(listener)),
      on_finished_(std::move(on_finished)),
      timer_(rt_->io()),
      drain_timer_(rt_->io()) {}

FlowDriver::~FlowDriver() {
  // A server flow's core lives in the listener's table: it may go only now that nothing can
  // touch it any more.
  if (on_finished_) {
    on_finished_();
  }
}

void FlowDriver::attach_stream_locked(PathId path, StreamCarrierPtr c, std::string transport,
                                      std::vector<std::byte> initial_input) {
  auto s = std::make_shared<Slot>();
  s->id = path;
  s->transport = std::move(transport);
  s->local = c->local();
  s->remote = c->remote();
  s->stream = std::move(c);
  s->initial = std::move(initial_input);
  slots_[path] = std::move(s);
  if (carriers_hook_) {
    carriers_hook_(slots_.size());
  }
  request_service_locked();
}

void FlowDriver::attach_packet_locked(PathId path, PacketCarrierPtr c, std::string transport) {
  auto s = std::make_shared<Slot>();
  s->id = path;
  s->transport = std::move(transport);
  s->local = c->local();
  s->remote = c->remote();
  s->packet = std::move(c);
  slots_[path] = std::move(s);
  if (carriers_hook_) {
    carriers_hook_(slots_.size());
  }
  request_service_locked();
}

void FlowDriver::request_service_locked() {
  if (service_posted_ || shut_) {
    return;
  }
  service_posted_ = true;
  asio::post(rt_->io(), [self = shared_from_this()] { self->service(); });
}

void FlowDriver::service() {
  const auto asked = Clock::now();
  std::unique_lock lk(mu);
  const auto began = begin_handler_locked(asked);
  service_posted_ = false;
  pump_locked();
  end_handler_locked(began);
  run_deferred(lk);
}

engine::TimePoint FlowDriver::begin_handler_locked(engine::TimePoint asked) {
  const auto now = Clock::now();
  timing_.record_lock_wait(now - asked);
  return now;
}

void FlowDriver::end_handler_locked(engine::TimePoint began) {
  timing_.record_handler(Clock::now() - began);
}

std::size_t FlowDriver::pending_input_locked(PathId path) const {
  auto it = slots_.find(path);
  if (it == slots_.end() || it->second->closed) {
    return 0;
  }
  const Slot& s = *it->second;
  return s.stream ? s.stream->pending_input() : s.packet->pending_input();
}

std::optional<engine::TransportAck> FlowDriver::transport_ack_locked(PathId path) const {
  auto it = slots_.find(path);
  if (it == slots_.end() || it->second->closed || !it->second->stream) {
    return std::nullopt;
  }
  return it->second->stream->transport_ack();
}

void FlowDriver::run_deferred(std::unique_lock<std::mutex>& lk) {
  if (deferred_.empty() && !wake_reader_ && !wake_writer_) {
    return;
  }
  auto d = std::move(deferred_);
  deferred_.clear();
  const bool reader = std::exchange(wake_reader_, false);
  const bool writer = std::exchange(wake_writer_, false);
  lk.unlock();
  // Woken after |mu| is released: a waiter woken under it would wake only to block on it.
  if (reader) {
    read_cv.notify_all();
  }
  if (writer) {
    write_cv.notify_all();
  }
  for (auto& f : d) {
    f();
  }
  // Destroyed unlocked too: a callback's captures may hold the last handle on this flow, and
  // the handle's destructor takes |mu| (an async_close's done that owns the Conn).
  d.clear();
  lk.lock();
}

void FlowDriver::pump_locked() {
  // Starting a carrier feeds the core the bytes read with its first frame, which can queue
  // events (junk after a HELLO kills the path): drain them in a second pass, or the dead path's
  // carrier would stay open until some later event (CLOSE-WAIT for the migration budget).
  bool hold_flush = false;
  for (int pass = 0; pass < 2; ++pass) {
    if (!pump_pass_locked(hold_flush)) {
      break;
    }
  }
  notify_locked();
}

bool FlowDriver::pump_pass_locked(bool& hold_flush) {
  bool started = false;
  while (auto ev = core_->poll_event()) {
    if (auto* down = std::get_if<engine::EvPathDown>(&*ev)) {
      if (auto it = slots_.find(down->path); it != slots_.end()) {
        close_slot_locked(it->second);
      }
      if (auto sp = path_specs_.find(down->path); sp != path_specs_.end()) {
        PathSpec spec = std::move(sp->second);
        path_specs_.erase(sp);
        if (dial_ && dial_->retry.enabled && redial_wanted_locked()) {
          schedule_redial_locked(spec);
        }
      }
    } else if (auto* mig = std::get_if<engine::EvMigrated>(&*ev)) {
      const MigrateEvent e{mig->from, mig->to, mig->cause};
      for (const auto& [id, cb] : migrate_cbs_) {
        deferred_.push_back([cb = cb, e] { cb(e); });
      }
    } else if (std::holds_alternative<engine::EvClosed>(*ev)) {
      closed_event_ = true;
    }
  }
  if (accept_gate_ && !core_->l3_identity_pending()) {
    refused_.store(!core_->l3_identity().has_value(), std::memory_order_release);
    held_.store(false, std::memory_order_release);
    auto released = std::move(accept_gate_);
    accept_gate_ = nullptr;
    released();
  }
  complete_async_locked();
  // A flow whose async dial completes now: its first transmit waits for a service posted after
  // the dialler's callback, which usually writes at once (rendr-tun: the app's first bytes,
  // waiting in lwIP) - the probe, its reply, the L3 record and those bytes then leave in one
  // carrier write instead of two.
  hold_flush = run_hooks_locked() || hold_flush;
  if (!shut_) {
    // Copy: flushing may close (erase) slots.
    std::vector<SlotPtr> live;
    live.reserve(slots_.size());
    for (auto& [id, s] : slots_) {
      live.push_back(s);
    }
    for (auto& s : live) {
      if (s->closed) {
        continue;
      }
      if (!s->started) {
        start_slot_locked(s);
        started = true;
      } else if (s->needs_read && !s->app_rx) {
        s->needs_read = false;  // the reader gave its input back: read it here again
        start_read_locked(s, false);
      }
      if (!s->closed && !hold_flush) {
        flush_locked(s);
      }
      if (closed_event_ && !s->closed && !s->writing) {
        close_slot_locked(s);
      }
    }
    if (closed_event_ && slots_.empty()) {
      // Nothing left to time: a pending wait would keep this driver (and a server flow's
      // table entry) alive until its deadline, up to the migration budget.
      timer_.cancel();
      armed_.reset();
    } else {
      arm_timer_locked();
    }
    if (hold_flush) {
      request_service_locked();
    }
  }
  return started;
}

void FlowDriver::notify_locked() {
  cv.notify_all();  // no syscall without waiters
  // The application's waiters are woken by run_deferred, which every pump_locked precedes.
  if (read_waiters_ > 0 && (shut_ || core_->read_ready())) {
    wake_reader_ = true;
  } else if (app_inside_ && (shut_ || core_->read_ready())) {
    wake_app_reader_locked();  // in poll on its carrier: another path delivered
  }
  if (write_waiters_ > 0 && (shut_ || core_->write_ready(write_want_))) {
    wake_writer_ = true;
  }
}

void FlowDriver::arm_timer_locked() {
  const auto why = core_->next_deadline_why();
  // Input the reader holds while it is away from read_some is looked at soon (direct receive).
  const auto app_check = app_input_check_locked();
  if (!why && !app_check) {
    return;
  }
  const bool core_due = why && (!app_check || why->at <= *app_check);
  // On a 1 ms grid (rounded up, never early): a re-arm costs a timerfd_settime, ~10 us on this
  // kind of VM, and deadlines that move by microseconds (a datagram flow's RTO head, one per
  // ACK) then share one arming; the quic carrier's timer uses the same grid, so a side's
  // timers due in one tick fire in one reactor wake-up.
  const engine::TimePoint next = round_up_to_tick(core_due ? why->at : *app_check);
  if (armed_ && *armed_ <= next) {
    return;
  }
  armed_ = next;
  // A deadline already past when armed is the core's, not the thread's lateness: the handler's
  // lateness is counted from the arming then (FlowStats timer_armed_late says how often, and
  // for which kind of deadline: on a lossy datagram path mostly the ledger head's RTO, overdue
  // the moment a cumulative ACK makes a frame sent long ago the head).
  const auto armed_at = Clock::now();
  if (core_due && next < armed_at) {
    timing_.record_armed_late(armed_at - next, why->kind);
  }
  timer_.expires_at(next);
  timer_.async_wait(
      [self = shared_from_this(), due = std::max(next, armed_at)](std::error_code ec) {
        if (ec == asio::error::operation_aborted) {
          return;
        }
        const auto asked = Clock::now();
        std::unique_lock lk(self->mu);
        if (self->shut_) {
          return;
        }
        const auto now = self->begin_handler_locked(asked);
        // Lateness counts up to the moment the handler holds the lock: a wait for an application
        // thread holding it delays the check just as much as the scheduler does.
        self->timing_.record_fire(due, now);
        if (self->armed_ && *self->armed_ <= now) {
          self->armed_.reset();
        }
        self->reclaim_idle_locked();
        if (auto d = self->core_->next_deadline(); d && *d <= now) {
          engine::FlowCore::TimerContext ctx;
          ctx.lateness = now > due ? now - due : engine::Duration::zero();
          ctx.pending_input = [raw = self.get()](PathId p) { return raw->pending_input_locked(p); };
          ctx.transport_ack = [raw = self.get()](PathId p) { return raw->transport_ack_locked(p); };
          self->core_->on_timeout(now, ctx);
        }
        engine::detail::FrameCache::instance().trim_if_idle(now);
        self->pump_locked();
        self->end_handler_locked(now);
        self->run_deferred(lk);
      });
}

void FlowDriver::begin_close_locked(const engine::Refusal* refusal) {
  if (user_closed_) {
    return;
  }
  user_closed_ = true;
  reclaim_input_locked();
  if (refusal) {
    (void)core_->refuse(refusal->code, refusal->detail, Clock::now());
  } else {
    core_->close(Clock::now());
  }
  request_service_locked();
}

Status FlowDriver::close(const engine::Refusal* refusal) {
  std::unique_lock lk(mu);
  begin_close_locked(refusal);
  if (rt_->io().get_executor().running_in_this_thread()) {
    // On the io thread (a handle dropped in an io handler): waiting here would wait for this
    // very thread. The flow closes as close_async's does - BYE, then the carriers go once it
    // ended - and this returns at once.
    if (!closed_hook_ && core_->state() != FlowState::dead && !shut_) {
      closed_hook_ = [](const Status&) {};
      request_service_locked();
      return {};
    }
    if (closed_hook_) {
      return {};  // close_async runs it
    }
  }
  // The core ends a closing flow after min(budget, graceful_close_timeout); the cap here only
  // guards against a shell that cannot run (no io thread).
  const auto cap = Clock::now() + std::chrono::seconds(100);
  while (core_->state() != FlowState::dead && Clock::now() < cap && !shut_) {
    cv.wait_until(lk, cap);
  }
  // The flow ended, but its last frames (the terminal ACK that ends the peer's close, our BYE)
  // may still wait for the io thread to hand them to a carrier: a program that exits right
  // after close() cut them, and its peer's close() timed out ("BYE not acknowledged", seen
  // under CPU load). Wait for them a little - not for a peer that stopped reading.
  const auto drain_by = Clock::now() + kCloseDrainWait;
  while (output_pending_locked() && Clock::now() < drain_by && !shut_) {
    cv.wait_until(lk, drain_by);
  }
  std::optional<Error> err = core_->close_error();
  lk.unlock();
  shutdown();
  if (err && err->code == make_error_code(engine::errc::graceful_close_timeout)) {
    return *err;
  }
  return {};
}

bool FlowDriver::output_pending_locked() const {
  for (const auto& [id, s] : slots_) {
    if (!s->closed && (s->writing || core_->wants_transmit(id))) {
      return true;
    }
  }
  return false;
}

void FlowDriver::shutdown() {
  std::unique_lock lk(mu);
  if (shut_) {
    return;
  }
  shut_ = true;
  cv.notify_all();
  wake_app_reader_locked();
  read_cv.notify_all();
  write_cv.notify_all();
  asio::post(rt_->io(), [self = shared_from_this()] {
    std::unique_lock l2(self->mu);
    std::vector<SlotPtr> all;
    for (auto& [id, s] : self->slots_) {
      all.push_back(s);
    }
    bool draining = false;
    for (auto& s : all) {
      // A flow that ended queued its last frames (BYE, the terminal ACK) behind a write still
      // in flight: closing now would cut them and leave the peer waiting out its budget.
      if (self->closed_event_ && s->writing && !s->closed) {
        draining = true;
        continue;
      }
      self->close_slot_locked(s);
    }
    self->timer_.cancel();
    if (draining) {
      self->drain_timer_.expires_after(kDrainCap);
      self->drain_timer_.async_wait([self](std::error_code ec) {
        if (ec == asio::error::operation_aborted) {
          return;
        }
        std::unique_lock l3(self->mu);
        std::vector<SlotPtr> left;
        for (auto& [id, s] : self->slots_) {
          left.push_back(s);
        }
        for (auto& s : left) {
          self->close_slot_locked(s);
        }
      });
    }
    std::vector<IoHandler> hs;
    if (self->pending_read_) {
      hs.push_back(std::move(self->pending_read_->h));
      self->pending_read_.reset();
    }
    if (self->pending_write_) {
      hs.push_back(std::move(self->pending_write_->h));
      self->pending_write_.reset();
    }
    self->run_hooks_locked();  // an on_settled / close_async waiter learns the flow is gone
    self->run_deferred(l2);
    l2.unlock();
    for (auto& h : hs) {
      h(make_error_code(engine::errc::closed), 0);
    }
  });
}

void FlowDriver::evict_locked(Error why) {
  if (!owned_core_) {
    owned_core_.emplace(std::move(*core_));  // a pimpl: the flow's state stays where it is
    core_ = &*owned_core_;
  }
  on_finished_ = nullptr;
  carriers_hook_ = nullptr;
  accept_gate_ = nullptr;
  if (shut_) {
    return;
  }
  core_->abort(std::move(why), Clock::now());
  request_service_locked();
}

void FlowDriver::hold_for_accept_locked(std::function<void()> released) {
  held_.store(true, std::memory_order_release);
  accept_gate_ = std::move(released);
}

void FlowDriver::set_carriers_hook(std::function<void(std::size_t)> hook) {
  std::unique_lock lk(mu);
  carriers_hook_ = std::move(hook);
}

void FlowDriver::kill_path(PathId path) {
  asio::post(rt_->io(), [self = shared_from_this(), path] {
    std::unique_lock lk(self->mu);
    if (self->shut_) {
      return;
    }
    if (auto it = self->slots_.find(path); it != self->slots_.end()) {
      auto s = it->second;
      self->carrier_failed_locked(s, std::make_error_code(std::errc::connection_reset),
                                  "killed for test");
    }
    self->pump_locked();
    self->run_deferred(lk);
  });
}

Status FlowDriver::rebind_path(PathId path, const std::string& local) {
  struct Wait {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    Status st;
  };
  auto w = std::make_shared<Wait>();
  asio::post(rt_->io(), [self = shared_from_this(), path, local, w] {
    Status st;
    {
      std::unique_lock lk(self->mu);
      auto it = self->slots_.find(path);
      if (self->shut_ || it == self->slots_.end() || it->second->closed) {
        st = engine::make_error(engine::errc::unknown_path,
                                "rebind_path: no carrier on path " + std::to_string(path));
      } else {
        auto s = it->second;
        st = s->stream ? s->stream->rebind(local) : s->packet->rebind(local);
        if (st) {
          s->local = s->stream ? s->stream->local() : s->packet->local();
        }
      }
      self->pump_locked();
      self->run_deferred(lk);
    }
    std::lock_guard lk(w->mu);
    w->st = std::move(st);
    w->done = true;
    w->cv.notify_all();
  });
  std::unique_lock lk(w->mu);
  w->cv.wait(lk, [&] { return w->done; });
  return std::move(w->st);
}

std::uint64_t FlowDriver::add_migrate_callback(MigrateCallback cb) {
  std::unique_lock lk(mu);
  const std::uint64_t id = next_cb_id_++;
  migrate_cbs_[id] = std::move(cb);
  return id;
}

void FlowDriver::remove_migrate_callback(std::uint64_t id) {
  std::unique_lock lk(mu);
  migrate_cbs_.erase(id);
}

engine::FlowStats FlowDriver::stats_locked() {
  engine::FlowStats s = core_->stats();
  s.path_redials = redials_;
  s.paths_later = later_paths_;
  s.direct_rx_bytes = direct_rx_bytes_;
  s.direct_handovers = direct_handovers_;
  s.direct_reclaims = direct_reclaims_;
  s.timer_fired = timing_.fired();
  s.timer_late_max = timing_.max_late();
  s.timer_late_hist = timing_.histogram();
  s.handler_max = timing_.max_handler();
  s.io_lock_wait_max = timing_.max_lock_wait();
  s.timer_armed_late = timing_.armed_late();
  s.timer_armed_late_max = timing_.max_armed_late();
  s.timer_armed_late_by_kind = timing_.armed_late_by_kind();
  s.timer_armed_late_max_by_kind = timing_.max_armed_late_by_kind();
  for (auto& p : s.paths) {
    if (auto it = slots_.find(p.id); it != slots_.end()) {
      p.transport = it->second->transport;
      p.local = it->second->local;
      p.remote = it->second->remote;
      if (p.transport == "quic") {
        // The accepting side of a quic path follows the client's rebinds (QUIC migration).
        const auto& sl = *it->second;
        p.remote = sl.stream ? sl.stream->remote() : sl.packet->remote();
      }
    }
  }
  return s;
}

}  // namespace rendr::detail
