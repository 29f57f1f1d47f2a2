// SPDX-License-Identifier: Apache-2.0
// listen_quic: one UDP socket for every QUIC connection; datagrams are routed by destination
// connection id. A client Initial for an unknown id makes a connection, counted by admission
// control as a carrier waiting for its first frame (max_pending_carriers, per source, the
// first-frame timeout); once its stream holds the first frame (HELLO / BRIDGE_TAG, u16-framed as
// on tcp) the BridgeTable decides, exactly as for the other listeners. Anything that is not a
// QUIC packet for a known connection or an acceptable Initial is dropped and counted, with no
// state kept for it.
#include "listener_core.hpp"
#include "quic_link.hpp"

#include <ngtcp2/ngtcp2.h>

#include <unordered_map>

namespace rendr {

namespace detail {

namespace {
constexpr std::size_t kServerCidLen = 16;  // QuicConn's own ids
}  // namespace

struct QuicServerConn {
  explicit QuicServerConn(asio::io_context& io) : timer(io) {}
  std::shared_ptr<QuicLink> link;
  std::vector<std::string> cids;
  Admission::CarrierId cid = 0;
  SourceKey src{};
  Clock::time_point started = Clock::now();
  asio::steady_timer timer;  // BRIDGE_TAG retries, reply linger
  std::vector<std::byte> first;
  bool waiting = true;   // counted by admission as a pending carrier
  bool deciding = false;  // first frame taken, BridgeTable asked (maybe retrying)
  bool attached = false;
  bool key_checked = false;
  bool datagram = false;  // the first frame came as a DATAGRAM: a packet carrier
};

struct ListenerCore::QuicState {
  std::shared_ptr<QuicCreds> creds;
  QuicSettings settings;
  std::unordered_map<std::string, std::shared_ptr<QuicServerConn>> by_cid;
  std::map<Admission::CarrierId, std::weak_ptr<QuicServerConn>> waiting;
  QuicAddr local;
  QuicRecvBatch rx;
};

namespace {

std::string cid_key(const std::uint8_t* p, std::size_t n) {
  return std::string(reinterpret_cast<const char*>(p), n);
}

}  // namespace

void ListenerCore::quic_recv() {
  usock->async_wait(asio::socket_base::wait_read,
                    [self = shared_from_this()](std::error_code ec) {
                      if (ec) {
                        return;  // socket closed
                      }
                      self->quic_drain();
                      if (self->usock->is_open()) {
                        self->quic_recv();
                      }
                    });
}

// forget: the connection's ids leave the table; a waiting one leaves admission.
static void quic_forget(ListenerCore& lc, const std::shared_ptr<QuicServerConn>& sc) {
  auto& q = *lc.quic;
  for (const auto& id : sc->cids) {
    if (auto it = q.by_cid.find(id); it != q.by_cid.end() && it->second == sc) {
      q.by_cid.erase(it);
    }
  }
  sc->cids.clear();
  sc->timer.cancel();
  if (sc->waiting) {
    sc->waiting = false;
    q.waiting.erase(sc->cid);
    std::lock_guard lk(lc.mu);
    lc.adm.carrier_done(sc->cid);
    if (!sc->attached && !sc->deciding) {
      lc.counters.quic_handshake_failures += 1;
    }
  }
}

static void quic_first(ListenerCore& lc, const std::shared_ptr<QuicServerConn>& sc,
                       bool final_attempt);

static void quic_changed(ListenerCore& lc, const std::shared_ptr<QuicServerConn>& sc) {
  auto& link = *sc->link;
  if (link.finished()) {
    quic_forget(lc, sc);
    return;
  }
  if (sc->attached || sc->deciding) {
    return;
  }
  auto& qc = link.conn();
  if (!qc.ready()) {
    return;
  }
  if (auto& in = qc.datagrams_in(); !in.empty() && qc.readable() == 0) {
    // Datagram mode: the first DATAGRAM is the first frame (no length prefix).
    sc->first = std::move(in.front());
    in.pop_front();
    sc->datagram = true;
    sc->deciding = true;
    quic_first(lc, sc, false);
    return;
  }
  if (qc.readable() < 2) {
    return;
  }
  const auto v = qc.peek();
  const std::size_t len = (static_cast<std::size_t>(v[0]) << 8) | static_cast<std::size_t>(v[1]);
  if (len > kMaxFirstFrame || len == 0) {
    link.finish("not rendr");  // calls back: forgotten there
    return;
  }
  if (v.size() < 2 + len) {
    return;
  }
  sc->first.assign(v.begin() + 2, v.begin() + 2 + static_cast<std::ptrdiff_t>(len));
  sc->deciding = true;
  quic_first(lc, sc, false);
}

static void quic_first(ListenerCore& lc, const std::shared_ptr<QuicServerConn>& sc,
                       bool final_attempt) {
  if (sc->link->closed()) {
    return;
  }
  const engine::PathOptions popts =
      sc->datagram ? engine::PathOptions{engine::Framing::datagram, "quic", kQuicDgramMaxFrame}
                   : engine::PathOptions{engine::Framing::stream, "quic", 0};
  auto out = lc.accept_first(sc->first, popts, final_attempt, sc->src, sc->key_checked,
                             [&](FlowDriver& d, PathId path) {
                               if (sc->datagram) {
                                 d.attach_packet_locked(path, make_quic_packet_carrier(sc->link),
                                                        "quic");
                                 return;
                               }
                               sc->link->conn().consume(2 + sc->first.size());
                               d.attach_stream_locked(path, make_quic_carrier(sc->link), "quic",
                                                      {});
                             });
  auto self = lc.shared_from_this();
  if (out.taken) {
    sc->attached = true;
    if (sc->waiting) {
      sc->waiting = false;
      lc.quic->waiting.erase(sc->cid);
      std::lock_guard lk(lc.mu);
      lc.adm.carrier_done(sc->cid);
    }
    return;
  }
  if (out.retry) {
    const bool last = Clock::now() - sc->started >= kRetryWindow;
    sc->timer.expires_after(kRetryStep);
    sc->timer.async_wait([self, sc, last](std::error_code ec) {
      if (!ec) {
        quic_first(*self, sc, last);
      }
    });
    return;
  }
  if (out.reply.empty()) {
    sc->link->finish("refused");
    return;
  }
  // A refusal the dialer reads (wrong instance, unknown flow...): sent before the close.
  if (sc->datagram) {
    (void)sc->link->send_datagram(out.reply);
  } else {
    sc->link->async_write(out.reply, [](std::error_code, std::size_t) {});
  }
  sc->link->close("refused");
}

void ListenerCore::quic_drain() {
  auto& q = *quic;
  for (int round = 0; round < 2; ++round) {
    const int n = q.rx.recv(usock->native_handle());
    for (int i = 0; i < n; ++i) {
      quic_packet(q.rx.packet(i), q.rx.from(i));
    }
    if (n < 32) {
      return;
    }
  }
}

void ListenerCore::quic_packet(std::span<const std::byte> pkt, const QuicAddr& from) {
  auto& q = *quic;
  const auto* data = reinterpret_cast<const std::uint8_t*>(pkt.data());
  const auto len = pkt.size();
  ngtcp2_version_cid vc{};
  if (ngtcp2_pkt_decode_version_cid(&vc, data, len, kServerCidLen) != 0) {
    std::lock_guard lk(mu);
    counters.quic_dropped += 1;
    return;
  }
  if (auto it = q.by_cid.find(cid_key(vc.dcid, vc.dcidlen)); it != q.by_cid.end()) {
    auto sc = it->second;  // the link may forget itself while handling the packet
    sc->link->on_datagram(pkt, from);
    return;
  }
  ngtcp2_pkt_hd hd{};
  bool closed_now = false;
  {
    std::lock_guard lk(mu);
    closed_now = closed;
  }
  if (closed_now || ngtcp2_accept(&hd, data, len) != 0) {
    std::lock_guard lk(mu);
    counters.quic_dropped += 1;
    return;
  }
  asio::ip::udp::endpoint src_ep;
  std::memcpy(src_ep.data(), &from.ss, from.len);
  src_ep.resize(from.len);
  auto sc = std::make_shared<QuicServerConn>(rt->io());
  sc->src = key_of(src_ep.address());
  std::weak_ptr<QuicServerConn> wsc = sc;
  QuicConn::Hooks hooks;
  auto* qs = quic.get();
  hooks.cid_added = [qs, wsc](std::span<const std::uint8_t> id) {
    if (auto s = wsc.lock()) {
      const auto k = cid_key(id.data(), id.size());
      qs->by_cid[k] = s;
      s->cids.push_back(k);
    }
  };
  hooks.cid_removed = [qs, wsc](std::span<const std::uint8_t> id) {
    const auto k = cid_key(id.data(), id.size());
    if (auto it = qs->by_cid.find(k); it != qs->by_cid.end() && it->second == wsc.lock()) {
      qs->by_cid.erase(it);
    }
  };
  auto qc = QuicConn::server(q.creds, q.settings, hd, q.local, from, std::move(hooks),
                             quic_now());
  if (!qc) {
    quic_forget(*this, sc);
    std::lock_guard lk(mu);
    counters.quic_dropped += 1;
    return;
  }
  Admission::CarrierAdmit a;
  {
    std::lock_guard lk(mu);
    a = adm.carrier_opened(sc->src, sc->started);
  }
  sc->cid = a.id;
  q.waiting[sc->cid] = sc;
  // The client keeps sending to the id it chose until it learns ours.
  const auto orig = cid_key(hd.dcid.data, hd.dcid.datalen);
  q.by_cid[orig] = sc;
  sc->cids.push_back(orig);
  sc->link = std::make_shared<QuicLink>(rt->io(), usock, false, std::move(*qc));
  sc->link->local = local;
  std::weak_ptr<ListenerCore> wl = weak_from_this();
  sc->link->on_change = [wl, wsc] {
    auto l = wl.lock();
    auto s = wsc.lock();
    if (l && s) {
      quic_changed(*l, s);
    }
  };
  for (const auto id : a.close) {
    drop_waiting(id);  // older waiting carriers pushed out to make room
  }
  arm_first_frame_timer();
  sc->link->on_datagram(pkt, from);
}

bool ListenerCore::quic_drop(Admission::CarrierId id) {
  auto it = quic->waiting.find(id);
  if (it == quic->waiting.end()) {
    return false;
  }
  auto sc = it->second.lock();
  quic->waiting.erase(it);
  if (sc) {
    sc->waiting = false;  // admission forgot it already
    sc->link->finish("no first frame in time");
  }
  return true;
}

void ListenerCore::quic_close_pending() {
  std::vector<std::shared_ptr<QuicServerConn>> pending;
  for (auto& [id, w] : quic->waiting) {
    if (auto sc = w.lock()) {
      pending.push_back(std::move(sc));
    }
  }
  for (auto& sc : pending) {
    sc->link->finish("listener closed");
  }
}

}  // namespace detail

using detail::ListenerCore;
using detail::check_limits;
using detail::runtime_for;

namespace {

struct QuicSocket {
  std::shared_ptr<asio::ip::udp::socket> sock;
  std::shared_ptr<ListenerCore::QuicState> state;
  std::string local;
};

Result<QuicSocket> open_quic(asio::io_context& io, std::string_view address, const QuicTls& tls) {
  const std::string what = "quic " + std::string(address);
  auto ep = detail::parse_udp_endpoint(std::string(address));
  if (!ep) {
    return std::move(ep).take_error().with_context(what);
  }
  if (tls.ca.empty() || tls.cert.empty() || tls.key.empty()) {
    return make_error(std::errc::invalid_argument,
                      what + ": ca, cert and key are required (mutual TLS; rendrctl cert)");
  }
  if (tls.alpn.empty() || tls.alpn.size() > 255 || tls.idle_timeout.count() <= 0 ||
      tls.handshake_timeout.count() <= 0) {
    return make_error(std::errc::invalid_argument, what + ": alpn 1 to 255 bytes, timeouts > 0");
  }
  auto creds = detail::QuicCreds::load(tls.ca, tls.cert, tls.key);
  if (!creds) {
    return std::move(creds).take_error().with_context(what);
  }
  QuicSocket out;
  out.sock = std::make_shared<asio::ip::udp::socket>(io);
  std::error_code ec;
  out.sock->open(ep->protocol(), ec);
  if (!ec) {
    out.sock->bind(*ep, ec);
  }
  if (ec) {
    return Error{ec, what};
  }
  // One socket for every connection, but not a deep one: QUIC's congestion control fills
  // whatever queue there is, and an idle path's probes wait behind a busy path's packets in it
  // (8 MiB held 200 ms at 40 MB/s and starved a probe past its freshness window).
  out.sock->set_option(asio::socket_base::receive_buffer_size(1 << 20), ec);
  out.sock->set_option(asio::socket_base::send_buffer_size(8 << 20), ec);
  const auto le = out.sock->local_endpoint(ec);
  out.local = detail::endpoint_string(le.address(), le.port());
  auto q = std::make_shared<ListenerCore::QuicState>();
  q->creds = std::move(*creds);
  q->settings.alpn = tls.alpn;
  q->settings.idle_timeout = static_cast<detail::QuicTime>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(tls.idle_timeout).count());
  q->settings.initial_rtt = static_cast<detail::QuicTime>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(tls.initial_rtt).count());
  q->settings.handshake_timeout = static_cast<detail::QuicTime>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(tls.handshake_timeout).count());
  q->local.len = static_cast<socklen_t>(le.size());
  std::memcpy(&q->local.ss, le.data(), le.size());
  out.state = std::move(q);
  return out;
}

}  // namespace

