// SPDX-License-Identifier: Apache-2.0
// listen_tcp / listen_udpflow: the accepting shell around an engine::BridgeTable.
#include <rendr/engine/listener.hpp>

#include "admission.hpp"
#include "carriers.hpp"
#include "driver.hpp"
#include "frame_cache.hpp"

#include <rendr/engine/bridge.hpp>
#include <rendr/engine/errors.hpp>

#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>

#include <malloc.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>

namespace rendr {

namespace detail {

using engine::Clock;
using engine::Id128;

namespace {
constexpr auto kRetryStep = std::chrono::milliseconds(20);
constexpr auto kRetryWindow = std::chrono::milliseconds(500);
// accept() out of descriptors or memory: the connection stays queued and the listening socket
// readable, so retrying at once spins (25 000 failed calls a second); pause, doubling.
constexpr auto kAcceptPauseMin = std::chrono::milliseconds(50);
constexpr auto kAcceptPauseMax = std::chrono::milliseconds(1000);

constexpr std::size_t kTrimFlows = 256;

bool accept_resource_error(std::error_code ec) {
  // asio reports errno in its own category ("asio.system"), which compares unequal to errc.
  if (ec.category() != asio::system_category() && ec.category() != std::system_category() &&
      ec.category() != std::generic_category()) {
    return false;
  }
  const int e = ec.value();
  return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}
// Largest HELLO / BRIDGE_TAG: header + 48-byte payload + str8 name.
constexpr std::size_t kMaxFirstFrame = engine::kHeaderSize + 48 + 1 + engine::kMaxName;

SourceKey key_of(const asio::ip::address& a) {
  if (a.is_v4()) {
    const auto b = a.to_v4().to_bytes();
    return source_key(b);
  }
  const auto b = a.to_v6().to_bytes();
  return source_key(b);
}

AdmissionLimits admission_limits(const ListenOptions& o) {
  AdmissionLimits l;
  l.flows = o.capacity;
  l.unaccepted = o.backlog;
  l.half_open_per_source = o.max_half_open_per_source;
  l.pending_carriers = o.max_pending_carriers;
  l.pending_per_source = o.max_pending_per_source;
  l.first_frame_timeout = o.first_frame_timeout;
  return l;
}

Id128 first_frame_id(const engine::FirstFrame& f) {
  if (const auto* h = std::get_if<engine::Hello>(&f)) {
    return h->flow_id;
  }
  return std::get<engine::BridgeTag>(f).bridge_id;
}
}  // namespace

class ListenerCore : public std::enable_shared_from_this<ListenerCore> {
 public:
  ListenerCore(std::shared_ptr<IoRuntime> runtime, ListenOptions options, engine::BridgeTable t,
               bool is_udp)
      : rt(std::move(runtime)),
        opts(std::move(options)),
        udp(is_udp),
        table(std::move(t)),
        adm(admission_limits(opts)) {}

  std::shared_ptr<IoRuntime> rt;
  ListenOptions opts;
  bool udp;
  std::string local;

  // io thread only
  engine::BridgeTable table;
  std::optional<asio::ip::tcp::acceptor> acceptor;
  std::optional<asio::steady_timer> accept_timer;
  std::chrono::milliseconds accept_pause{0};
  std::shared_ptr<asio::ip::udp::socket> usock;
  std::map<UdpFlowId, std::shared_ptr<UdpServerPathState>> upaths;
  std::vector<std::byte> ubuf;

  // guarded by mu
  mutable std::mutex mu;
  std::condition_variable cv;
  std::map<Id128, std::weak_ptr<FlowDriver>> drivers;
  std::deque<std::shared_ptr<FlowDriver>> stream_q;
  std::deque<std::shared_ptr<FlowDriver>> packet_q;
  bool closed = false;
  ListenerStats counters;
  std::size_t peak_flows = 0;  // io thread: table size since the last malloc_trim
  // Which flows and waiting carriers to keep when flooded; its flows' accepted state changes
  // together with the accept queues, under |mu|.
  Admission adm;

  std::shared_ptr<FlowDriver> find_driver(const Id128& id) {
    std::lock_guard lk(mu);
    auto it = drivers.find(id);
    return it == drivers.end() ? nullptr : it->second.lock();
  }

