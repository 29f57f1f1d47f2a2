// SPDX-License-Identifier: Apache-2.0
// The Listener API over a ListenerCore (listener_core.hpp): accept queues, close, stats; flows
// leaving the table and the eviction of half-open flows when the listener is full.
#include "listener_core.hpp"

namespace rendr {

namespace detail {

void ListenerCore::on_flow_gone(const Id128& id) {
  table.remove(id);
  std::lock_guard lk(mu);
  adm.gone(id);
  if (auto it = drivers.find(id); it != drivers.end() && it->second.expired()) {
    drivers.erase(it);
  }
  // After a mass close (half of at least 256 flows gone) give the C heap's free pages back:
  // glibc keeps them mapped (an explicit trim halved the RSS left by 2 000 closed flows).
  peak_flows = std::max(peak_flows, table.size() + 1);
  idle_peak = std::max(idle_peak, table.size() + 1);
  if (peak_flows >= kTrimFlows && table.size() <= peak_flows / 2) {
    peak_flows = table.size();
    (void)::malloc_trim(0);
  }
  if (table.size() == 0) {
    trim_cache_while_idle();
  }
  if (closed && drivers.empty() && usock) {
    std::error_code ec;
    usock->close(ec);
  }
}

void ListenerCore::trim_cache_while_idle() {
  if (cache_timer_armed) {
    return;
  }
  if (!cache_timer) {
    cache_timer.emplace(rt->io());
  }
  cache_timer_armed = true;
  cache_timer->expires_after(std::chrono::seconds(1));
  cache_timer->async_wait([weak = weak_from_this()](std::error_code ec) {
    auto self = weak.lock();
    if (!self) {
      return;
    }
    self->cache_timer_armed = false;
    if (ec || self->table.size() != 0) {
      return;
    }
    auto& cache = engine::detail::FrameCache::instance();
    cache.trim_if_idle(Clock::now());
    // The last flows of a mass close (below the halving steps of on_flow_gone) and what the
    // application freed when their Conns ended (a thread per flow: its buffers, in its own
    // malloc arena) stay mapped until someone trims: once per idle spell after many flows.
    if (self->idle_peak >= kTrimFlows) {
      self->idle_peak = 0;
      self->peak_flows = 0;
      (void)::malloc_trim(0);
    }
    if (cache.stats().held_buffers != 0) {
      self->trim_cache_while_idle();
    }
  });
}

bool ListenerCore::make_room(const SourceKey& src) {
  std::vector<std::pair<Id128, std::shared_ptr<FlowDriver>>> victims;
  bool fits = false;
  {
    std::lock_guard lk(mu);
    for (int i = 0; i < 64; ++i) {
      auto room = adm.make_room(src);
      fits = room.fits;
      if (!room.evict) {
        break;
      }
      const Id128 id = *room.evict;
      auto d = take_queued_locked(id);
      if (auto it = drivers.find(id); it != drivers.end()) {
        if (!d) {
          d = it->second.lock();
        }
        drivers.erase(it);
      }
      adm.evicted(id);
      victims.emplace_back(id, std::move(d));
    }
  }
  for (auto& [id, d] : victims) {
    if (!d) {
      continue;  // its driver is gone already: on_flow_gone (posted) removes the entry
    }
    {
      std::unique_lock dl(d->mu);
      d->evict_locked(engine::make_error(
          engine::errc::evicted, "listener full: a half-open flow made room for a new one"));
    }
    table.remove(id);
  }
  return fits;
}

bool ListenerCore::key_allows(std::span<const std::byte> frame, const engine::FirstFrame& ff) {
  const auto unix_now = std::chrono::duration_cast<std::chrono::seconds>(
      std::chrono::system_clock::now().time_since_epoch());
  const auto v = keys->check(frame, ff, static_cast<std::uint64_t>(unix_now.count()));
  if (v == engine::KeyVerdict::ok) {
    return true;
  }
  std::lock_guard lk(mu);
  switch (v) {
    case engine::KeyVerdict::missing: counters.key_missing += 1; break;
    case engine::KeyVerdict::bad: counters.key_bad += 1; break;
    case engine::KeyVerdict::stale: counters.key_stale += 1; break;
    case engine::KeyVerdict::replayed: counters.key_replayed += 1; break;
    case engine::KeyVerdict::ok: break;
  }
  return false;
}

engine::BridgeConfig bridge_config(const ListenOptions& o, bool udp) {
  engine::BridgeConfig bc;
  bc.stream = o.flow;
  bc.stream.silent_budget =
      std::min<engine::Duration>(o.silent_flow_timeout, o.flow.migration_budget);
  if (!o.listener_key.empty()) {
    bc.stream.caps |= engine::kCapsKeyed;  // echoed in HELLO_ACK: this listener checked the key
  }
  // Every listener of this version reads the L3 identity record (docs/wire.md).
  bc.stream.caps |= engine::kCapsL3Identity | engine::kCapsL3Record;
  bc.packet = bc.stream;
  if (udp) {
    const std::size_t cap = kUdpFlowMaxFrame - engine::kHeaderSize;
    bc.stream.max_payload = std::min(bc.stream.max_payload, cap);
    bc.packet.max_payload = std::min(bc.packet.max_payload, cap);
  }
  bc.accept_stream = o.accept_stream;
  bc.accept_packet = o.accept_packet;
  // Admission keeps the flows at |capacity| (evicted ones leave the table at once); the table's
  // own bound only covers flows whose driver ended and whose removal is still posted.
  bc.capacity = 2 * o.capacity;
  bc.instance_id = o.instance_id;
  if (bc.instance_id == Id128{}) {
    (void)::getrandom(bc.instance_id.data(), bc.instance_id.size(), 0);
  }
  return bc;
}

Status check_limits(const ListenOptions& o) {
  if (o.capacity == 0 || o.backlog == 0 || o.max_half_open_per_source == 0 ||
      o.max_pending_carriers == 0 || o.max_pending_per_source == 0 ||
      o.first_frame_timeout <= std::chrono::milliseconds(0)) {
    return engine::make_error(engine::errc::invalid_config,
                              "listener limits: capacity, backlog, the per-source and pending "
                              "limits and first_frame_timeout must be > 0");
  }
  if (!o.listener_key.empty() && (o.listener_key.size() < engine::kMinListenerKey ||
                                  o.listener_key.size() > engine::kMaxListenerKey ||
                                  o.key_max_skew <= std::chrono::seconds(0) ||
                                  o.key_replay_capacity == 0)) {
    return engine::make_error(engine::errc::invalid_config,
                              "listener key: 16 to 64 bytes, key_max_skew and "
                              "key_replay_capacity > 0");
  }
  if (o.silent_flow_timeout < std::chrono::milliseconds(0)) {
    return engine::make_error(engine::errc::invalid_config,
                              "listener limits: silent_flow_timeout must be >= 0");
  }
  return {};
}

std::shared_ptr<IoRuntime> runtime_for(asio::io_context* io) {
  return io != nullptr ? IoRuntime::external(*io) : IoRuntime::owned("rendr-listener");
}

}  // namespace detail

using detail::ListenerCore;

Listener::Listener(std::shared_ptr<ListenerCore> c) : c_(std::move(c)) {}

Listener::~Listener() { close(); }

namespace {

template <typename ConnT>
Result<std::unique_ptr<ConnT>> accept_from(ListenerCore& c,
                                           std::deque<std::shared_ptr<detail::FlowDriver>>& q,
                                           Deadline deadline) {
  // Flows whose L3 identity record was refused leave the queue here, released after |lk|.
  std::vector<std::shared_ptr<detail::FlowDriver>> refused;
  std::unique_lock lk(c.mu);
  for (;;) {
    if (auto taken = c.take_next_locked(q, refused)) {
      return std::make_unique<ConnT>(std::move(taken));
    }
    if (c.closed) {
      return engine::make_error(engine::errc::closed, "accept: listener closed");
    }
    if (deadline == kNoDeadline) {
      c.cv.wait(lk);
    } else if (std::chrono::steady_clock::now() >= deadline) {
      return make_error(std::errc::timed_out, "accept");
    } else {
      c.cv.wait_until(lk, deadline);
    }
  }
}

}  // namespace

Result<ConnPtr> Listener::accept(Deadline deadline) {
  return accept_from<Conn>(*c_, c_->stream_q, deadline);
}

Result<PacketConnPtr> Listener::accept_packet(Deadline deadline) {
  return accept_from<PacketConn>(*c_, c_->packet_q, deadline);
}

namespace {

// set_handler installs |h| (empty: back to accept()) as |slot|, which hands out flows of ConnT.
template <typename ConnT>
void set_handler(ListenerCore& c, std::function<void(std::shared_ptr<detail::FlowDriver>)>& slot,
                 std::function<void(std::unique_ptr<ConnT>)> h) {
  std::lock_guard lk(c.mu);
  if (!h) {
    slot = nullptr;
    return;
  }
  slot = [h = std::move(h)](std::shared_ptr<detail::FlowDriver> d) {
    h(std::make_unique<ConnT>(std::move(d)));
  };
  c.post_hand_out_locked();
}

}  // namespace

void Listener::set_accept_handler(std::function<void(ConnPtr)> h) {
  set_handler<Conn>(*c_, c_->stream_handler, std::move(h));
}

void Listener::set_packet_accept_handler(std::function<void(PacketConnPtr)> h) {
  set_handler<PacketConn>(*c_, c_->packet_handler, std::move(h));
}

std::string Listener::local_address() const { return c_->local; }

std::uint16_t Listener::port() const {
  const auto pos = c_->local.rfind(':');
  return static_cast<std::uint16_t>(std::stoul(c_->local.substr(pos + 1)));
}

void Listener::close() {
  std::deque<std::shared_ptr<detail::FlowDriver>> orphans;
  {
    std::lock_guard lk(c_->mu);
    if (c_->closed) {
      return;
    }
    c_->closed = true;
    orphans.swap(c_->stream_q);
    for (auto& d : c_->packet_q) {
      orphans.push_back(std::move(d));
    }
    c_->packet_q.clear();
  }
  c_->cv.notify_all();
  for (auto& d : orphans) {
    d->shutdown();
  }
  orphans.clear();
  asio::post(c_->rt->io(), [c = c_] {
    std::error_code ec;
    if (c->acceptor) {
      c->acceptor->close(ec);
    }
    if (c->accept_timer) {
      c->accept_timer->cancel();
    }
    if (c->first_frame_timer) {
      c->first_frame_timer->cancel();
    }
    if (c->cache_timer) {
      c->cache_timer->cancel();
    }
    // Carriers still waiting for their first frame get no flow any more.
    if (c->quic) {
      c->quic_close_pending();
    }
    auto waiting = std::move(c->waiting);
    c->waiting.clear();
    for (auto& [id, w] : waiting) {
      if (auto p = w.lock(); p && !p->done) {
        p->done = true;
        p->timer.cancel();
        p->sock.close(ec);
      }
    }
    std::lock_guard lk(c->mu);
    if (c->usock && c->drivers.empty()) {
      c->usock->close(ec);
    }
  });
}

std::vector<engine::Id128> Listener::flow_ids() const {
  std::vector<engine::Id128> out;
  std::lock_guard lk(c_->mu);
  for (const auto& [id, w] : c_->drivers) {
    if (!w.expired()) {
      out.push_back(id);
    }
  }
  return out;
}

std::vector<engine::FlowStats> Listener::stats() const {
  std::vector<std::shared_ptr<detail::FlowDriver>> ds;
  {
    std::lock_guard lk(c_->mu);
    for (const auto& [id, w] : c_->drivers) {
      if (auto d = w.lock()) {
        ds.push_back(std::move(d));
      }
    }
  }
  std::vector<engine::FlowStats> out;
  for (auto& d : ds) {
    std::lock_guard lk(d->mu);
    out.push_back(d->stats_locked());
  }
  return out;
}

ListenerStats Listener::listener_stats() const {
  std::lock_guard lk(c_->mu);
  ListenerStats s = c_->counters;
  const auto a = c_->adm.stats();
  s.flows = a.flows;
  s.unaccepted = a.unaccepted;
  s.half_open = a.half_open;
  s.pending_carriers = a.pending_carriers;
  s.flows_evicted = a.flows_evicted;
  s.flows_refused = a.flows_refused;
  s.carriers_dropped = a.carriers_dropped;
  s.first_frame_timeouts = a.first_frame_timeouts;
  return s;
}

}  // namespace rendr
