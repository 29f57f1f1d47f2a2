// SPDX-License-Identifier: Apache-2.0
#include "repair_minimal.hpp"

#include "loopback.hpp"

#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <unistd.h>

#include <algorithm>
#include <optional>

namespace rendr::bench {

namespace {

bool set_int(int fd, int level, int opt, int v) {
  return ::setsockopt(fd, level, opt, &v, sizeof v) == 0;
}

bool get_seq(int fd, int queue, std::uint32_t& out) {
  if (!set_int(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)) {
    return false;
  }
  socklen_t l = sizeof out;
  return ::getsockopt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, &out, &l) == 0;
}

}  // namespace

Result<MinimalPrep> minimal_prepare(int fd) {
  MinimalPrep p;
  p.local_len = sizeof p.local;
  p.remote_len = sizeof p.remote;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&p.local), &p.local_len) != 0 ||
      ::getpeername(fd, reinterpret_cast<sockaddr*>(&p.remote), &p.remote_len) != 0) {
    return errno_error("minimal: addresses");
  }
  int reuse = 0;
  int nodelay = 0;
  socklen_t l = sizeof reuse;
  if (::getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, &l) != 0) {
    return errno_error("minimal: SO_REUSEADDR");
  }
  l = sizeof nodelay;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &l) != 0) {
    return errno_error("minimal: TCP_NODELAY");
  }
  p.reuseaddr = reuse != 0;
  p.nodelay = nodelay != 0;
  return p;
}

Result<MinimalSnapshot> minimal_checkpoint(int fd, const MinimalPrep& prep) {
  MinimalSnapshot s;
  s.prep = prep;
  if (!set_int(fd, IPPROTO_TCP, TCP_REPAIR, 1)) {
    return errno_error("minimal: TCP_REPAIR on");
  }
  socklen_t l = sizeof s.info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &s.info, &l) != 0) {
    return errno_error("minimal: TCP_INFO");
  }
  if (s.info.tcpi_state != 1 /* TCP_ESTABLISHED */) {
    return make_error(std::errc::invalid_argument, "minimal: not ESTABLISHED");
  }
  // Correctness without saving queues: both must be empty (one ioctl each).
  int outq = 0;
  int inq = 0;
  if (::ioctl(fd, SIOCOUTQ, &outq) != 0 || ::ioctl(fd, SIOCINQ, &inq) != 0) {
    return errno_error("minimal: queue lengths");
  }
  if (outq != 0 || inq != 0) {
    return make_error(std::errc::invalid_argument, "minimal: queues not empty");
  }
  if (!get_seq(fd, TCP_SEND_QUEUE, s.send_seq) || !get_seq(fd, TCP_RECV_QUEUE, s.recv_seq)) {
    return errno_error("minimal: sequence numbers");
  }
  l = sizeof s.mss;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, &s.mss, &l) != 0) {
    return errno_error("minimal: TCP_MAXSEG");
  }
  l = sizeof s.window;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &s.window, &l) != 0) {
    return errno_error("minimal: TCP_REPAIR_WINDOW");
  }
  if ((s.info.tcpi_options & TCPI_OPT_TIMESTAMPS) != 0) {
    l = sizeof s.timestamp;
    if (::getsockopt(fd, IPPROTO_TCP, TCP_TIMESTAMP, &s.timestamp, &l) != 0) {
      return errno_error("minimal: TCP_TIMESTAMP");
    }
  }
  return s;
}