  // on_flow_gone runs (posted) when a server driver was destroyed.
  void on_flow_gone(const Id128& id) {
    table.remove(id);
    std::lock_guard lk(mu);
    adm.gone(id);
    if (auto it = drivers.find(id); it != drivers.end() && it->second.expired()) {
      drivers.erase(it);
    }
    // After a mass close (half of at least 256 flows gone) give the C heap's free pages back:
    // glibc keeps them mapped (an explicit trim halved the RSS left by 2 000 closed flows).
    peak_flows = std::max(peak_flows, table.size() + 1);
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

  // attach handles an accepted first frame (io thread). |attach_carrier| registers the carrier
  // on the driver (its mutex held). Returns the rejection reply to send, if any, and whether the
  // carrier was taken; nullopt result = retry later.
  struct Outcome {
    bool taken = false;
    bool retry = false;
    std::vector<std::byte> reply;
  };
  // The frame cache is emptied by flow timers once idle (5 s); with no flow left nobody would
  // call it, and the buffers the ended flows gave back (up to its 64 MiB bound) stayed.
  std::optional<asio::steady_timer> cache_timer;
  bool cache_timer_armed = false;
  void trim_cache_while_idle() {
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
      if (cache.stats().held_buffers != 0) {
        self->trim_cache_while_idle();
      }
    });
  }

