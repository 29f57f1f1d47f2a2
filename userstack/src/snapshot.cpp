// SPDX-License-Identifier: Apache-2.0
// Stack::snapshot / Stack::restore: an lwIP connection to and from the TcpSnapshot value the
// kernel path (repair/) produces and consumes. Sequence numbers in the snapshot are wire
// numbers: ours = lwIP's + the shim's per-flow offset; the peer's are never shifted.
#include "stack_impl.hpp"

#include <rendr/userstack/snapshot.hpp>

#include <rendr/userstack/tcp_packet.hpp>

#include <algorithm>
#include <cstring>
#include <optional>

namespace rendr::userstack {

static_assert(static_cast<int>(LwipState::closed) == CLOSED);
static_assert(static_cast<int>(LwipState::listen) == LISTEN);
static_assert(static_cast<int>(LwipState::syn_sent) == SYN_SENT);
static_assert(static_cast<int>(LwipState::syn_rcvd) == SYN_RCVD);
static_assert(static_cast<int>(LwipState::established) == ESTABLISHED);
static_assert(static_cast<int>(LwipState::fin_wait_1) == FIN_WAIT_1);
static_assert(static_cast<int>(LwipState::fin_wait_2) == FIN_WAIT_2);
static_assert(static_cast<int>(LwipState::close_wait) == CLOSE_WAIT);
static_assert(static_cast<int>(LwipState::closing) == CLOSING);
static_assert(static_cast<int>(LwipState::last_ack) == LAST_ACK);
static_assert(static_cast<int>(LwipState::time_wait) == TIME_WAIT);

namespace {

// seg_data appends the data bytes of |seg| at or after lwIP sequence |from| to |out|. The
// segment's pbuf starts with its TCP header; the data are its last seg->len bytes.
void seg_data(const tcp_seg* seg, std::uint32_t from, std::vector<std::byte>& out) {
  std::uint32_t seqno = lwip_ntohl(seg->tcphdr->seqno);
  std::uint32_t skip = 0;
  if (static_cast<std::int32_t>(from - seqno) > 0) {
    skip = std::min<std::uint32_t>(from - seqno, seg->len);
  }
  std::uint32_t n = seg->len - skip;
  if (n == 0) {
    return;
  }
  std::size_t old = out.size();
  out.resize(old + n);
  auto data_off = static_cast<u16_t>(seg->p->tot_len - seg->len + skip);
  pbuf_copy_partial(seg->p, out.data() + old, static_cast<u16_t>(n), data_off);
}

bool has_fin(const tcp_seg* list) {
  for (const tcp_seg* s = list; s != nullptr; s = s->next) {
    if ((TCPH_FLAGS(s->tcphdr) & TCP_FIN) != 0) {
      return true;
    }
  }
  return false;
}

bool tuple_has_pcb(const FourTuple& t) {
  ip_addr_t l = ip_addr_of(t.local);
  ip_addr_t r = ip_addr_of(t.remote);
  for (tcp_pcb* p : {tcp_active_pcbs, tcp_tw_pcbs}) {
    for (; p != nullptr; p = p->next) {
      if (p->local_port == t.local.port && p->remote_port == t.remote.port &&
          ip_addr_cmp(&p->local_ip, &l) && ip_addr_cmp(&p->remote_ip, &r)) {
        return true;
      }
    }
  }
  return false;
}

}  // namespace

Result<TcpSnapshot> Stack::snapshot(Connection& conn) {
  CoreLock lock;
  Connection::Impl& c = conn.impl_for_stack();
  const std::string ctx = "userstack snapshot " + c.tuple_.to_string();
  tcp_pcb* pcb = c.pcb_;
  if (pcb == nullptr) {
    return make_error(std::errc::not_connected, ctx + ": connection has no PCB (reset or moved)");
  }
  auto st = kernel_state(static_cast<int>(pcb->state));
  if (!st || !userstack_state_supported(*st)) {
    return make_error(
        std::errc::not_supported,
        ctx + ": state " + std::string(st ? to_string(*st) : "unknown") + " cannot be snapshotted");
  }
  std::uint32_t offset = 0;
  // The first data byte lwIP emitted while frozen (held by the shim, never on the wire; lwIP
  // counts it in snd_nxt all the same): from there on the send queue is unsent. Counted as
  // sent, a kernel target (u->n) restored it as in flight and the peer got it only after that
  // socket's retransmission timeout (3 s, then 6 s: the mixed test's multi-second stalls).
  std::optional<std::uint32_t> first_held;
  bool fin_held = false;
  if (const FlowEntry* f = impl_->flows_.find(c.tuple_); f != nullptr) {
    offset = f->offset;
    for (const auto& pkt : f->out_held) {
      auto tp = parse_tcp(pkt);
      if (tp && tp->fin()) {
        fin_held = true;
      }
      if (!tp || tp->payload_len == 0) {
        continue;
      }
      const std::uint32_t seq = tp->seq - offset;
      if (!first_held || TCP_SEQ_LT(seq, *first_held)) {
        first_held = seq;
      }
    }
  }
  TcpSnapshot s;
  s.tuple = c.tuple_;
  s.state = *st;
  s.fin_queued = (pcb->flags & TF_FIN) != 0 || *st == TcpState::fin_wait1 ||
                 *st == TcpState::fin_wait2 || *st == TcpState::closing ||
                 *st == TcpState::last_ack;
  s.peer_fin = *st == TcpState::close_wait || *st == TcpState::closing || *st == TcpState::last_ack;
  const bool fin_acked = *st == TcpState::fin_wait2;
  // A FIN still waiting for pending bytes (fin_pending_) has not been given to lwIP yet; lwIP
  // is then still ESTABLISHED/CLOSE_WAIT and the snapshot says the FIN is queued, not sent.
  if (c.fin_pending_) {
    s.fin_queued = true;
    s.state = *st == TcpState::close_wait ? TcpState::last_ack : TcpState::fin_wait1;
  }
  s.fin_sent = s.fin_queued && !c.fin_pending_ && !has_fin(pcb->unsent);

  // Send queue: data from lastack in unacked, then unsent, then what lwIP had no room for.
  std::uint32_t una = pcb->lastack;
  for (const tcp_seg* seg = pcb->unacked; seg != nullptr; seg = seg->next) {
    seg_data(seg, una, s.send_queue);
  }
  for (const tcp_seg* seg = pcb->unsent; seg != nullptr; seg = seg->next) {
    seg_data(seg, una, s.send_queue);
  }
  s.send_queue.insert(s.send_queue.end(),
                      c.tx_pending_.begin() + static_cast<std::ptrdiff_t>(c.tx_pending_head_),
                      c.tx_pending_.end());
  // Sent = up to snd_nxt, minus our FIN when it is in flight.
  std::uint32_t sent = pcb->snd_nxt - una;
  if (s.fin_sent && !fin_acked) {
    sent -= 1;
  }
  if (first_held && TCP_SEQ_GEQ(*first_held, una) && TCP_SEQ_LT(*first_held, una + sent)) {
    sent = *first_held - una;
    fin_held = true;  // our FIN follows the data: it did not leave either
  }
  if (fin_held && s.fin_sent && !fin_acked) {
    s.fin_sent = false;  // queued, to be sent by the next owner
  }
  sent = std::min<std::uint32_t>(sent, static_cast<std::uint32_t>(s.send_queue.size()));
  s.send_unsent = static_cast<std::uint32_t>(s.send_queue.size()) - sent;
  s.send_seq = una - (fin_acked ? 1U : 0U) + offset;

  // Receive side: what lwIP delivered that the application has not read.
  s.recv_queue.assign(c.rx_.begin() + static_cast<std::ptrdiff_t>(c.rx_head_), c.rx_.end());
  s.recv_seq =
      pcb->rcv_nxt - (s.peer_fin ? 1U : 0U) - static_cast<std::uint32_t>(s.recv_queue.size());

  s.mss_clamp = pcb->mss;
  s.opt_wscale = (pcb->flags & TF_WND_SCALE) != 0;
  if (s.opt_wscale) {
    s.snd_wscale = pcb->snd_scale;
    s.rcv_wscale = pcb->rcv_scale;
  }
  s.has_window = true;
  // lwIP takes the window update of an ACK before it checks the segment's sequence number, so a
  // peer still sending into a larger window (announced by a kernel socket this connection was
  // restored from) leaves snd_wl1 beyond rcv_nxt + rcv_wnd. The kernel refuses that
  // (TCP_REPAIR_WINDOW: EINVAL); rcv_nxt is an equally valid update point.
  const std::uint32_t wl1 =
      TCP_SEQ_GT(pcb->snd_wl1, pcb->rcv_nxt) ? pcb->rcv_nxt : pcb->snd_wl1;
  s.window.snd_wl1 = wl1;
  s.window.snd_wnd = pcb->snd_wnd;
  s.window.max_window = std::max<std::uint32_t>(pcb->snd_wnd_max, pcb->snd_wnd);
  s.window.rcv_wup = pcb->rcv_nxt;
  std::uint32_t edge = pcb->rcv_ann_right_edge - pcb->rcv_nxt;
  s.window.rcv_wnd = static_cast<std::int32_t>(edge) > 0 ? edge : 0;
  s.options.nodelay = tcp_nagle_disabled(pcb);
  s.options.keepalive = ip_get_option(pcb, SOF_KEEPALIVE) != 0;
  s.options.keepidle = pcb->keep_idle / 1000;
  s.options.keepintvl = pcb->keep_intvl / 1000;
  s.options.keepcnt = pcb->keep_cnt;
  s.options.ttl = pcb->ttl;
  s.options.tos = pcb->tos;
  s.options.congestion = "reno";
  if (auto v = validate(s); !v) {
    return std::move(v).take_error().with_context(ctx);
  }

  // What this PCB emitted while frozen is obsolete: the snapshot carries those bytes, and the
  // rebuilt PCB sends them again.
  impl_->c_.tx_discarded += impl_->flows_.take_outbound(c.tuple_).size();
  // Remove silently: no FIN, no RST, and no delayed ACK flushed by tcp_pcb_remove().
  c.detach();
  tcp_clear_flags(pcb, TF_ACK_DELAY | TF_ACK_NOW);
  TCP_PCB_REMOVE_ACTIVE(pcb);
  tcp_free(pcb);
  c.snapshotted_ = true;
  // The snapshot owns the queued bytes now: the dead Connection must not hand them out too.
  c.rx_.clear();
  c.rx_head_ = 0;
  c.tx_pending_.clear();
  c.tx_pending_head_ = 0;
  c.fin_pending_ = false;
  c.signal();
  return s;
}

Result<ConnectionPtr> Stack::restore(const TcpSnapshot& snap) {
  const std::string ctx = "userstack restore " + snap.tuple.to_string();
  if (auto v = validate(snap); !v) {
    return std::move(v).take_error().with_context(ctx);
  }
  if (!userstack_state_supported(snap.state)) {
    return make_error(
        std::errc::not_supported,
        ctx + ": state " + std::string(to_string(snap.state)) + " cannot be restored in lwIP");
  }
  CoreLock lock;
  Impl& st = *impl_;
  if (tuple_has_pcb(snap.tuple)) {
    return make_error(std::errc::address_in_use, ctx + ": the tuple still has a PCB here");
  }
  tcp_pcb* pcb =
      tcp_new_ip_type(snap.tuple.local.family == IpFamily::v6 ? IPADDR_TYPE_V6 : IPADDR_TYPE_V4);
  if (pcb == nullptr) {
    return make_error(std::errc::not_enough_memory, ctx + ": tcp_new failed");
  }
  const std::uint32_t offset = st.flows_.on_syn(snap.tuple).offset;
  pcb->local_ip = ip_addr_of(snap.tuple.local);
  pcb->remote_ip = ip_addr_of(snap.tuple.remote);
  pcb->local_port = snap.tuple.local.port;
  pcb->remote_port = snap.tuple.remote.port;
  pcb->netif_idx = netif_get_index(&st.nif_);

  const bool fin_acked = snap.state == TcpState::fin_wait2;
  const std::uint32_t una = snap.send_seq - offset + (fin_acked ? 1U : 0U);
  pcb->lastack = una;
  pcb->snd_nxt = una;
  pcb->snd_lbb = una;
  pcb->rto_end = una;
  pcb->snd_wl2 = una;
  pcb->rtseq = una;
  pcb->rttest = 0;

  const auto rq = static_cast<std::uint32_t>(snap.recv_queue.size());
  pcb->rcv_nxt = snap.recv_seq + rq + (snap.peer_fin ? 1U : 0U);
  if (snap.opt_wscale) {
    tcp_set_flags(pcb, TF_WND_SCALE);
    pcb->snd_scale = snap.snd_wscale;
    pcb->rcv_scale = snap.rcv_wscale;
  } else {
    pcb->snd_scale = 0;
    pcb->rcv_scale = 0;
  }
  // Unread bytes occupy the receive window until read() drains them (as before the move).
  const tcpwnd_size_t wmax = TCP_WND_MAX(pcb);
  pcb->rcv_wnd = rq >= wmax ? 0 : wmax - rq;
  pcb->rcv_ann_wnd = pcb->rcv_wnd;
  pcb->rcv_ann_right_edge = pcb->rcv_nxt + pcb->rcv_ann_wnd;

  if (snap.has_window) {
    pcb->snd_wl1 = snap.window.snd_wl1;
    pcb->snd_wnd = snap.window.snd_wnd;
    pcb->snd_wnd_max = std::max(snap.window.max_window, snap.window.snd_wnd);
  } else {
    pcb->snd_wl1 = snap.recv_seq;
    pcb->snd_wnd = TCP_WND;
    pcb->snd_wnd_max = TCP_WND;
  }
  // The sending MSS: the snapshot's (the peer's clamp), but never beyond what the TUN carries
  // (a kernel-made snapshot from a loopback-routed socket says 65483).
  const std::uint32_t hdrs = snap.tuple.local.family == IpFamily::v6 ? 60U : 40U;
  const std::uint32_t mtu_mss = st.nif_.mtu > hdrs ? st.nif_.mtu - hdrs : 536U;
  std::uint32_t mss =
      st.opts_.send_mss != 0 ? st.opts_.send_mss : std::min(snap.mss_clamp, mtu_mss);
  pcb->mss = static_cast<u16_t>(std::clamp<std::uint32_t>(mss, 536, 0xffff));
  // Re-send the in-flight bytes at once: open the congestion window over them.
  const std::uint32_t inflight = snap.send_unacked();
  pcb->cwnd = std::max<tcpwnd_size_t>(inflight + pcb->mss, 4U * pcb->mss);
  pcb->ssthresh = std::max<tcpwnd_size_t>(pcb->cwnd, TCP_WND);
  // lwIP must hold every in-flight byte: the peer may have them all (a kernel socket has MiBs
  // in flight where lwIP's send buffer is 64 KiB), and lwIP ignores an ACK beyond what it has
  // sent ("ACK for unsent data") - the flow stalled for good. The buffer keeps that size (the
  // connection had that much in flight before). lwIP's queue limit (TCP_SND_QUEUELEN
  // segments) still caps it: ~256 KiB at MSS 1460.
  pcb->snd_buf = std::max<tcpwnd_size_t>(pcb->snd_buf, inflight);
  pcb->tmr = tcp_ticks;
  if (snap.options.nodelay) {
    tcp_nagle_disable(pcb);
  }
  if (snap.options.keepalive) {
    ip_set_option(pcb, SOF_KEEPALIVE);
    if (snap.options.keepidle != 0) {
      pcb->keep_idle = snap.options.keepidle * 1000;
    }
    if (snap.options.keepintvl != 0) {
      pcb->keep_intvl = snap.options.keepintvl * 1000;
    }
    if (snap.options.keepcnt != 0) {
      pcb->keep_cnt = snap.options.keepcnt;
    }
  }
  if (snap.options.ttl != 0) {
    pcb->ttl = static_cast<u8_t>(snap.options.ttl);
  }
  pcb->tos = static_cast<u8_t>(snap.options.tos);

  // Data is queued while lwIP believes the connection is open for writing; the FIN and the
  // final state follow.
  pcb->state = snap.peer_fin ? CLOSE_WAIT : ESTABLISHED;
  if (fin_acked) {
    pcb->state = FIN_WAIT_2;
  }
  TCP_REG_ACTIVE(pcb);

  ConnectionPtr conn = st.make_connection(pcb);
  Connection::Impl& c = conn->impl_for_stack();
  c.rx_.assign(snap.recv_queue.begin(), snap.recv_queue.end());
  c.peer_fin_ = snap.peer_fin;
  c.shut_wr_ = snap.fin_queued;
  if (!fin_acked) {
    c.tx_pending_.assign(snap.send_queue.begin(), snap.send_queue.end());
    c.fin_pending_ = snap.fin_queued;
    c.push_pending();
    if (c.fin_pending_ && c.tx_pending_size() == 0) {
      // push_pending could not queue the FIN (tcp_shutdown refused); say so rather than hang.
      c.fin_pending_ = false;
    }
  }
  if (snap.state == TcpState::closing && pcb->state == LAST_ACK) {
    pcb->state = CLOSING;  // peer FIN received, our FIN sent: tcp_shutdown chose LAST_ACK
  }
  tcp_output(pcb);
  return conn;
}

}  // namespace rendr::userstack
