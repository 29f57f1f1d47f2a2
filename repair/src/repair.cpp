// SPDX-License-Identifier: Apache-2.0
// Checkpoint/restore of kernel TCP sockets. The recipes are in <rendr/repair/repair.hpp>; the
// comments here explain kernel quirks and ordering constraints.
#include <rendr/repair/repair.hpp>

#include "inject.hpp"

#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <time.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <span>
#include <string>

namespace rendr::repair {
namespace {

constexpr const char* kCapHint =
    "TCP_REPAIR needs CAP_NET_ADMIN in the socket's network namespace and this process lacks it; "
    "run as root or grant CAP_NET_ADMIN, or use the userstack fallback (rendr's user-space TCP "
    "over TUN, no CAP_NET_ADMIN needed)";

Error sys_error(const std::string& step, int err = errno) {
  if (err == EPERM) {
    return errno_error(step + ": " + kCapHint, err);
  }
  return errno_error(step, err);
}

// Refusals below are conditions, not failed calls: their message says the cause and carries no
// errno text (an appended "Input/output error" or "Invalid argument" would only mislead).
Error mismatch(const std::string& what, std::uint64_t have, std::uint64_t want) {
  return refusal(std::errc::io_error, "restore validation: " + what + " is " +
                                          std::to_string(have) + ", snapshot says " +
                                          std::to_string(want));
}

// unreadable: a read-back that failed (EIO refusal naming |what| and the underlying error).
template <typename... R>
Error unreadable(const std::string& what, const R&... reads) {
  std::string why;
  ((why.empty() && !reads.ok() ? why = reads.error().message() : why), ...);
  return refusal(std::errc::io_error, what + " (" + why + ")");
}

class Ops {
 public:
  Ops(Sys& sys, int fd) : sys_(sys), fd_(fd) {}

  Status set(int level, int name, int v, const char* what) {
    if (sys_.setsockopt(fd_, level, name, &v, sizeof v) != 0) {
      return sys_error(what);
    }
    return {};
  }
  Result<int> get(int level, int name, const char* what) {
    int v = 0;
    socklen_t len = sizeof v;
    if (sys_.getsockopt(fd_, level, name, &v, &len) != 0) {
      return sys_error(what);
    }
    return v;
  }
  Result<int> ioctl(unsigned long req, const char* what) {
    int v = 0;
    if (sys_.ioctl_int(fd_, req, &v) != 0) {
      return sys_error(what);
    }
    return v;
  }
  // select_queue sets TCP_REPAIR_QUEUE, skipping the syscall when |q| is already selected
  // through this Ops (the option is a plain assignment in the kernel, so a repeat is a no-op).
  Status select_queue(int q) {
    if (q == queue_) {
      return {};
    }
    auto st = set(IPPROTO_TCP, TCP_REPAIR_QUEUE, q, "TCP_REPAIR_QUEUE");
    queue_ = st.ok() ? q : -1;
    return st;
  }
  [[nodiscard]] int selected_queue() const { return queue_; }
  Result<std::uint32_t> queue_seq(int q) {
    RENDR_TRY(select_queue(q));
    auto v = get(IPPROTO_TCP, TCP_QUEUE_SEQ, "get TCP_QUEUE_SEQ");
    if (!v) {
      return std::move(v).take_error();
    }
    return static_cast<std::uint32_t>(*v);
  }
  Result<tcp_info> info() {
    tcp_info ti{};
    socklen_t len = sizeof ti;
    if (sys_.getsockopt(fd_, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) {
      return sys_error("TCP_INFO");
    }
    return ti;
  }
  Result<Endpoint> name(bool peer) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    auto* sa = reinterpret_cast<sockaddr*>(&ss);
    int rc = peer ? sys_.getpeername(fd_, sa, &len) : sys_.getsockname(fd_, sa, &len);
    if (rc != 0) {
      return sys_error(peer ? "getpeername (is the socket connected?)" : "getsockname");
    }
    return Endpoint::from_sockaddr(sa, len);
  }
  // peek reads up to |max| bytes of the selected queue without consuming them.
  Result<std::vector<std::byte>> peek(std::size_t max) {
    if (max == 1) {
      // The common idle case (queue reported empty, peeking one byte to prove it): no heap
      // buffer unless that byte exists.
      std::byte b{};
      ssize_t n = sys_.recv(fd_, &b, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n < 0 && errno != EAGAIN) {
        return sys_error("peek queue");
      }
      return n > 0 ? std::vector<std::byte>{b} : std::vector<std::byte>{};
    }
    std::vector<std::byte> buf(max);
    if (max == 0) {
      return buf;
    }
    ssize_t n = sys_.recv(fd_, buf.data(), max, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EAGAIN) {
        n = 0;
      } else {
        return sys_error("peek queue");
      }
    }
    buf.resize(static_cast<std::size_t>(n));
    return buf;
  }
  // write_queue feeds |data| into the selected queue in repair mode, halving the chunk on
  // memory pressure (the kernel allocates one linear skb per call).
  Status write_queue(std::span<const std::byte> data, const char* what) {
    std::size_t chunk = 1U << 20;
    std::size_t off = 0;
    while (off < data.size()) {
      std::size_t n = std::min(chunk, data.size() - off);
      ssize_t w = sys_.send(fd_, data.data() + off, n, 0);
      if (w < 0) {
        if ((errno == ENOMEM || errno == ENOBUFS || errno == EAGAIN) && chunk > 1024) {
          chunk /= 2;
          continue;
        }
        return sys_error(what);
      }
      off += static_cast<std::size_t>(w);
    }
    return {};
  }

