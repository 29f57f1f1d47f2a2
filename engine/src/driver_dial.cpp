// SPDX-License-Identifier: Apache-2.0
// FlowDriver, dialling side: dialling a carrier by transport, add_path, waiting for the
// handshake, and the background re-dial (DialOptions::retry).
#include "carriers.hpp"
#include "driver_internal.hpp"

#include <asio/error.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>

#include <algorithm>
#include <type_traits>
#include <utility>
#include <variant>

namespace rendr::detail {

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
  if (spec.transport == "quic") {
    if (auto m = spec.opts.find("mode"); m != spec.opts.end() && m->second == "datagram") {
      auto c = dial_quic_datagram(io, spec, deadline);
      if (!c) {
        return std::move(c).take_error();
      }
      out.packet = std::move(*c);
      return out;
    }
    auto c = dial_quic(io, spec, deadline);
    if (!c) {
      return std::move(c).take_error();
    }
    out.stream = std::move(*c);
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
  return make_error(std::errc::not_supported, "unknown transport \"" + spec.transport + "\"");
}

namespace {

// TcpConnect: one tcp carrier's connect through the reactor, bounded by a timer.
class TcpConnect : public std::enable_shared_from_this<TcpConnect> {
 public:
  TcpConnect(asio::io_context& io, std::function<void(Result<DialedCarrier>)> done)
      : sock_(io), timer_(io), done_(std::move(done)) {}

  void start(const PathSpec& spec, Deadline deadline) {
    auto fd = start_connect_fd(spec, SOCK_STREAM, remote_);
    if (!fd) {
      finish(fd.error().with_context("dial tcp"));
      return;
    }
    std::error_code ec;
    sock_.assign(remote_.family == IpFamily::v6 ? asio::ip::tcp::v6() : asio::ip::tcp::v4(),
                 fd->release(), ec);
    if (ec) {
      finish(Error{ec, "dial tcp: assign"});
      return;
    }
    if (deadline != kNoDeadline) {
      timer_.expires_at(deadline);
      timer_.async_wait([self = shared_from_this()](std::error_code tec) {
        if (!tec) {
          self->expired_ = true;
          std::error_code ignored;
          self->sock_.cancel(ignored);  // the wait below completes: a time-out
        }
      });
    }
    sock_.async_wait(asio::socket_base::wait_write,
                     [self = shared_from_this()](std::error_code wec) { self->writable(wec); });
  }

 private:
  void writable(std::error_code ec) {
    timer_.cancel();
    if (ec || expired_) {
      finish(make_error(std::errc::timed_out, "dial tcp: connect " + remote_.to_string()));
    } else if (auto st = connect_result(sock_.native_handle(), remote_); !st) {
      finish(st.error().with_context("dial tcp"));
    } else {
      DialedCarrier c;
      c.stream = make_tcp_carrier(std::move(sock_));
      finish(std::move(c));
    }
  }

  void finish(Result<DialedCarrier> r) {
    auto done = std::move(done_);
    done_ = nullptr;
    if (done) {
      done(std::move(r));
    }
  }

