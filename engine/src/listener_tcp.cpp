// SPDX-License-Identifier: Apache-2.0
// listen_tcp: accepting tcp carriers (pausing when out of descriptors), reading each one's first
// frame within the admission limits, and handing it to the BridgeTable.
#include "listener_core.hpp"

namespace rendr {

namespace detail {

void ListenerCore::do_accept() {
  acceptor->async_accept([self = shared_from_this()](std::error_code ec,
                                                     asio::ip::tcp::socket sock) {
    {
      std::lock_guard lk(self->mu);
      if (self->closed) {
        return;
      }
      if (ec && ec != asio::error::operation_aborted) {
        self->counters.accept_errors += 1;
        self->counters.accept_pauses += accept_resource_error(ec) ? 1 : 0;
      }
    }
    if (ec == asio::error::operation_aborted) {
      return;
    }
    if (!ec) {
      self->accept_pause = std::chrono::milliseconds(0);
      self->start_pending(std::move(sock));
    } else if (accept_resource_error(ec)) {
      self->pause_accepting();
      return;
    }
    self->do_accept();
  });
}

void ListenerCore::pause_accepting() {
  accept_pause = accept_pause.count() == 0 ? kAcceptPauseMin
                                           : std::min(accept_pause * 2, kAcceptPauseMax);
  if (!accept_timer) {
    accept_timer.emplace(rt->io());
  }
  accept_timer->expires_after(accept_pause);
  accept_timer->async_wait([weak = weak_from_this()](std::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || !self->acceptor->is_open()) {
      return;
    }
    self->do_accept();
  });
}

void ListenerCore::start_pending(asio::ip::tcp::socket sock) {
  auto p = std::make_shared<PendingTcp>(std::move(sock), rt->io());
  std::error_code ec;
  p->src = key_of(p->sock.remote_endpoint(ec).address());
  Admission::CarrierAdmit a;
  {
    std::lock_guard lk(mu);
    a = adm.carrier_opened(p->src, p->started);
  }
  p->cid = a.id;
  waiting[p->cid] = p;
  for (const auto id : a.close) {
    drop_waiting(id);  // older carriers pushed out to make room
  }
  arm_first_frame_timer();
  read_first(p);
}

void ListenerCore::finish_pending(const std::shared_ptr<PendingTcp>& p, bool close) {
  if (p->done) {
    return;
  }
  p->done = true;
  p->timer.cancel();
  waiting.erase(p->cid);
  {
    std::lock_guard lk(mu);
    adm.carrier_done(p->cid);
  }
  if (close) {
    std::error_code e2;
    p->sock.close(e2);
  }
}

void ListenerCore::drop_waiting(Admission::CarrierId id) {
  auto it = waiting.find(id);
  if (it == waiting.end()) {
    if (quic) {
      (void)quic_drop(id);
    }
    return;
  }
  auto p = it->second.lock();
  waiting.erase(it);
  if (p && !p->done) {
    p->done = true;
    p->timer.cancel();
    std::error_code e2;
    p->sock.close(e2);
  }
}

void ListenerCore::arm_first_frame_timer() {
  if (first_frame_armed) {
    return;
  }
  std::optional<Clock::time_point> next;
  {
    std::lock_guard lk(mu);
    next = adm.next_deadline();
  }
  if (!next) {
    return;
  }
  if (!first_frame_timer) {
    first_frame_timer.emplace(rt->io());
  }
  first_frame_armed = true;
  first_frame_timer->expires_at(*next);
  // Weak: a pending timer must not keep the listener (and its io thread) alive after close.
  first_frame_timer->async_wait([weak = weak_from_this()](std::error_code ec) {
    auto self = weak.lock();
    if (!self) {
      return;
    }
    self->first_frame_armed = false;
    if (ec) {
      return;
    }
    std::vector<Admission::CarrierId> late;
    {
      std::lock_guard lk(self->mu);
      if (self->closed) {
        return;
      }
      late = self->adm.expire(Clock::now());
    }
    for (const auto id : late) {
      self->drop_waiting(id);
    }
    self->arm_first_frame_timer();
  });
}

void ListenerCore::read_first(const std::shared_ptr<PendingTcp>& p) {
  p->sock.async_read_some(asio::buffer(p->buf), [self = shared_from_this(), p](
                                                    std::error_code ec, std::size_t n) {
    if (p->done) {
      return;
    }
    if (ec) {
      self->finish_pending(p, true);
      return;
    }
    // A first frame is a HELLO or BRIDGE_TAG: a few hundred bytes. A longer length prefix
    // (an HTTP request reads as ~18 000) is not rendr: close now instead of waiting for it.
    for (std::size_t i = 0; i < n && p->prefix_seen < 2; ++i, ++p->prefix_seen) {
      p->prefix =
          static_cast<std::uint16_t>((p->prefix << 8) | static_cast<std::uint8_t>(p->buf[i]));
    }
    if (p->prefix_seen == 2 && p->prefix > kMaxFirstFrame) {
      self->finish_pending(p, true);
      return;
    }
    p->deframer.feed(std::span<const std::byte>(p->buf.data(), n));
    auto f = p->deframer.next();
    if (!f) {
      self->finish_pending(p, true);
      return;
    }
    if (!f->has_value()) {
      self->read_first(p);
      return;
    }
    p->first.assign((*f)->begin(), (*f)->end());
    p->rest = p->deframer.release_buffered();  // the deframer may view p->buf
    self->handle_first_tcp(p, false);
  });
}

void ListenerCore::handle_first_tcp(const std::shared_ptr<PendingTcp>& p, bool final_attempt) {
  const engine::PathOptions popts{engine::Framing::stream, "tcp", 0};
  auto out = accept_first(p->first, popts, final_attempt, p->src, p->key_checked,
                          [&](FlowDriver& d, PathId path) {
                            d.attach_stream_locked(path, make_tcp_carrier(std::move(p->sock)),
                                                   "tcp", std::move(p->rest));
                          });
  if (out.taken) {
    finish_pending(p, false);
    return;
  }
  if (out.retry) {
    const bool last = Clock::now() - p->started >= kRetryWindow;
    p->timer.expires_after(kRetryStep);
    p->timer.async_wait([self = shared_from_this(), p, last](std::error_code ec) {
      if (ec || p->done) {
        return;
      }
      self->handle_first_tcp(p, last);
    });
    return;
  }
  if (out.reply.empty()) {
    finish_pending(p, true);
    return;
  }
  finish_pending(p, false);
  p->reply = std::move(out.reply);
  asio::async_write(p->sock, asio::buffer(p->reply), [p](std::error_code, std::size_t) {
    std::error_code e2;
    p->sock.close(e2);
  });
}

}  // namespace detail