Result<ListenerPtr> listen_quic(std::string_view address, QuicTls tls, ListenOptions opts) {
  if (auto st = check_limits(opts); !st) {
    return std::move(st).take_error().with_context("listen_quic");
  }
  auto table = engine::BridgeTable::create(detail::bridge_config(opts, false));
  if (!table) {
    return std::move(table).take_error().with_context("listen_quic");
  }
  auto rt = runtime_for(opts.io);
  auto qs = open_quic(rt->io(), address, tls);
  if (!qs) {
    return std::move(qs).take_error().with_context("listen_quic");
  }
  // Stream framing: the tcp payload limits apply (udp = false).
  auto core = std::make_shared<ListenerCore>(rt, opts, std::move(*table), false);
  core->local = qs->local;
  core->quic = std::move(qs->state);
  core->usock = std::move(qs->sock);
  core->ubuf.resize(64 * 1024);
  asio::post(rt->io(), [core] { core->quic_recv(); });
  return std::make_unique<Listener>(core);
}

Result<std::string> Listener::add_quic(std::string_view address, QuicTls tls) {
  {
    std::lock_guard lk(c_->mu);
    if (c_->closed) {
      return engine::make_error(engine::errc::closed, "add_quic: listener closed");
    }
  }
  if (c_->udp || !c_->acceptor) {
    return make_error(std::errc::invalid_argument,
                      "add_quic: only a tcp listener takes quic carriers as well");
  }
  if (c_->quic_added.exchange(true)) {
    return make_error(std::errc::invalid_argument, "add_quic: this listener has one already");
  }
  auto qs = open_quic(c_->rt->io(), address, tls);
  if (!qs) {
    c_->quic_added = false;
    return std::move(qs).take_error().with_context("add_quic");
  }
  std::string local = qs->local;
  asio::post(c_->rt->io(), [c = c_, q = std::move(*qs)]() mutable {
    c->quic = std::move(q.state);
    c->usock = std::move(q.sock);
    c->ubuf.resize(64 * 1024);
    c->quic_recv();
  });
  return local;
}

}  // namespace rendr