  asio::ip::tcp::socket sock_;
  asio::steady_timer timer_;
  std::function<void(Result<DialedCarrier>)> done_;
  Endpoint remote_;
  bool expired_ = false;
};

}  // namespace

void async_dial_carrier(std::shared_ptr<const DialContext> ctx, asio::io_context& io,
                        const PathSpec& spec, Deadline deadline,
                        std::function<void(Result<DialedCarrier>)> done) {
  if (spec.transport == "tcp") {
    auto c = std::make_shared<TcpConnect>(io, std::move(done));
    asio::post(io, [c, spec, deadline] { c->start(spec, deadline); });
    return;
  }
  // Blocking factories (udpflow, quic, registered ones): on a thread of their own.
  std::thread([ctx = std::move(ctx), &io, spec, deadline, done = std::move(done)]() mutable {
    auto r = std::make_shared<Result<DialedCarrier>>(dial_carrier(*ctx, io, spec, deadline));
    asio::post(io, [r, done = std::move(done)] { done(std::move(*r)); });
  }).detach();
}

bool FlowDriver::path_settled_locked(PathId id) const {
  for (const auto& p : core_->stats().paths) {
    if (p.id == id) {
      return p.state == engine::PathState::ready;
    }
  }
  return true;  // gone
}

Result<PathId> FlowDriver::attach_dialled_locked(const PathSpec& spec, DialedCarrier c) {
  engine::PathOptions opts;
  opts.name = spec.name.empty() ? spec.transport + "/" + spec.address : spec.name;
  if (c.packet) {
    opts.framing = engine::Framing::datagram;
    opts.max_frame = c.packet->max_frame();
  }
  opts.wall = std::chrono::system_clock::now();
  auto id = core_->add_path(opts, Clock::now());
  if (!id) {
    if (c.stream) {
      c.stream->close();
    } else {
      c.packet->close();
    }
    return std::move(id).take_error();
  }
  if (c.stream) {
    attach_stream_locked(*id, std::move(c.stream), spec.transport, {});
  } else {
    attach_packet_locked(*id, std::move(c.packet), spec.transport);
  }
  note_path_locked(*id, spec);
  return *id;
}

Result<PathId> FlowDriver::add_path(const PathSpec& spec, Deadline d) {
  if (!dial_) {
    return engine::make_error(engine::errc::wrong_side, "add_path on the accepting side");
  }
  auto c = dial_carrier(*dial_, rt_->io(), spec, d);
  if (!c) {
    return std::move(c).take_error().with_context("add_path " + spec.address);
  }
  std::unique_lock lk(mu);
  auto id = attach_dialled_locked(spec, std::move(*c));
  if (!id) {
    return std::move(id).take_error().with_context("add_path " + spec.address);
  }
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

std::optional<Status> FlowDriver::settled_status_locked(Deadline d) {
  const auto st = core_->state();
  if (st == FlowState::dead) {
    const auto& e = core_->close_error();
    return Status(e ? e->with_context("dial") : engine::make_error(engine::errc::closed, "dial"));
  }
  if (st != FlowState::init && st != FlowState::handshaking) {
    bool settled = true;
    for (const auto& p : core_->stats().paths) {
      settled = settled && p.state == engine::PathState::ready;
    }
    if (settled || Clock::now() >= d) {
      return Status{};
    }
    return std::nullopt;
  }
  if (core_->path_ids().empty()) {
    return Status(engine::make_error(engine::errc::path_dead,
                                     "dial: every path died before the handshake"));
  }
  if (Clock::now() >= d) {
    return Status(timed_out("dial: waiting for HELLO_ACK"));
  }
  return std::nullopt;
}

Status FlowDriver::wait_established(Deadline d) {
  std::unique_lock lk(mu);
  for (;;) {
    if (auto st = settled_status_locked(d)) {
      return std::move(*st);
    }
    cv.wait_until(lk, d);
  }
}

void FlowDriver::on_settled_locked(Deadline d, std::function<void(Status)> done) {
  settled_hook_ = std::move(done);
  settled_by_ = d;
  if (d != kNoDeadline) {
    settle_timer_ = std::make_unique<asio::steady_timer>(rt_->io());
    settle_timer_->expires_at(d);
    settle_timer_->async_wait([weak = weak_from_this()](std::error_code ec) {
      auto self = weak.lock();
      if (ec == asio::error::operation_aborted || !self) {
        return;
      }
      std::unique_lock lk(self->mu);
      self->run_hooks_locked();
      self->run_deferred(lk);
    });
  }
  request_service_locked();
}

void FlowDriver::close_async(const engine::Refusal* refusal, std::function<void(Status)> done) {
  std::unique_lock lk(mu);
  begin_close_locked(refusal);
  closed_hook_ = std::move(done);
  request_service_locked();
}

bool FlowDriver::run_hooks_locked() {
  check_retry_locked();
  bool established = false;
  if (settled_hook_) {
    auto st = settled_status_locked(settled_by_);
    if (!st && shut_) {
      st = Status(engine::make_error(engine::errc::closed, "dial: the flow was shut down"));
    }
    if (st) {
      established = static_cast<bool>(*st);
      deferred_.push_back([h = std::move(settled_hook_), st = std::move(*st)]() mutable {
        h(std::move(st));
      });
      settled_hook_ = nullptr;
      if (settle_timer_) {
        settle_timer_->cancel();
      }
    }
  }
  if (closed_hook_ && (core_->state() == FlowState::dead || shut_)) {
    std::optional<Error> err = core_->close_error();
    Status st;
    if (err && err->code == make_error_code(engine::errc::graceful_close_timeout)) {
      st = std::move(*err);
    }
    // As close(): the carriers go once the flow ended (shutdown() takes mu: after unlocking).
    deferred_.push_back([self = shared_from_this(), h = std::move(closed_hook_),
                         st = std::move(st)]() mutable {
      self->shutdown();
      h(std::move(st));
    });
    closed_hook_ = nullptr;
  }
  return established;
}

void FlowDriver::note_path_locked(PathId path, const PathSpec& spec) { path_specs_[path] = spec; }

void FlowDriver::forget_path_locked(PathId path) { path_specs_.erase(path); }

bool FlowDriver::redial_wanted_locked() const {
  const auto st = core_->state();
  return !shut_ && !user_closed_ && st != FlowState::dead && st != FlowState::closing;
}

void FlowDriver::schedule_redial_locked(const PathSpec& spec) {
  enqueue_dial_locked(RetryQueue::Pending{spec, dial_->retry.min_backoff, true, false});
}

void FlowDriver::schedule_later_locked(const PathSpec& spec, std::chrono::milliseconds wait,
                                       bool retry) {
  enqueue_dial_locked(RetryQueue::Pending{spec, wait, retry, true});
}

void FlowDriver::arm_later_locked(std::uint64_t bytes) { later_left_ = bytes; }

void FlowDriver::hurry_later_locked() {
  if (!retry_) {
    return;
  }
  auto& q = *retry_;
  q.hurry = true;
  if (q.waiting && q.current && q.current->later) {
    q.timer.cancel();  // its handler (this generation) dials now
  }
}

void FlowDriver::enqueue_dial_locked(RetryQueue::Pending p) {
  if (!retry_) {
    retry_ = std::make_unique<RetryQueue>(rt_->io());
  }
  retry_->pending.push_back(std::move(p));
  next_dial_locked();
}

void FlowDriver::next_dial_locked() {
  auto& q = *retry_;
  if (q.current || q.pending.empty()) {
    return;
  }
  if (!redial_wanted_locked()) {
    q.pending.clear();
    return;
  }
  q.current = std::move(q.pending.front());
  q.pending.pop_front();
  q.waiting = true;
  q.timer.expires_after(q.current->later && q.hurry ? std::chrono::milliseconds{0}
                                                    : q.current->wait);
  // The flow only weakly: a Conn the application drops is not kept alive by a path that will
  // never come back.
  q.timer.async_wait([weak = weak_from_this(), gen = ++q.gen](std::error_code) {
    if (auto self = weak.lock()) {
      self->retry_timer_fired(gen);
    }
  });
}

void FlowDriver::retry_timer_fired(std::uint64_t gen) {
  std::unique_lock lk(mu);
  if (!retry_ || retry_->gen != gen || !retry_->current) {
    return;  // a step that was cancelled and replaced
  }
  auto& q = *retry_;
  if (q.attached) {  // the attempt's deadline: run_hooks_locked ends it
    run_hooks_locked();
    run_deferred(lk);
    return;
  }
  q.waiting = false;
  if (!redial_wanted_locked()) {
    q.current.reset();
    q.pending.clear();
    return;
  }
  q.attempt_deadline = deadline_in(dial_->retry.attempt_timeout);
  async_dial_carrier(dial_, rt_->io(), q.current->spec, q.attempt_deadline,
                     [weak = weak_from_this(), gen](Result<DialedCarrier> c) {
                       if (auto self = weak.lock()) {
                         self->retry_dialled(gen, std::move(c));
                       }
                     });
}

void FlowDriver::retry_dialled(std::uint64_t gen, Result<DialedCarrier> c) {
  std::unique_lock lk(mu);
  if (!retry_ || retry_->gen != gen || !retry_->current) {
    return;
  }
  auto& q = *retry_;
  if (!c) {
    retry_attempt_done_locked(false);
    run_deferred(lk);
    return;
  }
  if (!redial_wanted_locked()) {
    q.current.reset();
    q.pending.clear();
    return;  // the carrier closes as it goes
  }
  auto id = attach_dialled_locked(q.current->spec, std::move(*c));
  if (!id) {
    retry_attempt_done_locked(false);
    run_deferred(lk);
    return;
  }
  q.attached = *id;
  q.timer.expires_at(q.attempt_deadline);
  q.timer.async_wait([weak = weak_from_this(), gen](std::error_code ec) {
    auto self = weak.lock();
    if (self && ec != asio::error::operation_aborted) {
      self->retry_timer_fired(gen);
    }
  });
  request_service_locked();
}

void FlowDriver::check_retry_locked() {
  if (!retry_ || !retry_->attached) {
    return;
  }
  const PathId pid = *retry_->attached;
  bool present = false;
  bool ready = false;
  for (const auto& p : core_->stats().paths) {
    if (p.id == pid) {
      present = true;
      ready = p.state == engine::PathState::ready;
    }
  }
  if (ready) {
    retry_attempt_done_locked(true);
  } else if (!present || core_->state() == FlowState::dead ||
             Clock::now() >= retry_->attempt_deadline) {
    retry_attempt_done_locked(false);
  }
}

void FlowDriver::retry_attempt_done_locked(bool ok) {
  auto& q = *retry_;
  ++q.gen;  // the attempt's timer, if it runs, is stale now
  q.timer.cancel();
  q.attached.reset();
  q.waiting = false;
  RetryQueue::Pending cur = std::move(*q.current);
  q.current.reset();
  if (ok) {
    (cur.later ? later_paths_ : redials_) += 1;
  } else if (cur.retry && redial_wanted_locked()) {
    // A deferred path that failed is re-dialled like any other from now on.
    const auto wait = cur.later ? dial_->retry.min_backoff
                                : std::min(cur.wait * 2, dial_->retry.max_backoff);
    q.pending.push_back(RetryQueue::Pending{std::move(cur.spec), wait, true, false});
  }
  next_dial_locked();
}

}  // namespace rendr::detail
