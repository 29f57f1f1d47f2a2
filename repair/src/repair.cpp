// SPDX-License-Identifier: Apache-2.0
// Checkpoint, thaw and release of kernel TCP sockets (restore is in restore.cpp). The recipes are
// in <rendr/repair/repair.hpp>; the comments here explain kernel quirks and ordering constraints.
#include <rendr/repair/repair.hpp>

#include "inject.hpp"
#include "ops.hpp"

#include <linux/sock_diag.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

namespace rendr::repair {

using detail::Ops;
using detail::pause_us;
using detail::sys_error;
using detail::unreadable;

namespace {

// read_socket_options reads the options a snapshot carries except SO_REUSEADDR (which repair
// mode overrides: checkpoint reads it before entering). 15 calls; they do not change while
// nobody uses the socket, so a migration may read them before its freeze.
Result<TcpSocketOptions> read_socket_options(Sys& sys, int fd, bool v6) {
  Ops op(sys, fd);
  TcpSocketOptions o;
  struct IntOpt {
    int level;
    int name;
    const char* what;
    std::uint32_t* out;
    bool* flag;
  };
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
      {SOL_SOCKET, SO_MARK, "SO_MARK", &o.mark, nullptr},
      {v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_TCLASS : IP_TOS, v6 ? "IPV6_TCLASS" : "IP_TOS",
       &o.tos, nullptr},
      {v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_UNICAST_HOPS : IP_TTL,
       v6 ? "IPV6_UNICAST_HOPS" : "IP_TTL", &o.ttl, nullptr},
  };
  for (auto& io : opts) {
    auto v = op.get(io.level, io.name, io.what);
    if (!v) {
      return std::move(v).take_error();
    }
    *io.out = static_cast<std::uint32_t>(*v);
  }
  // Both buffer sizes in one call (SO_MEMINFO, 4.6+; the same sk_sndbuf / sk_rcvbuf that
  // SO_SNDBUF / SO_RCVBUF report); one call each where the kernel lacks it.
  std::uint32_t mem[SK_MEMINFO_VARS] = {};
  socklen_t ml = sizeof mem;
  const int mrc = sys.getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &ml);
  if (mrc != 0 && errno != ENOPROTOOPT && errno != EINVAL) {
    return sys_error("SO_MEMINFO");
  }
  if (mrc == 0 &&
      ml >= sizeof(std::uint32_t) * (std::max(SK_MEMINFO_SNDBUF, SK_MEMINFO_RCVBUF) + 1)) {
    o.sndbuf = mem[SK_MEMINFO_SNDBUF];
    o.rcvbuf = mem[SK_MEMINFO_RCVBUF];
  } else {
    auto snd = op.get(SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF");
    auto rcv = op.get(SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF");
    if (!snd || !rcv) {
      return (!snd ? snd : rcv).error();
    }
    o.sndbuf = static_cast<std::uint32_t>(*snd);
    o.rcvbuf = static_cast<std::uint32_t>(*rcv);
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

  return o;
}

// capture reads the whole state of a socket that is already in repair mode; |ti| is its TCP_INFO
// as read just before (a supported state). Reading it again would prove nothing: the state of a
// flow that is not frozen can change at any point of the capture, before or after a re-read.
Result<TcpSnapshot> capture(Sys& sys, int fd, const FourTuple& tuple, const tcp_info& info,
                            const TcpSocketOptions* known) {
  Ops op(sys, fd);
  TcpSnapshot s;
  s.tuple = tuple;
  const tcp_info* ti = &info;
  s.state = static_cast<TcpState>(ti->tcpi_state);
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

  // Queues. The send side first: what can change it while the flow is frozen is nothing, and
  // an ACK arriving anyway only frees bytes the snapshot then still carries (the peer drops them
  // as duplicates); an ACK between SIOCOUTQ and the peek shows as a short peek. Then the receive
  // side between two reads of rcv_nxt: data arriving meanwhile (traffic not frozen, or frozen
  // only just now - CRIU saw SIOCINQ lag the peek) moves it, and the whole read is repeated.
  // Empty queues are not peeked: the lengths already say so, and the rcv_nxt bracket catches a
  // byte arriving after SIOCINQ.
  // Our FIN occupies one sequence number in write_seq and (until acked) in SIOCOUTQ.
  const std::uint32_t fin_in_outq = (s.fin_queued && !fin_acked) ? 1 : 0;
  auto peek_n = [&op](int n) -> Result<std::vector<std::byte>> {
    if (n <= 0) {
      return std::vector<std::byte>{};
    }
    return op.peek(static_cast<std::size_t>(n));
  };
  bool stable = false;
  for (int attempt = 0; attempt < 8 && !stable; ++attempt) {
    if (attempt > 0) {
      pause_us(200);
    }
    auto write_seq = op.queue_seq(TCP_SEND_QUEUE);
    if (!write_seq) {
      return std::move(write_seq).take_error();
    }
    auto outq = op.ioctl(SIOCOUTQ, "SIOCOUTQ");
    if (!outq) {
      return std::move(outq).take_error();
    }
    // Nothing can be unsent in an empty send queue (write_seq - snd_nxt <= write_seq - snd_una).
    Result<int> unsq = 0;
    if (*outq != 0) {
      unsq = op.ioctl(SIOCOUTQNSD, "SIOCOUTQNSD");
      if (!unsq) {
        return std::move(unsq).take_error();
      }
    }
    auto sq = peek_n(*outq - static_cast<int>(fin_in_outq));
    if (!sq) {
      return std::move(sq).take_error();
    }
    auto rcv_nxt = op.queue_seq(TCP_RECV_QUEUE);
    if (!rcv_nxt) {
      return std::move(rcv_nxt).take_error();
    }
    auto inq = op.ioctl(SIOCINQ, "SIOCINQ");
    if (!inq) {
      return std::move(inq).take_error();
    }
    auto rq = peek_n(*inq);
    if (!rq) {
      return std::move(rq).take_error();
    }
    auto rcv_nxt2 = op.queue_seq(TCP_RECV_QUEUE);
    if (!rcv_nxt2) {
      return unreadable("checkpoint: re-reading rcv_nxt failed", rcv_nxt2);
    }
    const bool consistent = *rcv_nxt == *rcv_nxt2 &&
                            rq->size() == static_cast<std::size_t>(std::max(*inq, 0)) &&
                            static_cast<std::size_t>(*outq) == sq->size() + fin_in_outq;
    if (!consistent) {
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
      return make_error(std::errc::io_error, "checkpoint: SIOCOUTQNSD " + std::to_string(unsent) +
                                              " exceeds the send queue");
    }
    s.send_seq = *write_seq - (s.fin_queued ? 1U : 0U) -
                 static_cast<std::uint32_t>(s.send_queue.size());
    s.recv_seq = *rcv_nxt - (s.peer_fin ? 1U : 0U) - static_cast<std::uint32_t>(s.recv_queue.size());
  }
  if (!stable) {
    return make_error(std::errc::resource_unavailable_try_again,
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

  // Socket options: read here unless the caller read them before the freeze.
  if (known != nullptr) {
    s.options = *known;
  } else {
    auto o = read_socket_options(sys, fd, tuple.local.family == IpFamily::v6);
    if (!o) {
      return std::move(o).take_error().with_context("checkpoint: read socket option");
    }
    s.options = std::move(*o);
  }

  if (auto v = validate(s); !v.ok()) {
    return std::move(v).take_error().with_context("checkpoint produced an invalid snapshot");
  }
  return s;
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

bool Repairer::readback_write_seq() {
  if (!readback_write_seq_) {
    struct utsname u {};
    int major = 0;
    int minor = 0;
    // Unknown (uname failed, unparsable release): read back, as on an old kernel.
    readback_write_seq_ = sys_.uname(&u) != 0 ||
                          std::sscanf(u.release, "%d.%d", &major, &minor) != 2 ||
                          major < 4 || (major == 4 && minor < 18);
  }
  return *readback_write_seq_;
}

std::optional<std::uint64_t> Repairer::netns_cookie(int fd) {
  std::uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  if (sys_.getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0 ||
      len != sizeof cookie) {
    return std::nullopt;
  }
  return cookie;
}

Status Repairer::kick(int restored, const ForgedSegment& seg, std::uint32_t mark,
                      std::optional<std::uint64_t> netns) {
  // Reuse a cached raw socket only when we can tell it reaches the restored socket's netns
  // (SO_NETNS_COOKIE, Linux 5.14+); otherwise inject from a one-shot socket as before.
  if (!netns) {
    netns = netns_cookie(restored);
  }
  if (!netns) {
    return inject_segment(sys_, seg, mark);
  }
  if (!inject_) {
    inject_ = std::make_unique<InjectCache>(sys_);
  }
  return inject_->inject(seg, mark, *netns);
}

Status Repairer::ask_peer_ack(const RepairSocket& s, const TcpSnapshot& snap,
                              std::uint32_t mark) {
  if (snap.fin_sent || snap.send_unacked() == 0) {
    return {};
  }
  RENDR_TRY_CTX(kick(s.fd(), peer_probe(snap), mark),
                "ask the peer of " + snap.tuple.to_string() + " for its ACK");
  return {};
}

const OptionDefaults* Repairer::option_defaults(std::optional<std::uint64_t> netns, bool v6) {
  if (!netns) {
    return nullptr;
  }
  if (defaults_ && defaults_->netns == *netns && defaults_->v6 == v6) {
    return defaults_.get();
  }
  defaults_.reset();
  int fd = sys_.socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) {
    return nullptr;
  }
  Ops op(sys_, fd);
  auto d = std::make_unique<OptionDefaults>();
  d->netns = *netns;
  d->v6 = v6;
  // The probe socket lives in this thread's netns; it only counts for the restored socket's.
  const bool same_ns = netns_cookie(fd) == netns;
  auto idle = op.get(IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE");
  auto intvl = op.get(IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL");
  auto cnt = op.get(IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT");
  auto ttl = v6 ? op.get(IPPROTO_IPV6, IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS")
                : op.get(IPPROTO_IP, IP_TTL, "IP_TTL");
  char cc[16] = {};
  socklen_t cl = sizeof cc;
  const bool cc_ok = sys_.getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, &cl) == 0;
  sys_.close(fd);
  if (!same_ns || !idle || !intvl || !cnt || !ttl || !cc_ok) {
    return nullptr;
  }
  d->keepidle = static_cast<std::uint32_t>(*idle);
  d->keepintvl = static_cast<std::uint32_t>(*intvl);
  d->keepcnt = static_cast<std::uint32_t>(*cnt);
  d->ttl = static_cast<std::uint32_t>(*ttl);
  d->congestion.assign(cc, strnlen(cc, std::min<std::size_t>(cl, sizeof cc)));
  defaults_ = std::move(d);
  return defaults_.get();
}

Result<TcpSocketOptions> Repairer::read_options(int fd) {
  Ops op(sys_, fd);
  auto local = op.name(false);
  if (!local) {
    return std::move(local).take_error().with_context("read socket options");
  }
  auto o = read_socket_options(sys_, fd, local->family == IpFamily::v6);
  if (!o) {
    return std::move(o).take_error().with_context("read socket options");
  }
  auto reuse = op.get(SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR");
  if (!reuse) {
    return std::move(reuse).take_error().with_context("read socket options");
  }
  o->reuseaddr = *reuse != 0;
  return o;
}

Result<Checkpoint> Repairer::checkpoint(int fd, const TcpSocketOptions* options,
                                        const FourTuple* tuple) {
  return checkpoint_impl(fd, options, tuple, nullptr);
}

Result<Checkpoint> Repairer::checkpoint(UniqueFd& fd, const TcpSocketOptions* options,
                                        const FourTuple* tuple) {
  return checkpoint_impl(fd.get(), options, tuple, &fd);
}

Result<Checkpoint> Repairer::checkpoint_impl(int fd, const TcpSocketOptions* options,
                                             const FourTuple* known_tuple, UniqueFd* owned) {
  Ops op(sys_, fd);
  // A socket that is not TCP fails one of the calls below (the names, TCP_INFO, TCP_REPAIR); only
  // then are its type and protocol read, so the error can say so (two calls fewer per checkpoint).
  auto not_tcp = [&]() -> std::optional<Error> {
    auto type = op.get(SOL_SOCKET, SO_TYPE, "checkpoint: SO_TYPE");
    if (!type) {
      return std::move(type).take_error();
    }
    auto proto = op.get(SOL_SOCKET, SO_PROTOCOL, "checkpoint: SO_PROTOCOL");
    if (!proto) {
      return std::move(proto).take_error();
    }
    if (*type != SOCK_STREAM || *proto != IPPROTO_TCP) {
      return make_error(std::errc::protocol_not_supported,
                        "checkpoint: fd " + std::to_string(fd) + " is not a TCP socket");
    }
    return std::nullopt;
  };
  // The addresses: given by a caller that read them before the freeze, else read here.
  FourTuple tuple;
  if (known_tuple != nullptr) {
    tuple = *known_tuple;
  } else {
    auto local = op.name(false);
    auto remote = local ? op.name(true) : Result<Endpoint>(local.error());
    if (!local || !remote) {
      if (auto e = not_tcp()) {
        return std::move(*e);
      }
      return (!local ? local : remote).error().with_context("checkpoint: not a connected socket");
    }
    tuple = FourTuple{*local, *remote};
  }
  // Error contexts are formatted only when an error is returned.
  auto ctx = [&tuple] { return "checkpoint " + tuple.to_string(); };
  auto ti = op.info();
  if (!ti) {
    if (auto e = not_tcp()) {
      return std::move(*e);
    }
    return std::move(ti).take_error().with_context(ctx());
  }
  auto st = static_cast<TcpState>(ti->tcpi_state);
  if (!snapshot_state_supported(st)) {
    return make_error(std::errc::not_supported,
                   ctx() + ": TCP state " + std::string(to_string(st)) +
                       " is not supported (supported: ESTABLISHED, FIN_WAIT1, FIN_WAIT2, "
                       "CLOSE_WAIT, LAST_ACK, CLOSING)");
  }
  // Repair mode overrides SO_REUSEADDR (reads 2 while on) and leaving it clears the option, so
  // it is read now and set again by thaw() or restore: otherwise the connection's TIME_WAIT
  // blocked a server restarting on its port for a minute ("Address already in use").
  auto reuse = options != nullptr ? Result<int>(options->reuseaddr ? 1 : 0)
                                  : op.get(SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR");
  if (!reuse) {
    return std::move(reuse).take_error().with_context(ctx());
  }
  if (auto r = op.set(IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON, "enter repair mode (TCP_REPAIR)");
      !r.ok()) {
    if (r.error().code != std::errc::operation_not_permitted) {
      if (auto e = not_tcp()) {  // e.g. MPTCP: TCP_INFO works, TCP_REPAIR does not
        return std::move(*e);
      }
    }
    return std::move(r).take_error().with_context(ctx());
  }
  auto thaw_on_error = [&](Error e) -> Error {
    (void)op.set(IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF, "thaw");
    if (*reuse != 0) {
      (void)op.set(SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");  // cleared by repair-off
    }
    return e.with_context(ctx());
  };
  // A borrowed descriptor is duplicated for the Checkpoint; an owned one is taken on success.
  UniqueFd mine;
  if (owned == nullptr) {
    auto dup = UniqueFd::dup(fd);
    if (!dup) {
      return thaw_on_error(std::move(dup).take_error());
    }
    mine = std::move(*dup);
  }
  auto snap = capture(sys_, fd, tuple, *ti, options);
  if (!snap) {
    return thaw_on_error(std::move(snap).take_error());
  }
  if (owned != nullptr) {
    mine = std::move(*owned);
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
  return Checkpoint{RepairSocket(std::move(mine), tuple, reuseaddr), std::move(*snap)};
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

Result<RepairSocket> Repairer::adopt_frozen(UniqueFd fd) {
  auto t = FourTuple::of_socket(fd.get());
  if (!t) {
    return std::move(t).take_error().with_context("adopt frozen socket: not a connected socket");
  }
  Ops op(sys_, fd.get());
  auto on = op.get(IPPROTO_TCP, TCP_REPAIR, "TCP_REPAIR");
  if (!on) {
    return std::move(on).take_error().with_context("adopt frozen " + t->to_string());
  }
  if (*on == 0) {
    return make_error(std::errc::invalid_argument,
                      "adopt frozen " + t->to_string() + ": not in repair mode");
  }
  return RepairSocket(std::move(fd), *t, false);
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