  Sys& sys_;
  int fd_;
  int queue_ = -1;  // TCP_REPAIR_QUEUE last set through this Ops; -1 = unknown
};

bool ep_equal(const Endpoint& a, const Endpoint& b) {
  return a.family == b.family && a.addr == b.addr && a.port == b.port;
}

std::uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

void pause_us(long us) {
  timespec ts{0, us * 1000};
  nanosleep(&ts, nullptr);
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

// capture reads the whole state of a socket that is already in repair mode.
Result<TcpSnapshot> capture(Sys& sys, int fd, const FourTuple& tuple) {
  Ops op(sys, fd);
  TcpSnapshot s;
  s.tuple = tuple;
  auto ti = op.info();
  if (!ti) {
    return std::move(ti).take_error();
  }
  s.state = static_cast<TcpState>(ti->tcpi_state);
  if (!snapshot_state_supported(s.state)) {
    return refusal(std::errc::not_supported,
                   "checkpoint: TCP state " + std::string(to_string(s.state)) +
                       " is not supported (supported: ESTABLISHED, FIN_WAIT1, FIN_WAIT2, "
                       "CLOSE_WAIT, LAST_ACK, CLOSING)");
  }
  s.opt_sack = (ti->tcpi_options & TCPI_OPT_SACK) != 0;
  s.opt_timestamps = (ti->tcpi_options & TCPI_OPT_TIMESTAMPS) != 0;
  s.opt_wscale = (ti->tcpi_options & TCPI_OPT_WSCALE) != 0;
  if (s.opt_wscale) {
    s.snd_wscale = ti->tcpi_snd_wscale;
    s.rcv_wscale = ti->tcpi_rcv_wscale;
  }
  s.fin_queued = s.state == TcpState::fin_wait1 || s.state == TcpState::fin_wait2 ||
                 s.state == TcpState::closing || s.state == TcpState::last_ack;
  s.peer_fin = s.state == TcpState::close_wait || s.state == TcpState::last_ack ||
               s.state == TcpState::closing;
  const bool fin_acked = s.state == TcpState::fin_wait2;

  // Queues. Repeat until two consecutive reads agree: a change means packets are still being
  // processed (traffic not frozen, or frozen only just now - CRIU saw SIOCINQ lag the peek).
  bool stable = false;
  for (int attempt = 0; attempt < 8 && !stable; ++attempt) {
    auto rcv_nxt = op.queue_seq(TCP_RECV_QUEUE);
    if (!rcv_nxt) {
      return std::move(rcv_nxt).take_error();
    }
    auto inq = op.ioctl(SIOCINQ, "SIOCINQ");
    if (!inq) {
      return std::move(inq).take_error();
    }
    auto rq = op.peek(static_cast<std::size_t>(*inq) + 1);
    if (!rq) {
      return std::move(rq).take_error();
    }
    auto write_seq = op.queue_seq(TCP_SEND_QUEUE);
    if (!write_seq) {
      return std::move(write_seq).take_error();
    }
    auto outq = op.ioctl(SIOCOUTQ, "SIOCOUTQ");
    auto unsq = op.ioctl(SIOCOUTQNSD, "SIOCOUTQNSD");
    if (!outq || !unsq) {
      return (!outq ? outq : unsq).error();
    }
    auto sq = op.peek(static_cast<std::size_t>(*outq) + 1);
    if (!sq) {
      return std::move(sq).take_error();
    }
    // Re-read the send side first, while its queue is still selected (one select fewer); the
    // receive side's bracket [rcv_nxt, rcv_nxt2] still spans every other read.
    auto write_seq2 = op.queue_seq(TCP_SEND_QUEUE);
    auto outq2 = op.ioctl(SIOCOUTQ, "SIOCOUTQ");
    auto rcv_nxt2 = op.queue_seq(TCP_RECV_QUEUE);
    RENDR_TRY(op.select_queue(TCP_NO_QUEUE));
    if (!rcv_nxt2 || !write_seq2 || !outq2) {
      return unreadable("checkpoint: re-reading queue state failed", write_seq2, outq2, rcv_nxt2);
    }
    // Our FIN occupies one sequence number in write_seq and (until acked) in SIOCOUTQ.
    const std::uint32_t fin_in_outq = (s.fin_queued && !fin_acked) ? 1 : 0;
    const bool consistent =
        *rcv_nxt == *rcv_nxt2 && *write_seq == *write_seq2 && *outq == *outq2 &&
        rq->size() <= static_cast<std::size_t>(*inq) &&
        static_cast<std::size_t>(*outq) == sq->size() + fin_in_outq;
    if (!consistent) {
      pause_us(200);
      continue;
    }
    stable = true;
    s.recv_queue = std::move(*rq);
    s.send_queue = std::move(*sq);
    auto unsent = static_cast<std::uint32_t>(*unsq);
    if (s.fin_queued && unsent > 0) {
      // FIN still queued behind unsent data: it has not been transmitted.
      s.send_unsent = unsent - 1;
      s.fin_sent = false;
    } else {
      s.send_unsent = unsent;
      s.fin_sent = s.fin_queued;
    }
    if (s.send_unsent > s.send_queue.size()) {
      return refusal(std::errc::io_error, "checkpoint: SIOCOUTQNSD " + std::to_string(unsent) +
                                              " exceeds the send queue");
    }
    s.send_seq = *write_seq - (s.fin_queued ? 1U : 0U) -
                 static_cast<std::uint32_t>(s.send_queue.size());
    s.recv_seq = *rcv_nxt - (s.peer_fin ? 1U : 0U) - static_cast<std::uint32_t>(s.recv_queue.size());
  }
  if (!stable) {
    return refusal(std::errc::resource_unavailable_try_again,
                   "checkpoint: socket queues kept changing; freeze the flow's traffic before "
                   "checkpointing");
  }

  auto mss = op.get(IPPROTO_TCP, TCP_MAXSEG, "TCP_MAXSEG");
  if (!mss) {
    return std::move(mss).take_error();
  }
  s.mss_clamp = static_cast<std::uint32_t>(*mss);
  if (s.opt_timestamps) {
    auto ts = op.get(IPPROTO_TCP, TCP_TIMESTAMP, "TCP_TIMESTAMP");
    if (!ts) {
      return std::move(ts).take_error();
    }
    s.timestamp = static_cast<std::uint32_t>(*ts);
  }
  tcp_repair_window w{};
  socklen_t wl = sizeof w;
  if (sys.getsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &w, &wl) == 0) {
    s.has_window = true;
    s.window = TcpWindow{w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd, w.rcv_wup};
  } else if (errno != ENOPROTOOPT) {
    return sys_error("TCP_REPAIR_WINDOW");
  }

  // Socket options.
  auto& o = s.options;
  struct IntOpt {
    int level;
    int name;
    const char* what;
    std::uint32_t* out;
    bool* flag;
  };
  const bool v6 = tuple.local.family == IpFamily::v6;
  std::uint32_t nodelay = 0;
  std::uint32_t cork = 0;
  std::uint32_t keepalive = 0;
  std::uint32_t v6only = 0;
  IntOpt opts[] = {
      {IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY", &nodelay, nullptr},
      {IPPROTO_TCP, TCP_CORK, "TCP_CORK", &cork, nullptr},
      {SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE", &keepalive, nullptr},
      {IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE", &o.keepidle, nullptr},
      {IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL", &o.keepintvl, nullptr},
      {IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT", &o.keepcnt, nullptr},
      {IPPROTO_TCP, TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", &o.user_timeout, nullptr},
      {IPPROTO_TCP, TCP_NOTSENT_LOWAT, "TCP_NOTSENT_LOWAT", &o.notsent_lowat, nullptr},
      {SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF", &o.sndbuf, nullptr},
      {SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF", &o.rcvbuf, nullptr},
      {SOL_SOCKET, SO_MARK, "SO_MARK", &o.mark, nullptr},
      {v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_TCLASS : IP_TOS, v6 ? "IPV6_TCLASS" : "IP_TOS",
       &o.tos, nullptr},
      {v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_UNICAST_HOPS : IP_TTL,
       v6 ? "IPV6_UNICAST_HOPS" : "IP_TTL", &o.ttl, nullptr},
  };
  for (auto& io : opts) {
    auto v = op.get(io.level, io.name, io.what);
    if (!v) {
      return std::move(v).take_error().with_context("checkpoint: read socket option");
    }
    *io.out = static_cast<std::uint32_t>(*v);
  }
  if (v6) {
    auto v = op.get(IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY");
    if (!v) {
      return std::move(v).take_error();
    }
    v6only = static_cast<std::uint32_t>(*v);
  }
  o.nodelay = nodelay != 0;
  o.cork = cork != 0;
  o.keepalive = keepalive != 0;
  o.v6only = v6only != 0;
  char cc[16] = {};
  socklen_t cl = sizeof cc;
  if (sys.getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, &cl) != 0) {
    return sys_error("TCP_CONGESTION");
  }
  o.congestion.assign(cc, strnlen(cc, std::min<std::size_t>(cl, sizeof cc)));
  linger lg{};
  socklen_t ll = sizeof lg;
  if (sys.getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &ll) != 0) {
    return sys_error("SO_LINGER");
  }
  o.linger_on = lg.l_onoff != 0;
  o.linger_secs = static_cast<std::uint32_t>(lg.l_linger);
  int fl = sys.get_fl(fd);
  if (fl < 0) {
    return sys_error("fcntl(F_GETFL)");
  }
  o.nonblocking = (fl & O_NONBLOCK) != 0;

  if (auto v = validate(s); !v.ok()) {
    return std::move(v).take_error().with_context("checkpoint produced an invalid snapshot");
  }
  return s;
}

// inject_endpoints maps IPv4-mapped IPv6 tuples to plain IPv4 for raw injection.
void unmap_v4(Endpoint& e) {
  static constexpr std::uint8_t kPrefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
  if (e.family == IpFamily::v6 && std::memcmp(e.addr.data(), kPrefix, 12) == 0) {
    std::array<std::uint8_t, 16> a{};
    std::memcpy(a.data(), e.addr.data() + 12, 4);
    e.addr = a;
    e.family = IpFamily::v4;
  }
}

}  // namespace

Repairer::Repairer(Sys& sys, LogSink sink)
    : sys_(sys), custom_sink_(static_cast<bool>(sink)) {
  log_ = Logger(std::move(sink));
}
Repairer::Repairer(const Repairer& other)
    : sys_(other.sys_), log_(other.log_), custom_sink_(other.custom_sink_) {}
Repairer::~Repairer() = default;

bool Repairer::debug_on() const { return custom_sink_ || log_level() >= LogLevel::debug; }

Status Repairer::kick(int restored, const ForgedSegment& seg, std::uint32_t mark) {
  // Reuse a cached raw socket only when we can tell it reaches the restored socket's netns
  // (SO_NETNS_COOKIE, Linux 5.14+); otherwise inject from a one-shot socket as before.
  std::uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  if (sys_.getsockopt(restored, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0 ||
      len != sizeof cookie) {
    return inject_segment(sys_, seg, mark);
  }
  if (!inject_) {
    inject_ = std::make_unique<InjectCache>(sys_);
  }
  return inject_->inject(seg, mark, cookie);
}

Result<Checkpoint> Repairer::checkpoint(int fd) {
  Ops op(sys_, fd);
  auto type = op.get(SOL_SOCKET, SO_TYPE, "checkpoint: SO_TYPE");
  if (!type) {
    return std::move(type).take_error();
  }
  auto proto = op.get(SOL_SOCKET, SO_PROTOCOL, "checkpoint: SO_PROTOCOL");
  if (!proto) {
    return std::move(proto).take_error();
  }
  if (*type != SOCK_STREAM || *proto != IPPROTO_TCP) {
    return refusal(std::errc::protocol_not_supported,
                   "checkpoint: fd " + std::to_string(fd) + " is not a TCP socket");
  }
  auto local = op.name(false);
  auto remote = op.name(true);
  if (!local || !remote) {
    return (!local ? local : remote).error().with_context("checkpoint: not a connected socket");
  }
  FourTuple tuple{*local, *remote};
  // Error contexts are formatted only when an error is returned.
  auto ctx = [&tuple] { return "checkpoint " + tuple.to_string(); };
  auto ti = op.info();
  if (!ti) {
    return std::move(ti).take_error().with_context(ctx());
  }
  auto st = static_cast<TcpState>(ti->tcpi_state);
  if (!snapshot_state_supported(st)) {
    return refusal(std::errc::not_supported,
                   ctx() + ": TCP state " + std::string(to_string(st)) +
                       " is not supported (supported: ESTABLISHED, FIN_WAIT1, FIN_WAIT2, "
                       "CLOSE_WAIT, LAST_ACK, CLOSING)");
  }
  // Repair mode overrides SO_REUSEADDR (reads 2 while on) and leaving it clears the option, so
  // it is read now and set again by thaw() or restore: otherwise the connection's TIME_WAIT
  // blocked a server restarting on its port for a minute ("Address already in use").
  auto reuse = op.get(SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR");
  if (!reuse) {
    return std::move(reuse).take_error().with_context(ctx());
  }
  if (auto r = op.set(IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON, "enter repair mode (TCP_REPAIR)");
      !r.ok()) {
    return std::move(r).take_error().with_context(ctx());
  }
  auto thaw_on_error = [&](Error e) -> Error {
    (void)op.set(IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF, "thaw");
    return e.with_context(ctx());
  };
  auto dup = UniqueFd::dup(fd);
  if (!dup) {
    return thaw_on_error(std::move(dup).take_error());
  }
  auto snap = capture(sys_, fd, tuple);
  if (!snap) {
    return thaw_on_error(std::move(snap).take_error());
  }
  snap->options.reuseaddr = *reuse != 0;
  if (debug_on()) {
    log_.debug("conn=" + tuple.to_string() + " stage=checkpoint state=" +
               std::string(to_string(snap->state)) + " sendq=" +
               std::to_string(snap->send_queue.size()) + " unsent=" +
               std::to_string(snap->send_unsent) +
               " recvq=" + std::to_string(snap->recv_queue.size()));
  }
  const bool reuseaddr = snap->options.reuseaddr;
  return Checkpoint{RepairSocket(std::move(*dup), tuple, reuseaddr), std::move(*snap)};
}

Result<UniqueFd> Repairer::restore(const TcpSnapshot& snap, const RestoreOptions& opts) {
  StageState st;
  auto fd = stage(snap, opts, st);
  if (!fd.ok()) {
    return std::move(fd).take_error();
  }
  return activate_staged(snap, opts, st, std::move(fd).value(), std::nullopt, {});
}

namespace {

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
  int raw = sys_.socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
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
  if (opts.freebind) {
    RENDR_STEP(v6 ? op.set(IPPROTO_IPV6, IPV6_FREEBIND, 1, "IPV6_FREEBIND")
                  : op.set(IPPROTO_IP, IP_FREEBIND, 1, "IP_FREEBIND"));
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

  sockaddr_storage ss{};
  socklen_t sl = snap.tuple.local.to_sockaddr(ss);
  if (sys_.bind(raw, reinterpret_cast<sockaddr*>(&ss), sl) != 0) {
    return fail(sys_error("bind " + snap.tuple.local.to_string() +
                          (opts.freebind ? "" : " (address not local? try freebind)")));
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
  // (TCP_MIN_MSS..MAX_TCP_WINDOW); TCP_REPAIR_OPTIONS still restores the exact clamp.
  const bool user_mss = snap.mss_clamp >= 88;
  if (user_mss) {
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
  // The user MSS has done its job; unset it as on the original socket (it also clamps the MSS a
  // later connect on this socket would advertise).
  if (user_mss) {
    RENDR_STEP(op.set(IPPROTO_TCP, TCP_MAXSEG, 0, "TCP_MAXSEG (reset)"));
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
    return fail(errno == EPERM ? refusal(std::errc::operation_not_permitted,
                                         "TCP_REPAIR_OPTIONS: refused by the kernel (only "
                                         "before any data was sent, in ESTABLISHED)")
                               : sys_error("TCP_REPAIR_OPTIONS"));
  }
  if (snap.opt_timestamps) {
    RENDR_STEP(op.set(IPPROTO_TCP, TCP_TIMESTAMP, static_cast<int>(snap.timestamp),
                      "TCP_TIMESTAMP"));
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
    tcp_repair_window back{};
    socklen_t bl = sizeof back;
    if (sys_.getsockopt(raw, IPPROTO_TCP, TCP_REPAIR_WINDOW, &back, &bl) != 0) {
      return fail(sys_error("read back TCP_REPAIR_WINDOW"));
    }
    if (back.snd_wnd != w.snd_wnd || back.rcv_wnd != w.rcv_wnd || back.rcv_wup != w.rcv_wup ||
        back.snd_wl1 != w.snd_wl1 || back.max_window != w.max_window) {
      return fail(mismatch("window (snd_wnd)", back.snd_wnd, w.snd_wnd));
    }
  }

  // Read back and compare before anything can leave this host.
  {
    auto local = op.name(false);
    auto remote = op.name(true);
    if (!local || !remote) {
      return fail(unreadable("restore validation: cannot read the socket addresses", local,
                             remote));
    }
    if (!ep_equal(*local, snap.tuple.local) || !ep_equal(*remote, snap.tuple.remote)) {
      return fail(refusal(std::errc::io_error,
                          "restore validation: socket addresses differ from the snapshot"));
    }
    // Read the still-selected queue first (one select fewer).
    const bool send_first = op.selected_queue() == TCP_SEND_QUEUE;
    auto first = op.queue_seq(send_first ? TCP_SEND_QUEUE : TCP_RECV_QUEUE);
    auto second = op.queue_seq(send_first ? TCP_RECV_QUEUE : TCP_SEND_QUEUE);
    const auto& rn = send_first ? second : first;
    const auto& ws = send_first ? first : second;
    RENDR_STEP(op.select_queue(TCP_NO_QUEUE));
    if (!rn || !ws) {
      return fail(unreadable("restore validation: cannot read sequences", first, second));
    }
    if (*rn != rcv_nxt_pre_fin) {
      return fail(mismatch("rcv_nxt", *rn, rcv_nxt_pre_fin));
    }
    if (*ws != write_seq_pre_fin) {
      return fail(mismatch("write_seq", *ws, write_seq_pre_fin));
    }
    auto inq = op.ioctl(SIOCINQ, "SIOCINQ");
    auto outq = op.ioctl(SIOCOUTQ, "SIOCOUTQ");
    if (!inq || !outq) {
      return fail(unreadable("restore validation: cannot read queue sizes", inq, outq));
    }
    if (static_cast<std::size_t>(*inq) != snap.recv_queue.size()) {
      return fail(mismatch("receive queue length", static_cast<std::uint64_t>(*inq),
                           snap.recv_queue.size()));
    }
    if (static_cast<std::uint32_t>(*outq) != sent_in_repair) {
      return fail(mismatch("send queue length", static_cast<std::uint64_t>(*outq),
                           sent_in_repair));
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
      return fail(refusal(std::errc::timed_out,
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
    ssize_t w = sys_.send(raw, unsent.data() + off, unsent.size() - off, MSG_NOSIGNAL);
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
    return refusal(std::errc::resource_unavailable_try_again,
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
  if (o.keepidle != 0) {
    soft(op.set(IPPROTO_TCP, TCP_KEEPIDLE, static_cast<int>(o.keepidle), "TCP_KEEPIDLE"));
  }
  if (o.keepintvl != 0) {
    soft(op.set(IPPROTO_TCP, TCP_KEEPINTVL, static_cast<int>(o.keepintvl), "TCP_KEEPINTVL"));
  }
  if (o.keepcnt != 0) {
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
  if (!o.congestion.empty() &&
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
  if (o.ttl != 0) {
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
  if (!o.nonblocking) {
    // socket() above opened the file O_RDWR | O_NONBLOCK: no need to read the flags back.
    if (sys_.set_fl(raw, O_RDWR) != 0) {
      soft(sys_error("fcntl clear O_NONBLOCK"));
    }
  }
  // Repay delayed-ACK debt: a segment below rcv_wup is out of window, so the socket answers at
  // once with a duplicate ACK carrying rcv_nxt, which acknowledges what the peer sent before the
  // freeze (a Nagle-blocked peer would otherwise wait for its RTO, >= 200 ms).
  if (opts.ack_kick && snap.state != TcpState::last_ack && snap.state != TcpState::closing) {
    ForgedSegment kick;
    kick.from = snap.tuple.remote;
    kick.to = snap.tuple.local;
    unmap_v4(kick.from);
    unmap_v4(kick.to);
    kick.seq = rcv_wup - 1;
    kick.ack = snap.send_seq;
    kick.window = 0;
    if (auto k = this->kick(raw, kick, opts.inject_mark); !k.ok()) {
      soft(std::move(k).take_error().with_context("ACK kick skipped"));
    }
  }
  // Replay what the peer sent while the connection was frozen (the freeze dropped it): the
  // socket takes it as if it had just arrived, instead of waiting for the peer's retransmission.
  if (!replay.empty()) {
    Endpoint from = snap.tuple.remote;
    Endpoint to = snap.tuple.local;
    unmap_v4(from);
    unmap_v4(to);
    std::vector<std::vector<std::byte>> ready;
    ready.reserve(replay.size());
    std::size_t refused = 0;
    for (const auto& pkt : replay) {
      auto p = prepare_replay(pkt, from, to);
      if (p) {
        ready.push_back(std::move(*p));
      } else if (refused++ == 0) {
        soft(std::move(p).take_error());
      }
    }
    if (auto n = inject_packets(sys_, to, ready, opts.inject_mark); !n) {
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

Result<UniqueFd> Repairer::thaw(RepairSocket&& s) {
  if (!s.valid()) {
    return make_error(std::errc::bad_file_descriptor, "thaw: empty RepairSocket");
  }
  Ops op(sys_, s.fd());
  if (auto r = op.set(IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF, "leave repair mode"); !r.ok()) {
    return std::move(r).take_error().with_context("thaw " + s.tuple().to_string());
  }
  // Leaving repair mode cleared SO_REUSEADDR (see checkpoint()); the socket is live already, so
  // a failure here is a warning.
  if (s.reuseaddr_) {
    if (auto r = op.set(SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR"); !r.ok()) {
      log_.warn("conn=" + s.tuple().to_string() + " stage=thaw " + r.error().message());
    }
  }
  if (debug_on()) {
    log_.debug("conn=" + s.tuple().to_string() + " stage=thaw ok");
  }
  return std::move(s.fd_);
}

void Repairer::release(RepairSocket&& s) {
  // Closing a socket in repair mode is silent: the kernel sends neither FIN nor RST.
  if (debug_on()) {
    log_.debug("conn=" + s.tuple().to_string() + " stage=release");
  }
  s.fd_.reset();
}

Status probe_tcp_repair(Sys& sys) {
  int fd = sys.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) {
    return errno_error("probe tcp_repair: socket");
  }
  int on = TCP_REPAIR_ON;
  int rc = sys.setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &on, sizeof on);
  int err = errno;
  sys.close(fd);
  if (rc != 0) {
    return sys_error("probe tcp_repair: TCP_REPAIR", err);
  }
  return {};
}

}  // namespace rendr::repair