Result<UniqueFd> minimal_restore(const MinimalSnapshot& s) {
  const MinimalPrep& p = s.prep;
  UniqueFd fd(::socket(p.local.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    return errno_error("minimal: socket");
  }
  const int f = fd.get();
  // TCP_REPAIR also forces address reuse for bind (SK_FORCE_REUSE); SO_REUSEADDR after it
  // would undo that.
  if (!set_int(f, IPPROTO_TCP, TCP_REPAIR, 1)) {
    return errno_error("minimal: repair mode");
  }
  if (!set_int(f, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE) ||
      !set_int(f, IPPROTO_TCP, TCP_QUEUE_SEQ, static_cast<int>(s.send_seq)) ||
      !set_int(f, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE) ||
      !set_int(f, IPPROTO_TCP, TCP_QUEUE_SEQ, static_cast<int>(s.recv_seq))) {
    return errno_error("minimal: sequence numbers");
  }
  // The MSS before connect, so the restored socket sizes its segments right at once (the
  // kernel takes at most 32767 here; TCP_REPAIR_OPTIONS sets the exact clamp).
  if (!set_int(f, IPPROTO_TCP, TCP_MAXSEG, static_cast<int>(std::min<std::uint32_t>(s.mss, 32767)))) {
    return errno_error("minimal: TCP_MAXSEG");
  }
  if (::bind(f, reinterpret_cast<const sockaddr*>(&p.local), p.local_len) != 0 ||
      ::connect(f, reinterpret_cast<const sockaddr*>(&p.remote), p.remote_len) != 0) {
    return errno_error("minimal: bind/connect");
  }
  tcp_repair_opt ro[4];
  unsigned n = 0;
  ro[n++] = {TCPOPT_MAXSEG, s.mss};
  if ((s.info.tcpi_options & TCPI_OPT_WSCALE) != 0) {
    ro[n++] = {TCPOPT_WINDOW, static_cast<std::uint32_t>(s.info.tcpi_snd_wscale) |
                                  (static_cast<std::uint32_t>(s.info.tcpi_rcv_wscale) << 16)};
  }
  if ((s.info.tcpi_options & TCPI_OPT_SACK) != 0) {
    ro[n++] = {TCPOPT_SACK_PERMITTED, 0};
  }
  const bool ts = (s.info.tcpi_options & TCPI_OPT_TIMESTAMPS) != 0;
  if (ts) {
    ro[n++] = {TCPOPT_TIMESTAMP, 0};
  }
  if (::setsockopt(f, IPPROTO_TCP, TCP_REPAIR_OPTIONS, ro,
                   static_cast<socklen_t>(n * sizeof(tcp_repair_opt))) != 0) {
    return errno_error("minimal: TCP_REPAIR_OPTIONS");
  }
  if (ts && !set_int(f, IPPROTO_TCP, TCP_TIMESTAMP, static_cast<int>(s.timestamp))) {
    return errno_error("minimal: TCP_TIMESTAMP");
  }
  if (::setsockopt(f, IPPROTO_TCP, TCP_REPAIR_WINDOW, &s.window, sizeof s.window) != 0) {
    return errno_error("minimal: TCP_REPAIR_WINDOW");
  }
  if (!set_int(f, IPPROTO_TCP, TCP_REPAIR, 0)) {
    return errno_error("minimal: TCP_REPAIR off");
  }
  // Leaving repair mode cleared SO_REUSEADDR (a listener restarting on the port would wait for
  // the connection's TIME_WAIT); a fresh socket has Nagle on. Both as the source had them.
  if (p.reuseaddr && !set_int(f, SOL_SOCKET, SO_REUSEADDR, 1)) {
    return errno_error("minimal: SO_REUSEADDR");
  }
  if (p.nodelay && !set_int(f, IPPROTO_TCP, TCP_NODELAY, 1)) {
    return errno_error("minimal: TCP_NODELAY");
  }
  return fd;
}

Result<Alternated> run_alternated(
    std::uint64_t warmup, std::uint64_t iters, bool prepare_first,
    const std::function<Result<std::uint64_t>(std::uint8_t)>& rendr_step, UniqueFd& server,
    int client, const std::function<void(std::uint64_t)>& tick) {
  Alternated res;
  res.rendr.reserve(iters);
  res.minimal.reserve(iters);
  for (std::uint64_t i = 0; i < warmup + iters; ++i) {
    const bool measured = i >= warmup;
    const auto tag = static_cast<std::uint8_t>(i);
    for (std::uint64_t k = 0; k < 2; ++k) {
      if (((i + k) & 1U) == 0) {  // even rounds start with rendr, odd ones with the minimal
        auto ns = rendr_step(tag);
        if (!ns) {
          return std::move(ns).take_error();
        }
        if (measured) {
          res.rendr.add(*ns);
        }
        continue;
      }
      std::optional<MinimalPrep> early;
      if (prepare_first) {
        auto pr = minimal_prepare(server.get());
        if (!pr) {
          return std::move(pr).take_error();
        }
        early = *pr;
      }
      const std::uint64_t t0 = now_ns();
      auto prep = early ? Result<MinimalPrep>(*early) : minimal_prepare(server.get());
      if (!prep) {
        return std::move(prep).take_error();
      }
      auto snap = minimal_checkpoint(server.get(), *prep);
      const std::uint64_t t1 = now_ns();
      if (!snap) {
        return std::move(snap).take_error();
      }
      server.reset();  // in repair mode: silent
      const std::uint64_t t2 = now_ns();
      auto fd = minimal_restore(*snap);
      const std::uint64_t t3 = now_ns();
      if (!fd) {
        return std::move(fd).take_error();
      }
      server = std::move(*fd);
      if (measured) {
        res.minimal.add((t1 - t0) + (t3 - t2));
      }
      RENDR_TRY(ping_pong(server.get(), client, tag));
    }
    res.iterations += measured ? 1 : 0;
    if (tick) {
      tick(i + 1);
    }
  }
  return res;
}

}  // namespace rendr::bench