using detail::ListenerCore;
using detail::check_limits;
using detail::runtime_for;

Result<ListenerPtr> listen_tcp(std::string_view address, ListenOptions opts) {
  auto ep = detail::parse_tcp_endpoint(std::string(address));
  if (!ep) {
    return std::move(ep).take_error().with_context("listen_tcp");
  }
  if (auto st = check_limits(opts); !st) {
    return std::move(st).take_error().with_context("listen_tcp");
  }
  auto table = engine::BridgeTable::create(detail::bridge_config(opts, false));
  if (!table) {
    return std::move(table).take_error().with_context("listen_tcp");
  }
  auto rt = runtime_for(opts.io);
  auto core = std::make_shared<ListenerCore>(rt, opts, std::move(*table), false);
  asio::ip::tcp::acceptor acc(rt->io());
  std::error_code ec;
  acc.open(ep->protocol(), ec);
  if (!ec) {
    acc.set_option(asio::socket_base::reuse_address(true), ec);
    acc.bind(*ep, ec);
  }
  if (!ec) {
    acc.listen(asio::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    return Error{ec, "listen_tcp " + std::string(address)};
  }
  const auto le = acc.local_endpoint(ec);
  core->local = detail::endpoint_string(le.address(), le.port());
  core->acceptor.emplace(std::move(acc));
  asio::post(rt->io(), [core] { core->do_accept(); });
  return std::make_unique<Listener>(core);
}

}  // namespace rendr
