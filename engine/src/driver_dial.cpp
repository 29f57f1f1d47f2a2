// SPDX-License-Identifier: Apache-2.0
// FlowDriver, dialling side: dialling a carrier by transport, add_path, waiting for the
// handshake, and the background re-dial (DialOptions::retry).
#include "driver_internal.hpp"

#include <asio/error.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>

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
  opts.wall = std::chrono::system_clock::now();
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
  if (!user_closed_) {
    user_closed_ = true;
    reclaim_input_locked();
    if (refusal) {
      (void)core_->refuse(refusal->code, refusal->detail, Clock::now());
    } else {
      core_->close(Clock::now());
    }
  }
  closed_hook_ = std::move(done);
  request_service_locked();
}

void FlowDriver::run_hooks_locked() {
  if (settled_hook_) {
    auto st = settled_status_locked(settled_by_);
    if (!st && shut_) {
      st = Status(engine::make_error(engine::errc::closed, "dial: the flow was shut down"));
    }
    if (st) {
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
  std::lock_guard rl(retry_->mu);
  retry_->hurry = true;
  retry_->cv.notify_all();
}

void FlowDriver::enqueue_dial_locked(RetryQueue::Pending p) {
  if (!retry_) {
    retry_ = std::make_shared<RetryQueue>();
  }
  std::lock_guard rl(retry_->mu);
  retry_->pending.push_back(std::move(p));
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
      RetryQueue::Pending next;
      {
        std::unique_lock ql(q->mu);
        if (q->stop || q->pending.empty()) {
          q->running = false;
          return;
        }
        next = std::move(q->pending.front());
        q->pending.pop_front();
        q->cv.wait_for(ql, next.wait, [&] { return q->stop || (next.later && q->hurry); });
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
      auto r = drv->add_path(next.spec, deadline_in(policy.attempt_timeout));
      if (r) {
        std::unique_lock lk(drv->mu);
        (next.later ? drv->later_paths_ : drv->redials_) += 1;
      }
      const bool again = !r && next.retry && drv->redial_wanted();
      drv.reset();  // may destroy the flow here: its destructor only sets q->stop
      std::lock_guard ql(q->mu);
      if (again) {
        // A deferred path that failed is re-dialled like any other from now on.
        const auto wait = next.later ? policy.min_backoff
                                     : std::min(next.wait * 2, policy.max_backoff);
        q->pending.push_back(RetryQueue::Pending{std::move(next.spec), wait, true, false});
      }
    }
  }).detach();
}

}  // namespace rendr::detail
