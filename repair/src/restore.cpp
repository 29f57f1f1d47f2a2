// SPDX-License-Identifier: Apache-2.0
// Restore of kernel TCP sockets from a TcpSnapshot: stage (repair mode, validated) and activate
// (live). The recipe is in <rendr/repair/repair.hpp>; the comments here explain kernel quirks and
// ordering constraints.
#include <rendr/repair/repair.hpp>

#include "inject.hpp"
#include "ops.hpp"

#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <span>
#include <string>

namespace rendr::repair {

using detail::now_ns;
using detail::Ops;
using detail::pause_us;
using detail::sys_error;
using detail::unmap_v4;
using detail::unreadable;

namespace {

// restored_ts_clock: the TCP_TIMESTAMP to restore a snapshot's clock with. The kernel (6.7+)
// reads TCP_TIMESTAMP with its low bit cleared in millisecond mode (on the way in that bit
// selects microsecond mode), so the value read can be 1 below the TSval the socket last sent;
// restored as read, the new socket's first segment (the window probe leaving repair mode)
// carried a TSval 1 below the peer's latest - caught at the source by the stream test's
// capture. Two ticks on, with the mode bit as read, the clock never goes back.
std::uint32_t restored_ts_clock(std::uint32_t read) { return read + 2U; }

// Refusals below are conditions, not failed calls: their message says the cause and carries no
// errno text (an appended "Input/output error" or "Invalid argument" would only mislead).
Error mismatch(const std::string& what, std::uint64_t have, std::uint64_t want) {
  return make_error(std::errc::io_error, "restore validation: " + what + " is " +
                                          std::to_string(have) + ", snapshot says " +
                                          std::to_string(want));
}

// peer_window is the send window a peer ACK |pa| gives a socket whose snd_una is |snd_una|: the
// window field scaled, plus what the ACK acknowledges beyond snd_una (the right edge counts).
std::uint32_t peer_window(const TcpSnapshot& snap, const PeerAck& pa, std::uint32_t snd_una) {
  return (pa.ack - snd_una) +
         (static_cast<std::uint32_t>(pa.window) << (snap.opt_wscale ? snap.snd_wscale : 0));
}

// peer_ack_in_range: |pa| acknowledges something in [snd_una, snd_nxt] of |snap|.
bool peer_ack_in_range(const TcpSnapshot& snap, const PeerAck& pa) {
  const auto ahead = static_cast<std::int32_t>(pa.ack - snap.send_seq);
  return ahead >= 0 && static_cast<std::uint32_t>(ahead) <= snap.send_unacked();
}

// set_peer_window makes the window of the peer ACK |pa| the send window of the repair-mode socket
// behind |op| (snd_una = the snapshot's send_seq), as if that ACK had just arrived: the peer may
// have opened its window while the freeze dropped its window updates, and it answers the
// repair-off window probe at most every 500 ms (tcp_invalid_ratelimit).
Status set_peer_window(Ops& op, const TcpSnapshot& snap, const PeerAck& pa) {
  tcp_repair_window w{};
  socklen_t wl = sizeof w;
  if (op.sys_.getsockopt(op.fd_, IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, &wl) != 0) {
    return sys_error("read TCP_REPAIR_WINDOW for the peer's window");
  }
  w.snd_wnd = peer_window(snap, pa, snap.send_seq);
  w.max_window = std::max(w.max_window, w.snd_wnd);
  // The ACK came after every byte received so far: rcv_nxt (less a re-injected FIN's one).
  w.snd_wl1 = snap.recv_seq + static_cast<std::uint32_t>(snap.recv_queue.size());
  if (op.sys_.setsockopt(op.fd_, IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, sizeof w) != 0) {
    return sys_error("TCP_REPAIR_WINDOW (the peer's window)");
  }
  return {};
}

// drop_acked removes from |snap| the send-queue bytes the peer acknowledged (RestoreOptions::
// peer_ack) and takes the peer's window from that ACK, also from one that acknowledges nothing
// new (a window update: the peer opened its window during the freeze). Returns how many bytes
// were dropped.
std::uint32_t drop_acked(TcpSnapshot& snap, const PeerAck& pa) {
  if (snap.fin_sent || !peer_ack_in_range(snap, pa)) {
    return 0;  // an ACK below the queue or for bytes never sent: ignore it
  }
  const auto n = pa.ack - snap.send_seq;
  snap.send_queue.erase(snap.send_queue.begin(), snap.send_queue.begin() + n);
  snap.send_seq += n;
  if (snap.has_window) {
    const std::uint32_t wnd = peer_window(snap, pa, snap.send_seq);
    snap.window.snd_wnd = wnd;
    snap.window.max_window = std::max(snap.window.max_window, wnd);
    // The window now comes from a segment the peer sent after everything we received.
    snap.window.snd_wl1 = snap.recv_seq + static_cast<std::uint32_t>(snap.recv_queue.size());
  }
  return n;
}

}  // namespace

Result<UniqueFd> Repairer::restore(const TcpSnapshot& snap, const RestoreOptions& opts) {
  StageState st;
  auto fd = stage(snap, opts, st);
  if (!fd.ok()) {
    return std::move(fd).take_error();
  }
  return activate_staged(snap, opts, st, std::move(fd).value(), std::nullopt, {});
}

Result<StagedSocket> Repairer::restore_staged(TcpSnapshot snap, const RestoreOptions& opts) {
  if (opts.peer_ack) {
    const auto n = drop_acked(snap, *opts.peer_ack);
    if (n > 0 && debug_on()) {
      log_.debug("restore " + snap.tuple.to_string() + ": " + std::to_string(n) +
                 " send-queue bytes were already acknowledged by the peer");
    }
  }
  StagedSocket s;
  s.snap_ = std::make_unique<TcpSnapshot>(std::move(snap));
  s.opts_ = opts;
  auto fd = stage(*s.snap_, opts, s.st_);
  if (!fd.ok()) {
    return std::move(fd).take_error();
  }
  s.fd_ = std::move(fd).value();
  return s;
}

Result<UniqueFd> Repairer::activate(StagedSocket&& s, std::optional<PeerAck> peer_acked,
                                    std::span<const std::vector<std::byte>> replay) {
  if (!s.valid()) {
    return make_error(std::errc::bad_file_descriptor, "activate: empty StagedSocket");
  }
  return activate_staged(*s.snap_, s.opts_, s.st_, std::move(s.fd_), peer_acked, replay);
}

Result<std::size_t> Repairer::replay(const FourTuple& tuple,
                                     std::span<const std::vector<std::byte>> packets,
                                     std::uint32_t mark) {
  std::string refused;
  auto n = inject_replay(tuple, packets, mark, [&refused](Status s) {
    if (!s.ok() && refused.empty()) {
      refused = s.error().message();
    }
  });
  if (!refused.empty()) {
    log_.warn("conn=" + tuple.to_string() + " stage=replay refused: " + refused);
  }
  if (!n) {
    return std::move(n).take_error().with_context("replay to " + tuple.to_string());
  }
  return n;
}

Result<std::size_t> Repairer::inject_replay(const FourTuple& tuple,
                                            std::span<const std::vector<std::byte>> packets,
                                            std::uint32_t mark,
                                            const std::function<void(Status)>& refused) {
  Endpoint from = tuple.remote;
  Endpoint to = tuple.local;
  unmap_v4(from);
  unmap_v4(to);
  std::vector<std::vector<std::byte>> ready;
  ready.reserve(packets.size());
  std::size_t nrefused = 0;
  for (const auto& pkt : packets) {
    auto p = prepare_replay(pkt, from, to);
    if (p) {
      ready.push_back(std::move(*p));
    } else if (nrefused++ == 0) {
      refused(std::move(p).take_error());
    }
  }
  // In sequence order: a freeze records what several CPUs dropped into one ring, so a peer whose
  // packets took different receive queues (a sender moving between CPUs, a multi-queue veth) is
  // recorded slightly out of order, and a replayed packet ahead of a hole makes the socket SACK
  // past it - the peer then retransmits everything below (RACK). Stable: duplicates keep their
  // order. Distances from the first packet's sequence number handle the wrap.
  if (ready.size() > 1) {
    auto seq = [](const std::vector<std::byte>& pkt) {
      const auto b0 = std::to_integer<unsigned>(pkt[0]);
      const std::size_t iph = (b0 >> 4) == 4 ? (b0 & 0x0FU) * 4 : 40;
      std::uint32_t v = 0;
      for (std::size_t i = 0; i < 4; ++i) {
        v = (v << 8) | std::to_integer<std::uint32_t>(pkt[iph + 4 + i]);
      }
      return v;
    };
    const std::uint32_t base = seq(ready.front());
    std::stable_sort(ready.begin(), ready.end(), [&](const auto& a, const auto& b) {
      return static_cast<std::int32_t>(seq(a) - base) < static_cast<std::int32_t>(seq(b) - base);
    });
  }
  return inject_packets(sys_, to, ready, mark);
}

void Repairer::release(StagedSocket&& s) {
  if (debug_on() && s.valid()) {
    log_.debug("conn=" + s.tuple().to_string() + " stage=release-staged");
  }
  s.fd_.reset();
}

Result<UniqueFd> Repairer::stage(const TcpSnapshot& snap, const RestoreOptions& opts,
                                 StageState& st) {
  // Error contexts are formatted only when an error is returned.
  auto ctx = [&snap] { return "restore " + snap.tuple.to_string(); };
  if (auto v = validate(snap); !v.ok()) {
    return std::move(v).take_error().with_context(ctx());
  }
  const bool v6 = snap.tuple.local.family == IpFamily::v6;
  // Blocking or not as the saved socket was; restore's own sends do not wait (MSG_DONTWAIT).
  int raw = sys_.socket(v6 ? AF_INET6 : AF_INET,
                        SOCK_STREAM | SOCK_CLOEXEC | (snap.options.nonblocking ? SOCK_NONBLOCK : 0),
                        IPPROTO_TCP);
  if (raw < 0) {
    int err = errno;
    return sys_error(ctx() + ": socket", err);
  }
  // Until repair is switched off, closing this fd is silent: every early return below leaves
  // nothing behind on the wire.
  UniqueFd fd(raw);
  Ops op(sys_, raw);
  auto fail = [&](Error e) { return e.with_context(ctx()); };
#define RENDR_STEP(expr)                   \
  do {                                     \
    auto step_r_ = (expr);                 \
    if (!step_r_.ok()) {                   \
      return fail(std::move(step_r_).take_error()); \
    }                                      \
  } while (0)

  RENDR_STEP(op.set(IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON, "enter repair mode (TCP_REPAIR)"));
  if (v6) {
    RENDR_STEP(op.set(IPPROTO_IPV6, IPV6_V6ONLY, snap.options.v6only ? 1 : 0, "IPV6_V6ONLY"));
  }
  if (opts.transparent) {
    RENDR_STEP(v6 ? op.set(IPPROTO_IPV6, IPV6_TRANSPARENT, 1, "IPV6_TRANSPARENT")
                  : op.set(IPPROTO_IP, IP_TRANSPARENT, 1, "IP_TRANSPARENT"));
  }
  if (snap.options.mark != 0) {
    RENDR_STEP(op.set(SOL_SOCKET, SO_MARK, static_cast<int>(snap.options.mark), "SO_MARK"));
  }
  // Queue refills are charged against sk_sndbuf / sk_rcvbuf; force room for them (CRIU does the
  // same) and put the saved sizes back at the end.
  const bool force_snd = snap.send_queue.size() > 8192;
  const bool force_rcv = !snap.recv_queue.empty();
  auto room = [](std::size_t bytes) {
    return static_cast<int>(std::min<std::size_t>(bytes * 2 + (256U << 10), INT_MAX / 2));
  };
  if (force_snd) {
    RENDR_STEP(op.set(SOL_SOCKET, SO_SNDBUFFORCE, room(snap.send_queue.size()), "SO_SNDBUFFORCE"));
  }
  if (force_rcv) {
    RENDR_STEP(op.set(SOL_SOCKET, SO_RCVBUFFORCE, room(snap.recv_queue.size()), "SO_RCVBUFFORCE"));
  }

  // IP_FREEBIND only when the plain bind says the address is not local here (a VIP not yet
  // configured, a tentative IPv6 address): on a connected socket it matters for nothing else,
  // and the common case - the address is local - saves the call.
  sockaddr_storage ss{};
  socklen_t sl = snap.tuple.local.to_sockaddr(ss);
  if (sys_.bind(raw, reinterpret_cast<sockaddr*>(&ss), sl) != 0) {
    if (errno != EADDRNOTAVAIL || !opts.freebind) {
      return fail(sys_error("bind " + snap.tuple.local.to_string() +
                            (opts.freebind ? "" : " (address not local? try freebind)")));
    }
    RENDR_STEP(v6 ? op.set(IPPROTO_IPV6, IPV6_FREEBIND, 1, "IPV6_FREEBIND")
                  : op.set(IPPROTO_IP, IP_FREEBIND, 1, "IP_FREEBIND"));
    if (sys_.bind(raw, reinterpret_cast<sockaddr*>(&ss), sl) != 0) {
      return fail(sys_error("bind " + snap.tuple.local.to_string() + " (with freebind)"));
    }
  }
  RENDR_STEP(op.select_queue(TCP_RECV_QUEUE));
  RENDR_STEP(op.set(IPPROTO_TCP, TCP_QUEUE_SEQ, static_cast<int>(snap.recv_seq), "set recv seq"));
  RENDR_STEP(op.select_queue(TCP_SEND_QUEUE));
  RENDR_STEP(op.set(IPPROTO_TCP, TCP_QUEUE_SEQ, static_cast<int>(snap.send_seq), "set send seq"));
  // The selected repair queue only matters to data sends/peeks and TCP_QUEUE_SEQ: connect
  // (tcp_connect goes straight to tcp_finish_connect in repair mode), TCP_REPAIR_OPTIONS,
  // TCP_TIMESTAMP and TCP_REPAIR_WINDOW transmit nothing and ignore it. So it stays selected until
  // the read-back, which starts with it; TCP_NO_QUEUE is selected before anything can transmit.

  // connect() computes the send MSS from the clamp in force at that moment - the kernel's
  // default of 536 unless TCP_MAXSEG is set - and TCP_REPAIR_OPTIONS later changes only the clamp,
  // so the restored socket sent 524-byte segments (no GSO) until its next PMTU change. With the
  // saved clamp as TCP_MAXSEG, connect sizes segments right. The kernel takes 88..32767 here
  // (TCP_MIN_MSS..MAX_TCP_WINDOW); TCP_REPAIR_OPTIONS still restores the exact clamp. It stays
  // set: on a connected socket the user MSS only clamps what a later connect() would advertise.
  if (snap.mss_clamp >= 88) {
    RENDR_STEP(op.set(IPPROTO_TCP, TCP_MAXSEG,
                      static_cast<int>(std::min<std::uint32_t>(snap.mss_clamp, 32767)),
                      "TCP_MAXSEG (saved MSS)"));
  }
  sl = snap.tuple.remote.to_sockaddr(ss);
  if (sys_.connect(raw, reinterpret_cast<sockaddr*>(&ss), sl) != 0) {
    int err = errno;
    if (err == EADDRNOTAVAIL) {
      return fail(errno_error("connect " + snap.tuple.remote.to_string() +
                                  ": another socket in this network namespace still owns the "
                                  "4-tuple (release or move the old one first), or the local "
                                  "address cannot be used here",
                              err));
    }
    return fail(sys_error("connect (repair) " + snap.tuple.remote.to_string(), err));
  }

  // Options must be set before anything is really transmitted (kernels >= 5.19 refuse them
  // with EPERM once bytes_sent != 0); queue refills in repair mode do not count as sent.
  tcp_repair_opt ro[4];
  unsigned nro = 0;
  ro[nro++] = {TCPOPT_MAXSEG, snap.mss_clamp};
  if (snap.opt_wscale) {
    ro[nro++] = {TCPOPT_WINDOW, static_cast<std::uint32_t>(snap.snd_wscale) |
                                    (static_cast<std::uint32_t>(snap.rcv_wscale) << 16)};
  }
  if (snap.opt_sack) {
    ro[nro++] = {TCPOPT_SACK_PERMITTED, 0};
  }
  if (snap.opt_timestamps) {
    ro[nro++] = {TCPOPT_TIMESTAMP, 0};
  }
  if (sys_.setsockopt(raw, IPPROTO_TCP, TCP_REPAIR_OPTIONS, ro,
                      static_cast<socklen_t>(nro * sizeof(tcp_repair_opt))) != 0) {
    // EPERM here is not the capability (repair mode is on): the kernel takes the options only
    // in ESTABLISHED and before any data was sent.
    return fail(errno == EPERM ? make_error(std::errc::operation_not_permitted,
                                         "TCP_REPAIR_OPTIONS: refused by the kernel (only "
                                         "before any data was sent, in ESTABLISHED)")
                               : sys_error("TCP_REPAIR_OPTIONS"));
  }
  if (snap.opt_timestamps) {
    RENDR_STEP(op.set(IPPROTO_TCP, TCP_TIMESTAMP,
                      static_cast<int>(restored_ts_clock(snap.timestamp)), "TCP_TIMESTAMP"));
  }

  // Unless our FIN is already sent (it must sit behind them), the sent-but-unacked bytes are
  // queued by activate(), which knows more about what the peer holds by then.
  const bool defer_unacked = !snap.fin_sent;
  const std::uint32_t sent_in_repair = defer_unacked ? 0U : snap.send_unacked();
  const auto unacked = std::span(snap.send_queue).first(sent_in_repair);
  if (!snap.recv_queue.empty()) {
    RENDR_STEP(op.select_queue(TCP_RECV_QUEUE));
    RENDR_STEP(op.write_queue(snap.recv_queue, "refill receive queue"));
  }
  if (!unacked.empty()) {
    RENDR_STEP(op.select_queue(TCP_SEND_QUEUE));
    RENDR_STEP(op.write_queue(unacked, "refill send queue (sent, unacked)"));
  }

  const std::uint32_t rcv_nxt_pre_fin =
      snap.recv_seq + static_cast<std::uint32_t>(snap.recv_queue.size());
  const std::uint32_t write_seq_pre_fin = snap.send_seq + sent_in_repair;
  std::uint32_t rcv_wup = rcv_nxt_pre_fin;
  if (snap.has_window) {
    tcp_repair_window w{snap.window.snd_wl1, snap.window.snd_wnd, snap.window.max_window,
                        snap.window.rcv_wnd, snap.window.rcv_wup};
    // The peer's FIN is re-injected later, so rcv_nxt is one short of the saved value now; the
    // kernel refuses rcv_wup beyond rcv_nxt. Keep the right edge, move the left one back.
    auto ahead = static_cast<std::int32_t>(w.rcv_wup - rcv_nxt_pre_fin);
    if (ahead > 0) {
      w.rcv_wup -= static_cast<std::uint32_t>(ahead);
      w.rcv_wnd += static_cast<std::uint32_t>(ahead);
    }
    rcv_wup = w.rcv_wup;
    if (sys_.setsockopt(raw, IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, sizeof w) != 0) {
      return fail(sys_error("TCP_REPAIR_WINDOW"));
    }
  }

  // Read write_seq back before anything can leave this host, on a kernel before 4.18 only: it
  // rewrote write_seq in connect when the tuple was reused from TIME_WAIT. Later kernels leave
  // it alone in repair mode (tcp_twsk_unique, tcp_v4/v6_connect check tp->repair), and every
  // refill send() above was checked for what it took. rcv_nxt is not read back: connect keeps
  // it in repair mode on every kernel that has TCP_REPAIR. bind, connect and TCP_REPAIR_WINDOW
  // either fail or set exactly what they were given.
  if (readback_write_seq()) {
    auto ws = op.queue_seq(TCP_SEND_QUEUE);
    if (!ws) {
      return fail(unreadable("restore validation: cannot read sequences", ws));
    }
    if (*ws != write_seq_pre_fin) {
      return fail(mismatch("write_seq", *ws, write_seq_pre_fin));
    }
  }

  // FIN reconstruction. Our FIN: shutdown() with the send queue selected queues it as already
  // transmitted. The peer's FIN: forged from the peer's address into the local stack.
  auto our_fin_in_repair = [&]() -> Status {
    RENDR_TRY(op.select_queue(TCP_SEND_QUEUE));
    if (sys_.shutdown(raw, SHUT_WR) != 0) {
      return sys_error("shutdown(SHUT_WR) to rebuild our FIN");
    }
    return op.select_queue(TCP_NO_QUEUE);
  };
  if (snap.fin_sent && snap.state != TcpState::last_ack) {
    RENDR_STEP(our_fin_in_repair());
  }
  if (snap.state == TcpState::fin_wait2) {
    ack_our_fin(raw, snap, rcv_nxt_pre_fin, opts.inject_mark);
  }
  if (snap.peer_fin) {
    ForgedSegment fin;
    fin.from = snap.tuple.remote;
    fin.to = snap.tuple.local;
    unmap_v4(fin.from);
    unmap_v4(fin.to);
    fin.seq = rcv_nxt_pre_fin;
    fin.ack = snap.send_seq;
    std::uint32_t wnd = snap.has_window ? snap.window.snd_wnd >> snap.snd_wscale : 0xFFFF;
    fin.window = static_cast<std::uint16_t>(std::min<std::uint32_t>(wnd, 0xFFFF));
    fin.fin = true;
    RENDR_STEP(inject_segment(sys_, fin, opts.inject_mark));
    // The forged FIN is processed in softirq context; wait (bounded) until the socket saw it.
    bool seen = false;
    const std::uint64_t deadline = now_ns() + 200'000'000ULL;
    while (!seen && now_ns() < deadline) {
      auto rn = op.queue_seq(TCP_RECV_QUEUE);
      seen = rn && *rn == rcv_nxt_pre_fin + 1;
      if (!seen) {
        pause_us(50);
      }
    }
    RENDR_STEP(op.select_queue(TCP_NO_QUEUE));
    if (!seen) {
      return fail(make_error(std::errc::timed_out,
                          "restore: the re-injected peer FIN was not accepted within 200 ms (did a "
                          "firewall or freeze drop it?)"));
    }
  }
  if (snap.fin_sent && snap.state == TcpState::last_ack) {
    RENDR_STEP(our_fin_in_repair());
  }

  st.v6 = v6;
  st.force_snd = force_snd;
  st.force_rcv = force_rcv;
  st.rcv_wup = rcv_wup;
  st.sent_in_repair = sent_in_repair;
  st.unacked_deferred = defer_unacked && snap.send_unacked() > 0;
#undef RENDR_STEP
  return fd;
}

void Repairer::ack_our_fin(int fd, const TcpSnapshot& snap, std::uint32_t rcv_nxt,
                           std::uint32_t mark) {
  // The FIN rebuilt above is queued as sent but unacknowledged (FIN_WAIT1); the peer had already
  // acknowledged it. Feed the socket that ACK so it is FIN_WAIT2 at once: otherwise it
  // retransmitted the FIN and reached FIN_WAIT2 only with the peer's answer. Best effort (needs
  // CAP_NET_RAW): without it the connection still closes correctly, a little later.
  ForgedSegment ack;
  ack.from = snap.tuple.remote;
  ack.to = snap.tuple.local;
  unmap_v4(ack.from);
  unmap_v4(ack.to);
  ack.seq = rcv_nxt;
  ack.ack = snap.send_seq + 1;  // the send queue is empty: the FIN is all that was unacked
  const std::uint32_t wnd = snap.has_window ? snap.window.snd_wnd >> snap.snd_wscale : 0xFFFF;
  ack.window = static_cast<std::uint16_t>(std::min<std::uint32_t>(wnd, 0xFFFF));
  auto sent = kick(fd, ack, mark);
  bool seen = false;
  if (sent.ok()) {
    Ops op(sys_, fd);
    const std::uint64_t deadline = now_ns() + 200'000'000ULL;
    while (!seen && now_ns() < deadline) {
      auto ti = op.info();
      seen = ti && ti->tcpi_state == TCP_FIN_WAIT2;
      if (!seen) {
        pause_us(50);
      }
    }
  }
  if (!seen) {
    log_.warn("conn=" + snap.tuple.to_string() + " stage=restore FIN_WAIT2 restored as FIN_WAIT1 " +
              (sent.ok() ? std::string("(the forged ACK of our FIN was not taken within 200 ms)")
                         : "(" + sent.error().message() + ")"));
  }
}

Result<UniqueFd> Repairer::activate_staged(const TcpSnapshot& snap, const RestoreOptions& opts,
                                           const StageState& st, UniqueFd fd,
                                           std::optional<PeerAck> peer_acked,
                                           std::span<const std::vector<std::byte>> replay) {
  auto ctx = [&snap] { return "restore " + snap.tuple.to_string(); };
  const int raw = fd.get();
  Ops op(sys_, raw);
  const bool v6 = st.v6;
  const bool force_snd = st.force_snd;
  const bool force_rcv = st.force_rcv;
  const std::uint32_t rcv_wup = st.rcv_wup;
  // Deferred sent-but-unacked bytes: those the peer is known to hold go in as transmitted, the
  // rest is sent again below as fresh data (the freeze dropped it or its ACK is still coming).
  std::uint32_t in_repair = st.sent_in_repair;
  if (st.unacked_deferred) {
    const std::uint32_t unacked = snap.send_unacked();
    std::uint32_t held = unacked;
    if (peer_acked) {
      auto ahead = static_cast<std::int32_t>(peer_acked->ack - snap.send_seq);
      held = ahead <= 0 ? 0U : std::min<std::uint32_t>(static_cast<std::uint32_t>(ahead), unacked);
    }
    if (held > 0) {
      auto q = op.select_queue(TCP_SEND_QUEUE);
      if (q.ok()) {
        q = op.write_queue(std::span(snap.send_queue).first(held),
                           "refill send queue (sent, acknowledged by the peer)");
      }
      if (q.ok()) {
        q = op.select_queue(TCP_NO_QUEUE);
      }
      if (!q.ok()) {
        return std::move(q).take_error().with_context(ctx());
      }
    }
    in_repair = held;
  }
  if (peer_acked && !snap.fin_sent && snap.has_window && peer_ack_in_range(snap, *peer_acked)) {
    if (auto w = set_peer_window(op, snap, *peer_acked); !w.ok()) {
      return std::move(w).take_error().with_context(ctx());
    }
  }
  const auto unsent = std::span(snap.send_queue).subspan(in_repair);
  // Leave repair mode. From here on the socket is live; failures are reported but the
  // connection is not torn down.
  if (auto r = op.set(IPPROTO_TCP, TCP_REPAIR,
                      opts.window_probe ? TCP_REPAIR_OFF : TCP_REPAIR_OFF_NO_WP,
                      "leave repair mode");
      !r.ok()) {
    return std::move(r).take_error().with_context(ctx());
  }

  const auto& o = snap.options;
  std::string warnings;
  auto soft = [&](Status s) {
    if (!s.ok()) {
      warnings += (warnings.empty() ? "" : "; ") + s.error().message();
    }
  };
  // Leaving repair mode cleared SO_REUSEADDR (see checkpoint()).
  if (o.reuseaddr) {
    soft(op.set(SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR"));
  }
  // The socket is fresh, so options still at the kernel's initial value (Nagle on, no cork,
  // no keepalive, no user timeout) need no syscall: writing that value again is a no-op.
  // Nagle must be in its final state before the unsent bytes are pushed.
  if (o.nodelay) {
    soft(op.set(IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY"));
  }
  std::size_t off = 0;
  const std::uint64_t push_deadline = now_ns() + 2'000'000'000ULL;
  while (off < unsent.size()) {
    ssize_t w =
        sys_.send(raw, unsent.data() + off, unsent.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      off += static_cast<std::size_t>(w);
      continue;
    }
    if (w < 0 && errno == EAGAIN && now_ns() < push_deadline) {
      pollfd p{raw, POLLOUT, 0};
      (void)::poll(&p, 1, 10);
      continue;
    }
    const std::string what = ctx() + ": push unsent bytes (" +
                             std::to_string(unsent.size() - off) +
                             " left); the restored connection is live but incomplete";
    if (w < 0 && errno != EAGAIN) {
      return errno_error(what, errno);
    }
    return make_error(std::errc::resource_unavailable_try_again,
                   what + " (no room in the send buffer for 2 s)");
  }
  if (snap.fin_queued && !snap.fin_sent) {
    if (sys_.shutdown(raw, SHUT_WR) != 0) {
      int err = errno;
      return errno_error(ctx() + ": shutdown(SHUT_WR) after pushing unsent bytes", err);
    }
  }
  // Uncorking pushes pending frames: only a no-op when nothing was queued for transmission.
  if (o.cork || !unsent.empty() || (snap.fin_queued && !snap.fin_sent)) {
    soft(op.set(IPPROTO_TCP, TCP_CORK, o.cork ? 1 : 0, "TCP_CORK"));
  }
  if (o.keepalive) {
    soft(op.set(SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE"));
  }
  // Keepalive timing, TTL and congestion control report the netns default (a sysctl) when the
  // application never set them, so the saved values are usually that default: set only what
  // differs from a fresh socket in this netns (read once per netns), or every non-zero value
  // when that cannot be told (no SO_NETNS_COOKIE).
  std::optional<std::uint64_t> netns = opts.netns_cookie;
  bool netns_read = netns.has_value();
  auto cookie = [&] {
    if (!netns_read) {
      netns = netns_cookie(raw);
      netns_read = true;
    }
    return netns;
  };
  const OptionDefaults* def = nullptr;
  if (o.keepidle != 0 || o.keepintvl != 0 || o.keepcnt != 0 || o.ttl != 0 ||
      !o.congestion.empty()) {
    def = option_defaults(cookie(), v6);
  }
  auto differs = [&](std::uint32_t v, std::uint32_t OptionDefaults::*field) {
    return v != 0 && (def == nullptr || v != def->*field);
  };
  if (differs(o.keepidle, &OptionDefaults::keepidle)) {
    soft(op.set(IPPROTO_TCP, TCP_KEEPIDLE, static_cast<int>(o.keepidle), "TCP_KEEPIDLE"));
  }
  if (differs(o.keepintvl, &OptionDefaults::keepintvl)) {
    soft(op.set(IPPROTO_TCP, TCP_KEEPINTVL, static_cast<int>(o.keepintvl), "TCP_KEEPINTVL"));
  }
  if (differs(o.keepcnt, &OptionDefaults::keepcnt)) {
    soft(op.set(IPPROTO_TCP, TCP_KEEPCNT, static_cast<int>(o.keepcnt), "TCP_KEEPCNT"));
  }
  if (o.user_timeout != 0) {
    soft(op.set(IPPROTO_TCP, TCP_USER_TIMEOUT, static_cast<int>(o.user_timeout),
                "TCP_USER_TIMEOUT"));
  }
  if (o.notsent_lowat != 0) {
    soft(op.set(IPPROTO_TCP, TCP_NOTSENT_LOWAT, static_cast<int>(o.notsent_lowat),
                "TCP_NOTSENT_LOWAT"));
  }
  if (!o.congestion.empty() && (def == nullptr || o.congestion != def->congestion) &&
      sys_.setsockopt(raw, IPPROTO_TCP, TCP_CONGESTION, o.congestion.data(),
                      static_cast<socklen_t>(o.congestion.size())) != 0) {
    soft(sys_error("TCP_CONGESTION " + o.congestion));
  }
  if (o.linger_on) {
    linger lg{1, static_cast<int>(o.linger_secs)};
    if (sys_.setsockopt(raw, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) != 0) {
      soft(sys_error("SO_LINGER"));
    }
  }
  if (o.tos != 0) {
    soft(v6 ? op.set(IPPROTO_IPV6, IPV6_TCLASS, static_cast<int>(o.tos), "IPV6_TCLASS")
            : op.set(IPPROTO_IP, IP_TOS, static_cast<int>(o.tos), "IP_TOS"));
  }
  if (differs(o.ttl, &OptionDefaults::ttl)) {
    soft(v6 ? op.set(IPPROTO_IPV6, IPV6_UNICAST_HOPS, static_cast<int>(o.ttl), "IPV6_UNICAST_HOPS")
            : op.set(IPPROTO_IP, IP_TTL, static_cast<int>(o.ttl), "IP_TTL"));
  }
  // getsockopt reports the doubled value; setsockopt doubles what it is given.
  if (force_snd && o.sndbuf != 0) {
    soft(op.set(SOL_SOCKET, SO_SNDBUFFORCE, static_cast<int>(o.sndbuf / 2), "SO_SNDBUF"));
  }
  if (force_rcv && o.rcvbuf != 0) {
    soft(op.set(SOL_SOCKET, SO_RCVBUFFORCE, static_cast<int>(o.rcvbuf / 2), "SO_RCVBUF"));
  }
  // Repay delayed-ACK debt: a segment below rcv_wup is out of window, so the socket answers at
  // once with a duplicate ACK carrying rcv_nxt, which acknowledges what the peer sent before the
  // freeze (a Nagle-blocked peer would otherwise wait for its RTO, >= 200 ms). Only when there is
  // debt: every segment a socket sends moves rcv_wup to rcv_nxt, so a saved rcv_wup equal to the
  // saved rcv_nxt says the old socket's last segment acknowledged everything it had received.
  const std::uint32_t saved_rcv_nxt = snap.recv_seq +
                                      static_cast<std::uint32_t>(snap.recv_queue.size()) +
                                      (snap.peer_fin ? 1U : 0U);
  // An ACK the freeze dropped is not seen that way: the caller says so (sent_into_freeze).
  const bool ack_owed =
      opts.sent_into_freeze || !snap.has_window || snap.window.rcv_wup != saved_rcv_nxt;
  if (opts.ack_kick && ack_owed && snap.state != TcpState::last_ack &&
      snap.state != TcpState::closing) {
    ForgedSegment kick;
    kick.from = snap.tuple.remote;
    kick.to = snap.tuple.local;
    unmap_v4(kick.from);
    unmap_v4(kick.to);
    kick.seq = rcv_wup - 1;
    kick.ack = snap.send_seq;
    kick.window = 0;
    if (auto k = this->kick(raw, kick, opts.inject_mark, cookie()); !k.ok()) {
      soft(std::move(k).take_error().with_context("ACK kick skipped"));
    }
  }
  // Leaving repair mode the kernel probes the peer's window (which the peer answers with its
  // ACK and window) only in ESTABLISHED (tcp_send_window_probe). A CLOSE_WAIT socket whose saved
  // window is stale - the peer opened it while the freeze dropped its window update, and a
  // half-closed peer sends nothing else - waited for its persist timer: 200 ms and more. Ask
  // the peer as ask_peer_ack does (one byte it already has: answered at once, not rate-limited).
  if (opts.window_probe && snap.peer_fin && !snap.fin_sent) {
    if (auto k = this->kick(raw, peer_probe(snap), opts.inject_mark, cookie()); !k.ok()) {
      soft(std::move(k).take_error().with_context("CLOSE_WAIT window probe skipped"));
    }
  }
  // Replay what the peer sent while the connection was frozen (the freeze dropped it): the
  // socket takes it as if it had just arrived, instead of waiting for the peer's retransmission.
  if (!replay.empty()) {
    if (auto n = inject_replay(snap.tuple, replay, opts.inject_mark, soft); !n) {
      soft(std::move(n).take_error().with_context("replay skipped"));
    }
  }
  if (!warnings.empty()) {
    log_.warn("conn=" + snap.tuple.to_string() + " stage=restore warnings: " + warnings);
  }
  if (debug_on()) {
    log_.debug("conn=" + snap.tuple.to_string() + " stage=restore state=" +
               std::string(to_string(snap.state)) + " ok");
  }
  return fd;
}

}  // namespace rendr::repair
