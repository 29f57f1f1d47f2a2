// SPDX-License-Identifier: Apache-2.0
#include "driver.hpp"
#include "frame_cache.hpp"

#include <rendr/engine/errors.hpp>

#include <asio/error.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>

#include <pthread.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <utility>
#include <variant>

namespace rendr::detail {

namespace {

using engine::Clock;
using engine::FlowState;
using engine::PathId;

// Output chunk per stream write: large enough for throughput, small enough that the stall
// detector sees a blocked carrier (a write only completes when the socket took it).
constexpr std::size_t kStreamChunk = 128 * 1024;
constexpr std::size_t kStreamRoom = kStreamChunk + engine::kMaxStreamFrame + 2;
constexpr int kDatagramBurst = 256;
// A write_some publishes at most this much at once (its copy runs before the io thread may
// send any of it).
constexpr std::size_t kAppSlice = 256 * 1024;

bool would_block(std::error_code ec) {
  return ec == std::errc::operation_would_block || ec == std::errc::resource_unavailable_try_again;
}

Error timed_out(const char* what) { return make_error(std::errc::timed_out, what); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// IoRuntime

std::shared_ptr<IoRuntime> IoRuntime::owned(std::string name) {
  std::shared_ptr<IoRuntime> rt(new IoRuntime());
  auto io = std::make_shared<asio::io_context>(1);
  rt->io_shared_ = io;
  rt->io_ = io.get();
  rt->work_ = std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(
      io->get_executor());
  rt->thread_ = std::thread([io, name = std::move(name)] {
    // Named so operators can tell rendr's io threads apart in top -H, perf and /proc (the
    // kernel keeps 15 characters).
    (void)::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str());
    io->run();
  });
  return rt;
}

std::shared_ptr<IoRuntime> IoRuntime::external(asio::io_context& io) {
  std::shared_ptr<IoRuntime> rt(new IoRuntime());
  rt->io_ = &io;
  return rt;
}

IoRuntime::~IoRuntime() {
  if (!thread_.joinable()) {
    return;
  }
  work_.reset();
  io_->stop();
  // The last owner may be a handler running on the io thread itself: then the thread finishes
  // the handler, returns from run() and destroys the io_context it co-owns.
  if (thread_.get_id() == std::this_thread::get_id()) {
    thread_.detach();
  } else {
    thread_.join();
  }
}

// ---------------------------------------------------------------------------------------------
// dialing

Result<DialedCarrier> dial_carrier(const DialContext& ctx, asio::io_context& io,
                                   const PathSpec& spec, Deadline deadline) {
  DialedCarrier out;
  if (spec.transport == "tcp") {
    auto c = dial_tcp(io, spec, deadline);
    if (!c) {
      return std::move(c).take_error();
    }
    out.stream = std::move(*c);
    return out;
  }
  if (spec.transport == "udpflow") {
    auto c = dial_udpflow(io, spec, deadline);
    if (!c) {
      return std::move(c).take_error();
    }
    out.packet = std::move(*c);
    return out;
  }
  if (auto it = ctx.stream_factories.find(spec.transport); it != ctx.stream_factories.end()) {
    auto c = it->second(io, spec, deadline);
    if (!c) {
      return std::move(c).take_error().with_context("dial " + spec.transport);
    }
    out.stream = std::move(*c);
    return out;
  }
  if (auto it = ctx.packet_factories.find(spec.transport); it != ctx.packet_factories.end()) {
    auto c = it->second(io, spec, deadline);
    if (!c) {
      return std::move(c).take_error().with_context("dial " + spec.transport);
    }
    out.packet = std::move(*c);
    return out;
  }
  if (spec.transport == "quic") {
    return make_error(std::errc::not_supported,
                      "transport quic: not built (register a factory named \"quic\")");
  }
  return make_error(std::errc::not_supported, "unknown transport \"" + spec.transport + "\"");
}

// ---------------------------------------------------------------------------------------------
// FlowDriver

FlowDriver::FlowDriver(std::shared_ptr<IoRuntime> rt, engine::FlowCore owned_core,
                       std::shared_ptr<const DialContext> dial)
    : rt_(std::move(rt)),
      owned_core_(std::move(owned_core)),
      dial_(std::move(dial)),
      timer_(rt_->io()) {
  core_ = &*owned_core_;
}

FlowDriver::FlowDriver(std::shared_ptr<IoRuntime> rt, engine::FlowCore* table_core,
                       std::shared_ptr<void> listener, std::function<void()> on_finished)
    : rt_(std::move(rt)),
      core_(table_core),
      listener_(std::move(listener)),
      on_finished_(std::move(on_finished)),
      timer_(rt_->io()) {}

FlowDriver::~FlowDriver() {
  if (retry_) {
    std::lock_guard rl(retry_->mu);
    retry_->stop = true;
    retry_->cv.notify_all();
  }
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
  std::unique_lock lk(mu);
  service_posted_ = false;
  pump_locked();
  run_deferred(lk);
}

void FlowDriver::run_deferred(std::unique_lock<std::mutex>& lk) {
  if (deferred_.empty()) {
    return;
  }
  auto d = std::move(deferred_);
  deferred_.clear();
  lk.unlock();
  for (auto& f : d) {
    f();
  }
  lk.lock();
}

void FlowDriver::pump_locked() {
  // Starting a carrier feeds the core the bytes read with its first frame, which can queue
  // events (junk after a HELLO kills the path): drain them in a second pass, or the dead path's
  // carrier would stay open until some later event (CLOSE-WAIT for the migration budget).
  for (int pass = 0; pass < 2; ++pass) {
    if (!pump_pass_locked()) {
      break;
    }
  }
  notify_locked();
}

bool FlowDriver::pump_pass_locked() {
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
  complete_async_locked();
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
      }
      if (!s->closed) {
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
  }
  return started;
}

void FlowDriver::notify_locked() {
  cv.notify_all();  // no syscall without waiters
  if (read_waiters_ > 0 && (shut_ || core_->read_ready())) {
    read_cv.notify_all();
  }
  if (write_waiters_ > 0 && (shut_ || core_->write_ready(write_want_))) {
    write_cv.notify_all();
  }
}

void FlowDriver::start_slot_locked(const SlotPtr& s) {
  s->started = true;
  const auto now = Clock::now();
  if (s->stream) {
    if (!s->initial.empty()) {
      (void)core_->on_receive(s->id, s->initial, now);
      s->initial.clear();
      s->initial.shrink_to_fit();
    }
    start_read_locked(s, true);
    return;
  }
  std::weak_ptr<FlowDriver> weak = weak_from_this();
  std::weak_ptr<Slot> ws = s;
  s->packet->start(
      [weak, ws](std::span<const std::byte> frame) {
        auto self = weak.lock();
        auto slot = ws.lock();
        if (!self || !slot) {
          return;
        }
        std::unique_lock lk(self->mu);
        if (slot->closed) {
          return;
        }
        (void)self->core_->on_receive(slot->id, frame, Clock::now());
        self->pump_locked();
        self->run_deferred(lk);
      },
      [weak, ws](std::error_code ec) {
        auto self = weak.lock();
        auto slot = ws.lock();
        if (!self || !slot) {
          return;
        }
        std::unique_lock lk(self->mu);
        self->carrier_failed_locked(slot, ec, "udp carrier");
        self->pump_locked();
        self->run_deferred(lk);
      });
}

void FlowDriver::start_read_locked(const SlotPtr& s, bool drained) {
  // A carrier that had nothing more to read (its last read did not fill the space) waits for
  // readability without a receive chunk: an idle path (a probe a second) holds no receive
  // memory between reads; 5 000 idle flows held 16 KiB each.
  if (drained && s->stream->can_wait_readable()) {
    (void)core_->release_recv_space(s->id);
    s->stream->async_wait_readable([self = shared_from_this(), s](std::error_code ec) {
      std::unique_lock lk(self->mu);
      if (s->closed) {
        return;
      }
      if (ec) {
        self->carrier_failed_locked(s, ec, "stream carrier wait");
      } else if (!self->shut_) {
        self->start_read_locked(s, false);
      }
      self->pump_locked();
      self->run_deferred(lk);
    });
    return;
  }
  // The carrier reads straight into the core's receive chunk: DATA payloads stay where the
  // kernel put them (no copy) and are lent to the reader from there.
  auto sp = core_->recv_space(s->id);
  if (sp.space.empty()) {
    return;  // the path is gone (or failed): nothing more to read
  }
  const std::size_t room = sp.space.size();
  s->stream->async_read_some(
      sp.space, [self = shared_from_this(), s, room, hold = std::move(sp.hold)](
                    std::error_code ec, std::size_t n) mutable {
        std::unique_lock lk(self->mu);
        if (s->closed) {
          return;
        }
        if (ec) {
          self->carrier_failed_locked(s, ec, "stream carrier read");
        } else {
          hold.reset();  // the core holds the chunk; a chunk nobody views can start over
          (void)self->core_->on_received(s->id, n, Clock::now());
          if (!s->closed && !self->shut_) {
            self->start_read_locked(s, n < room);
          }
        }
        self->pump_locked();
        self->run_deferred(lk);
      });
}

void FlowDriver::flush_locked(const SlotPtr& s) {
  if (s->writing || s->closed) {
    return;
  }
  const auto now = Clock::now();
  if (s->stream) {
    // Gathered: DATA frames go to the carrier straight from the ledger (writev), pinned there
    // until the write completes (transmit_done), even if an ACK releases them meanwhile.
    if (core_->poll_transmit_gather(s->id, s->gather, kStreamRoom, now) == 0) {
      return;
    }
    s->writing = true;
    s->stream->async_write_gather(s->gather.pieces,
                           [self = shared_from_this(), s](std::error_code ec, std::size_t) {
                             std::unique_lock lk(self->mu);
                             s->writing = false;
                             self->core_->transmit_done(s->id);
                             if (s->closed) {
                               return;
                             }
                             if (ec) {
                               self->carrier_failed_locked(s, ec, "stream carrier write");
                             }
                             self->pump_locked();
                             self->run_deferred(lk);
                           });
    return;
  }
  const std::size_t max_frame = s->packet->max_frame();
  for (int i = 0; i < kDatagramBurst; ++i) {
    if (s->out.empty() && core_->poll_transmit(s->id, s->out, max_frame, now) == 0) {
      return;
    }
    const std::error_code ec = s->packet->send(s->out);
    if (would_block(ec)) {
      s->writing = true;
      s->packet->async_wait_writable([self = shared_from_this(), s](std::error_code wec) {
        std::unique_lock lk(self->mu);
        s->writing = false;
        if (s->closed) {
          return;
        }
        if (wec) {
          self->carrier_failed_locked(s, wec, "udp carrier wait");
        }
        self->pump_locked();
        self->run_deferred(lk);
      });
      return;
    }
    if (ec) {
      carrier_failed_locked(s, ec, "udp carrier send");
      return;
    }
    s->out.clear();
  }
  if (core_->wants_transmit(s->id)) {
    request_service_locked();  // let other paths and flows run between bursts
  }
}

void FlowDriver::close_slot_locked(const SlotPtr& s) {
  if (s->closed) {
    return;
  }
  s->closed = true;
  if (s->stream) {
    s->stream->close();
  }
  if (s->packet) {
    s->packet->close();
  }
  slots_.erase(s->id);
  if (carriers_hook_) {
    carriers_hook_(slots_.size());
  }
}

void FlowDriver::carrier_failed_locked(const SlotPtr& s, std::error_code ec, const char* what) {
  if (s->closed) {
    return;
  }
  close_slot_locked(s);
  if (ec == asio::error::eof) {
    // A carrier that ends is a dead path, not the end of the flow (transport errors never look
    // like EOF): report it as a reset.
    ec = std::make_error_code(std::errc::connection_reset);
  }
  (void)core_->path_failed(s->id, Error{ec, what}, Clock::now());
}

void FlowDriver::arm_timer_locked() {
  const auto next = core_->next_deadline();
  if (!next) {
    return;
  }
  if (armed_ && *armed_ <= *next) {
    return;
  }
  armed_ = *next;
  timer_.expires_at(*next);
  timer_.async_wait([self = shared_from_this()](std::error_code ec) {
    if (ec == asio::error::operation_aborted) {
      return;
    }
    std::unique_lock lk(self->mu);
    if (self->shut_) {
      return;
    }
    const auto now = Clock::now();
    if (self->armed_ && *self->armed_ <= now) {
      self->armed_.reset();
    }
    if (auto d = self->core_->next_deadline(); d && *d <= now) {
      self->core_->on_timeout(now);
    }
    engine::detail::FrameCache::instance().trim_if_idle(now);
    self->pump_locked();
    self->run_deferred(lk);
  });
}

void FlowDriver::complete_async_locked() {
  const auto now = Clock::now();
  if (pending_read_) {
    auto& p = *pending_read_;
    auto r = core_->read(p.buf, now);
    std::optional<std::pair<std::error_code, std::size_t>> done;
    if (!r) {
      done.emplace(r.error().code, 0);
    } else if (r->bytes > 0 || p.buf.empty()) {
      done.emplace(std::error_code{}, r->bytes);
    } else if (r->eof) {
      done.emplace(asio::error::eof, 0);
    }
    if (done) {
      deferred_.push_back([h = std::move(p.h), d = *done] { h(d.first, d.second); });
      pending_read_.reset();
    }
  }
  if (pending_write_) {
    auto& p = *pending_write_;
    auto r = core_->write(p.buf, now);
    std::optional<std::pair<std::error_code, std::size_t>> done;
    if (!r) {
      done.emplace(r.error().code, 0);
    } else if (*r > 0 || p.buf.empty()) {
      done.emplace(std::error_code{}, *r);
    }
    if (done) {
      deferred_.push_back([h = std::move(p.h), d = *done] { h(d.first, d.second); });
      pending_write_.reset();
    }
  }
}

void FlowDriver::start_async_read(std::span<std::byte> buf, IoHandler h) {
  std::unique_lock lk(mu);
  if (pending_read_) {
    lk.unlock();
    h(asio::error::in_progress, 0);
    return;
  }
  pending_read_ = PendingRead{buf, std::move(h)};
  request_service_locked();
  if (shut_) {
    auto p = std::move(*pending_read_);
    pending_read_.reset();
    lk.unlock();
    p.h(make_error_code(engine::errc::closed), 0);
  }
}

void FlowDriver::start_async_write(std::span<const std::byte> buf, IoHandler h) {
  std::unique_lock lk(mu);
  if (pending_write_) {
    lk.unlock();
    h(asio::error::in_progress, 0);
    return;
  }
  pending_write_ = PendingWrite{buf, std::move(h)};
  request_service_locked();
  if (shut_) {
    auto p = std::move(*pending_write_);
    pending_write_.reset();
    lk.unlock();
    p.h(make_error_code(engine::errc::closed), 0);
  }
}

void FlowDriver::cancel_async() {
  std::unique_lock lk(mu);
  std::vector<IoHandler> hs;
  if (pending_read_) {
    hs.push_back(std::move(pending_read_->h));
    pending_read_.reset();
  }
  if (pending_write_) {
    hs.push_back(std::move(pending_write_->h));
    pending_write_.reset();
  }
  lk.unlock();
  for (auto& h : hs) {
    h(asio::error::operation_aborted, 0);
  }
}

// --- application side ---

// wait_locked: one wait on |v| (counted in |waiters|); false once |d| has passed.
bool FlowDriver::wait_locked(std::unique_lock<std::mutex>& lk, std::condition_variable& v,
                             int& waiters, Deadline d) {
  if (d != kNoDeadline && Clock::now() >= d) {
    return false;
  }
  waiters += 1;
  if (d == kNoDeadline) {
    v.wait(lk);
  } else {
    v.wait_until(lk, d);
  }
  waiters -= 1;
  return true;
}

bool FlowDriver::wait_writable_locked(std::unique_lock<std::mutex>& lk, std::size_t want,
                                      Deadline d) {
  // Several writers: wake for the smallest want (each rechecks its own).
  write_want_ = write_waiters_ == 0 ? want : std::min(write_want_, want);
  return wait_locked(lk, write_cv, write_waiters_, d);
}

Result<std::size_t> FlowDriver::read_some(std::span<std::byte> buf, Deadline d) {
  // One reader at a time; the bulk copy runs without |mu| (the io thread needs it to receive
  // and acknowledge): the core lends whole delivered buffers (read_loan).
  std::unique_lock rl(read_mu_);
  std::unique_lock lk(mu);
  for (;;) {
    auto r = core_->read_loan(buf, read_loans_, Clock::now());
    if (!r) {
      return std::move(r).take_error();
    }
    if (r->bytes > 0) {
      request_service_locked();  // the freed receive window may release an ACK
      lk.unlock();
      std::size_t off = 0;
      for (const auto& l : read_loans_) {
        const auto b = l.bytes();
        std::memcpy(buf.data() + off, b.data(), b.size());
        off += b.size();
      }
      lk.lock();
      core_->recycle(read_loans_);
      return r->bytes;
    }
    if (r->eof || buf.empty()) {
      return std::size_t{0};
    }
    if (!wait_locked(lk, read_cv, read_waiters_, d)) {
      return timed_out("read");
    }
  }
}

Result<std::size_t> FlowDriver::write_some(std::span<const std::byte> data, Deadline d) {
  // One writer at a time; the copy into frame buffers runs without |mu| (reserve_write, then
  // commit_write assigns SEQs in order).
  data = data.first(std::min(data.size(), kAppSlice));
  std::unique_lock wl(write_mu_);
  std::unique_lock lk(mu);
  for (;;) {
    auto r = core_->reserve_write(data.size(), write_loans_);
    if (!r) {
      return std::move(r).take_error();
    }
    if (*r > 0) {
      lk.unlock();
      std::size_t off = 0;
      for (auto& l : write_loans_) {
        l.buf.insert(l.buf.end(), data.begin() + static_cast<std::ptrdiff_t>(off),
                     data.begin() + static_cast<std::ptrdiff_t>(off + l.payload));
        off += l.payload;
      }
      lk.lock();
      auto c = core_->commit_write(write_loans_, Clock::now());
      if (!c) {
        return std::move(c).take_error();
      }
      request_service_locked();
      return *c;
    }
    if (data.empty()) {
      return std::size_t{0};
    }
    if (!wait_writable_locked(lk, std::min(data.size(), core_->write_wake_bytes()), d)) {
      return timed_out("write");
    }
  }
}

Status FlowDriver::write_packet(std::span<const std::byte> p, Deadline d) {
  std::unique_lock lk(mu);
  for (;;) {
    auto r = core_->write_packet(p, Clock::now());
    if (!r) {
      return std::move(r).take_error();
    }
    if (*r) {
      request_service_locked();
      return {};
    }
    if (!wait_writable_locked(lk, std::max<std::size_t>(p.size(), 1), d)) {
      return timed_out("write packet");
    }
  }
}

Result<bool> FlowDriver::read_packet(std::vector<std::byte>& out, Deadline d) {
  std::unique_lock lk(mu);
  for (;;) {
    const bool ready = core_->packet_ready();
    auto r = core_->read_packet(out, Clock::now());
    if (!r) {
      return std::move(r).take_error();
    }
    if (ready) {
      request_service_locked();
      return true;
    }
    if (r->eof) {
      return false;
    }
    if (!wait_locked(lk, read_cv, read_waiters_, d)) {
      return timed_out("read packet");
    }
  }
}

bool FlowDriver::path_settled_locked(PathId id) const {
  for (const auto& p : core_->stats().paths) {
    if (p.id == id) {
      return p.state == engine::PathState::ready;
    }
  }
  return true;  // gone
}

Result<PathId> FlowDriver::add_path(const PathSpec& spec, Deadline d) {
  if (!dial_) {
    return engine::make_error(engine::errc::wrong_side, "add_path on the accepting side");
  }
  auto c = dial_carrier(*dial_, rt_->io(), spec, d);
  if (!c) {
    return std::move(c).take_error().with_context("add_path " + spec.address);
  }
  engine::PathOptions opts;
  opts.name = spec.name.empty() ? spec.transport + "/" + spec.address : spec.name;
  if (c->packet) {
    opts.framing = engine::Framing::datagram;
    opts.max_frame = c->packet->max_frame();
  }
  std::unique_lock lk(mu);
  auto id = core_->add_path(opts, Clock::now());
  if (!id) {
    if (c->stream) {
      c->stream->close();
    } else {
      c->packet->close();
    }
    return std::move(id).take_error().with_context("add_path " + spec.address);
  }
  if (c->stream) {
    attach_stream_locked(*id, std::move(c->stream), spec.transport, {});
  } else {
    attach_packet_locked(*id, std::move(c->packet), spec.transport);
  }
  note_path_locked(*id, spec);
  const PathId pid = *id;
  for (;;) {
    bool present = false;
    for (const auto& p : core_->stats().paths) {
      if (p.id == pid) {
        present = true;
        if (p.state == engine::PathState::ready) {
          return pid;
        }
      }
    }
    if (!present) {
      return engine::make_error(engine::errc::path_dead,
                                "add_path " + spec.address + ": the path died before it was ready");
    }
    if (core_->state() == FlowState::dead) {
      return engine::make_error(engine::errc::closed, "add_path: flow is dead");
    }
    if (Clock::now() >= d) {
      return timed_out("add_path: waiting for BRIDGE_ACK");
    }
    cv.wait_until(lk, d);
  }
}

Status FlowDriver::wait_established(Deadline d) {
  std::unique_lock lk(mu);
  for (;;) {
    const auto st = core_->state();
    if (st == FlowState::dead) {
      const auto& e = core_->close_error();
      return e ? e->with_context("dial") : engine::make_error(engine::errc::closed, "dial");
    }
    if (st != FlowState::init && st != FlowState::handshaking) {
      bool settled = true;
      for (const auto& p : core_->stats().paths) {
        settled = settled && p.state == engine::PathState::ready;
      }
      if (settled || Clock::now() >= d) {
        return {};
      }
    } else {
      if (core_->path_ids().empty()) {
        return engine::make_error(engine::errc::path_dead,
                                  "dial: every path died before the handshake");
      }
      if (Clock::now() >= d) {
        return timed_out("dial: waiting for HELLO_ACK");
      }
    }
    cv.wait_until(lk, d);
  }
}

Status FlowDriver::close() {
  std::unique_lock lk(mu);
  if (!user_closed_) {
    user_closed_ = true;
    core_->close(Clock::now());
    request_service_locked();
  }
  // The core ends a closing flow after min(budget, graceful_close_timeout); the cap here only
  // guards against a shell that cannot run (no io thread).
  const auto cap = Clock::now() + std::chrono::seconds(100);
  while (core_->state() != FlowState::dead && Clock::now() < cap && !shut_) {
    cv.wait_until(lk, cap);
  }
  std::optional<Error> err = core_->close_error();
  lk.unlock();
  shutdown();
  if (err && err->code == make_error_code(engine::errc::graceful_close_timeout)) {
    return *err;
  }
  return {};
}

void FlowDriver::shutdown() {
  std::unique_lock lk(mu);
  if (shut_) {
    return;
  }
  shut_ = true;
  cv.notify_all();
  read_cv.notify_all();
  write_cv.notify_all();
  asio::post(rt_->io(), [self = shared_from_this()] {
    std::unique_lock l2(self->mu);
    std::vector<SlotPtr> all;
    for (auto& [id, s] : self->slots_) {
      all.push_back(s);
    }
    for (auto& s : all) {
      self->close_slot_locked(s);
    }
    self->timer_.cancel();
    std::vector<IoHandler> hs;
    if (self->pending_read_) {
      hs.push_back(std::move(self->pending_read_->h));
      self->pending_read_.reset();
    }
    if (self->pending_write_) {
      hs.push_back(std::move(self->pending_write_->h));
      self->pending_write_.reset();
    }
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
  if (shut_) {
    return;
  }
  core_->abort(std::move(why), Clock::now());
  request_service_locked();
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

void FlowDriver::note_path_locked(PathId path, const PathSpec& spec) { path_specs_[path] = spec; }

void FlowDriver::forget_path_locked(PathId path) { path_specs_.erase(path); }

bool FlowDriver::redial_wanted_locked() const {
  const auto st = core_->state();
  return !shut_ && !user_closed_ && st != FlowState::dead && st != FlowState::closing;
}

bool FlowDriver::redial_wanted() {
  std::unique_lock lk(mu);
  return redial_wanted_locked();
}

void FlowDriver::schedule_redial_locked(const PathSpec& spec) {
  if (!retry_) {
    retry_ = std::make_shared<RetryQueue>();
  }
  std::lock_guard rl(retry_->mu);
  retry_->pending.emplace_back(spec, dial_->retry.min_backoff);
  if (retry_->running) {
    retry_->cv.notify_all();
    return;
  }
  retry_->running = true;
  // Detached: the thread keeps the queue, and the flow only weakly between attempts, so a
  // Conn the application drops is not kept alive by a path that will never come back.
  std::thread([q = retry_, weak = std::weak_ptr<FlowDriver>(shared_from_this()),
               policy = dial_->retry] {
    for (;;) {
      PathSpec next;
      std::chrono::milliseconds backoff{};
      {
        std::unique_lock ql(q->mu);
        if (q->stop || q->pending.empty()) {
          q->running = false;
          return;
        }
        next = q->pending.front().first;
        backoff = q->pending.front().second;
        q->pending.pop_front();
        q->cv.wait_for(ql, backoff, [&] { return q->stop; });
        if (q->stop) {
          q->running = false;
          return;
        }
      }
      auto drv = weak.lock();
      if (!drv || !drv->redial_wanted()) {
        std::lock_guard ql(q->mu);
        q->running = false;
        return;
      }
      auto r = drv->add_path(next, deadline_in(policy.attempt_timeout));
      if (r) {
        std::unique_lock lk(drv->mu);
        drv->redials_ += 1;
      }
      const bool again = !r && drv->redial_wanted();
      drv.reset();  // may destroy the flow here: its destructor only sets q->stop
      std::lock_guard ql(q->mu);
      if (again) {
        q->pending.emplace_back(next, std::min(backoff * 2, policy.max_backoff));
      }
    }
  }).detach();
}

engine::FlowStats FlowDriver::stats_locked() {
  engine::FlowStats s = core_->stats();
  s.path_redials = redials_;
  for (auto& p : s.paths) {
    if (auto it = slots_.find(p.id); it != slots_.end()) {
      p.transport = it->second->transport;
      p.local = it->second->local;
      p.remote = it->second->remote;
    }
  }
  return s;
}

}  // namespace rendr::detail