  // make_room evicts half-open flows until a new flow from |src| fits (io thread); false =
  // refused (only live flows left). An evicted flow leaves the table at once, also when the
  // application still holds its Conn (which then reads errc::evicted).
  bool make_room(const SourceKey& src) {
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

  // take_queued_locked removes flow |id| from the accept queues (it was never accepted).
  std::shared_ptr<FlowDriver> take_queued_locked(const Id128& id) {
    for (auto* q : {&stream_q, &packet_q}) {
      for (auto it = q->begin(); it != q->end(); ++it) {
        if ((*it)->core().flow_id() == id) {
          auto d = std::move(*it);
          q->erase(it);
          return d;
        }
      }
    }
    return nullptr;
  }

  template <typename Attach>
  Outcome accept_first(std::span<const std::byte> frame, const engine::PathOptions& popts,
                       bool final_attempt, const SourceKey& src, Attach&& attach_carrier) {
    Outcome out;
    auto ff = engine::classify_first_frame(frame);
    if (!ff) {
      return out;  // not rendr: close without a word
    }
    const Id128 id = first_frame_id(*ff);
    auto drv = find_driver(id);
    const auto now = Clock::now();
    if (drv) {
      std::unique_lock dl(drv->mu);
      auto r = table.accept(frame, popts, now, final_attempt);
      if (auto* a = std::get_if<engine::BridgeAttached>(&r)) {
        attach_carrier(*drv, a->path);
        out.taken = true;
      } else if (auto* rej = std::get_if<engine::BridgeRejected>(&r)) {
        out.reply = std::move(rej->reply);
      } else {
        out.retry = true;
      }
      return out;
    }
    if (table.find(id) != nullptr) {
      return out;  // a flow whose application is gone, awaiting removal
    }
    {
      std::lock_guard lk(mu);
      if (closed && std::holds_alternative<engine::Hello>(*ff)) {
        return out;
      }
    }
    if (const auto* h = std::get_if<engine::Hello>(&*ff)) {
      // Only a HELLO the table would take may evict anyone (not a kind this listener refuses).
      const bool packet = (h->caps & engine::kCapsPacketMode) != 0;
      if ((packet ? opts.accept_packet : opts.accept_stream) && !make_room(src)) {
        return out;  // only live flows: refused like a full table, without a word
      }
    }
    auto r = table.accept(frame, popts, now, final_attempt);
    if (auto* rej = std::get_if<engine::BridgeRejected>(&r)) {
      out.reply = std::move(rej->reply);
      return out;
    }
    if (std::holds_alternative<engine::BridgeRetry>(r)) {
      out.retry = true;
      return out;
    }
    const auto& a = std::get<engine::BridgeAttached>(r);
    engine::FlowCore* core = table.find(a.flow_id);
    if (!a.new_flow || core == nullptr) {
      return out;
    }
    std::weak_ptr<ListenerCore> weak = shared_from_this();
    const Id128 fid = a.flow_id;
    auto self = shared_from_this();
    auto driver = std::make_shared<FlowDriver>(rt, core, self, [self, fid] {
      asio::post(self->rt->io(), [self, fid] { self->on_flow_gone(fid); });
    });
    const bool packet = core->packet_mode();
    driver->set_max_payload(udp ? kUdpFlowMaxFrame - engine::kHeaderSize : opts.flow.max_payload);
    // The driver keeps this listener alive, so the hook may point at it.
    driver->set_carriers_hook([this, fid](std::size_t n) {
      std::lock_guard lk(mu);
      adm.carriers(fid, n);
    });
    {
      std::unique_lock dl(driver->mu);
      if (opts.follow_client_mode) {
        const std::uint32_t hint =
            (core->stats().peer_caps & engine::kCapsModeMask) >> engine::kCapsModeShift;
        if (hint == 2 || hint == 3) {
          (void)core->set_mode(static_cast<engine::Mode>(hint));
        }
      }
      attach_carrier(*driver, a.path);
    }
    {
      std::lock_guard lk(mu);
      drivers[fid] = driver;
      (packet ? packet_q : stream_q).push_back(std::move(driver));
      adm.flow_added(fid, src, 1);
    }
    cv.notify_all();
    out.taken = true;
    return out;
  }

  // --- tcp ---
  struct PendingTcp {
    explicit PendingTcp(asio::ip::tcp::socket s, asio::io_context& io)
        : sock(std::move(s)), timer(io) {}
    asio::ip::tcp::socket sock;
    asio::steady_timer timer;  // BRIDGE_TAG retries
    engine::StreamDeframer deframer;
    // Sized for one first frame: what follows it stays in the socket for the flow to read
    // (a flood of idle carriers holds 0.3 KiB each here, not 64).
    std::vector<std::byte> buf = std::vector<std::byte>(2 + kMaxFirstFrame);
    std::vector<std::byte> first;
    std::vector<std::byte> rest;  // bytes after the first frame (handed to the flow)
    std::vector<std::byte> reply;
    Clock::time_point started = Clock::now();
    SourceKey src{};
    Admission::CarrierId cid = 0;
    std::uint16_t prefix = 0;
    std::size_t prefix_seen = 0;
    bool done = false;
  };
  // Carriers waiting for their first frame (io thread), by admission id.
  std::map<Admission::CarrierId, std::weak_ptr<PendingTcp>> waiting;
  std::optional<asio::steady_timer> first_frame_timer;
  bool first_frame_armed = false;

  void do_accept() {
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

  void pause_accepting() {
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

  void start_pending(asio::ip::tcp::socket sock) {
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

  // finish_pending: |p| no longer waits (its first frame was handled, or it failed); |close|
  // closes its socket.
  void finish_pending(const std::shared_ptr<PendingTcp>& p, bool close) {
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

  // drop_waiting closes a waiting carrier admission already forgot (pushed out or overdue).
  void drop_waiting(Admission::CarrierId id) {
    auto it = waiting.find(id);
    if (it == waiting.end()) {
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

  // One timer for every waiting carrier's first-frame timeout (they expire in arrival order).
  void arm_first_frame_timer() {
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

  void read_first(const std::shared_ptr<PendingTcp>& p) {
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
        p->prefix = static_cast<std::uint16_t>((p->prefix << 8) | static_cast<std::uint8_t>(p->buf[i]));
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

  void handle_first_tcp(const std::shared_ptr<PendingTcp>& p, bool final_attempt) {
    const engine::PathOptions popts{engine::Framing::stream, "tcp", 0};
    auto out = accept_first(p->first, popts, final_attempt, p->src,
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

  // --- udpflow ---
  void do_recv() {
    usock->async_wait(asio::socket_base::wait_read, [self = shared_from_this()](
                                                         std::error_code ec) {
      if (ec) {
        return;  // socket closed
      }
      self->drain_udp();
      if (self->usock->is_open()) {
        self->do_recv();
      }
    });
  }

  void drain_udp() {
    for (int i = 0; i < 64; ++i) {
      asio::ip::udp::endpoint src;
      socklen_t slen = static_cast<socklen_t>(src.capacity());
      const ssize_t n = ::recvfrom(usock->native_handle(), ubuf.data(), ubuf.size(), MSG_DONTWAIT,
                                   static_cast<sockaddr*>(src.data()), &slen);
      if (n < 0) {
        return;
      }
      src.resize(slen);
      const auto len = static_cast<std::size_t>(n);
      if (len < kUdpFlowHeader + engine::kHeaderSize || ubuf[0] != std::byte{0}) {
        continue;
      }
      UdpFlowId id{};
      std::memcpy(id.data(), ubuf.data() + 1, id.size());
      const std::span<const std::byte> frame(ubuf.data() + kUdpFlowHeader, len - kUdpFlowHeader);
      if (auto it = upaths.find(id); it != upaths.end()) {
        auto st = it->second;
        if (!st->closed) {
          if (st->remote != src) {
            st->remote = src;  // NAT rebinding: replies follow the new source
          }
          if (st->on_packet) {
            st->on_packet(frame);
          }
          continue;
        }
        upaths.erase(it);
      }
      const engine::PathOptions popts{engine::Framing::datagram, "udpflow", kUdpFlowMaxFrame};
      auto out = accept_first(frame, popts, false, key_of(src.address()),
                              [&](FlowDriver& d, PathId path) {
        auto st = std::make_shared<UdpServerPathState>();
        st->id = id;
        st->remote = src;
        upaths[id] = st;
        d.attach_packet_locked(path, make_udpflow_server_path(usock, st, local), "udpflow");
      });
      if (!out.reply.empty()) {
        std::vector<std::byte> dg(kUdpFlowHeader + out.reply.size());
        dg[0] = std::byte{0};
        std::memcpy(dg.data() + 1, id.data(), id.size());
        std::memcpy(dg.data() + kUdpFlowHeader, out.reply.data(), out.reply.size());
        (void)::sendto(usock->native_handle(), dg.data(), dg.size(), MSG_DONTWAIT,
                       static_cast<const sockaddr*>(src.data()), src.size());
      }
      // retry: dropped; the dialer repeats BRIDGE_TAG on datagram carriers.
    }
    // Forget closed paths now and then (bounded work per wake-up).
    for (auto it = upaths.begin(); it != upaths.end();) {
      it = it->second->closed ? upaths.erase(it) : std::next(it);
    }
  }
};

namespace {

engine::BridgeConfig bridge_config(const ListenOptions& o, bool udp) {
  engine::BridgeConfig bc;
  bc.stream = o.flow;
  bc.packet = o.flow;
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

}  // namespace

}  // namespace detail

using detail::ListenerCore;

Listener::Listener(std::shared_ptr<ListenerCore> c) : c_(std::move(c)) {}

Listener::~Listener() { close(); }

namespace {

template <typename ConnT>
Result<std::unique_ptr<ConnT>> accept_from(ListenerCore& c,
                                           std::deque<std::shared_ptr<detail::FlowDriver>>& q,
                                           Deadline deadline) {
  std::unique_lock lk(c.mu);
  for (;;) {
    if (!q.empty()) {
      auto d = std::move(q.front());
      q.pop_front();
      c.adm.accepted(d->core().flow_id());  // immutable: no need for the driver's lock
      return std::make_unique<ConnT>(std::move(d));
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

namespace {

Status check_limits(const ListenOptions& o) {
  if (o.capacity == 0 || o.backlog == 0 || o.max_half_open_per_source == 0 ||
      o.max_pending_carriers == 0 || o.max_pending_per_source == 0 ||
      o.first_frame_timeout <= std::chrono::milliseconds(0)) {
    return engine::make_error(engine::errc::invalid_config,
                              "listener limits: capacity, backlog, the per-source and pending "
                              "limits and first_frame_timeout must be > 0");
  }
  return {};
}

}  // namespace

namespace {

std::shared_ptr<detail::IoRuntime> runtime_for(asio::io_context* io) {
  return io != nullptr ? detail::IoRuntime::external(*io) : detail::IoRuntime::owned("rendr-listener");
}

}  // namespace

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

Result<ListenerPtr> listen_udpflow(std::string_view address, ListenOptions opts) {
  auto ep = detail::parse_udp_endpoint(std::string(address));
  if (!ep) {
    return std::move(ep).take_error().with_context("listen_udpflow");
  }
  if (auto st = check_limits(opts); !st) {
    return std::move(st).take_error().with_context("listen_udpflow");
  }
  auto table = engine::BridgeTable::create(detail::bridge_config(opts, true));
  if (!table) {
    return std::move(table).take_error().with_context("listen_udpflow");
  }
  auto rt = runtime_for(opts.io);
  auto core = std::make_shared<ListenerCore>(rt, opts, std::move(*table), true);
  auto sock = std::make_shared<asio::ip::udp::socket>(rt->io());
  std::error_code ec;
  sock->open(ep->protocol(), ec);
  if (!ec) {
    sock->bind(*ep, ec);
  }
  if (ec) {
    return Error{ec, "listen_udpflow " + std::string(address)};
  }
  // Large socket buffers: every path of every flow shares this socket.
  sock->set_option(asio::socket_base::receive_buffer_size(8 << 20), ec);
  sock->set_option(asio::socket_base::send_buffer_size(8 << 20), ec);
  const auto le = sock->local_endpoint(ec);
  core->local = detail::endpoint_string(le.address(), le.port());
  core->usock = std::move(sock);
  core->ubuf.resize(64 * 1024);
  asio::post(rt->io(), [core] { core->do_recv(); });
  return std::make_unique<Listener>(core);
}

}  // namespace rendr
