// SPDX-License-Identifier: Apache-2.0
// rendr-bench engine's baselines and probes (engine_baselines.hpp).
#include "engine_baselines.hpp"

#include <linux/mptcp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#ifndef SOL_MPTCP
#define SOL_MPTCP 284
#endif

namespace rendr::bench {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

}  // namespace

// --- raw sockets (the baselines) ---

Result<UniqueFd> listen_raw(int proto, std::uint16_t* port) {
  auto fd = UniqueFd::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, proto);
  if (!fd) {
    return std::move(fd).take_error();
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (::bind(fd->get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(fd->get(), 16) != 0) {
    return errno_error("listen");
  }
  socklen_t len = sizeof a;
  ::getsockname(fd->get(), reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

Result<UniqueFd> connect_raw(int proto, const std::string& ip, std::uint16_t port) {
  auto fd = UniqueFd::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, proto);
  if (!fd) {
    return std::move(fd).take_error();
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  if (::connect(fd->get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    return errno_error("connect " + ip);
  }
  int one = 1;
  ::setsockopt(fd->get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

namespace {

bool write_all(int fd, const std::byte* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) {
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool read_all(int fd, std::byte* p, std::size_t n) {
  while (n > 0) {
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r <= 0) {
      return false;
    }
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

}  // namespace

Result<RawResult> raw_transfer(EngineRig& rig, std::uint64_t total) {
  UniqueFd lfd;
  std::uint16_t port = 0;
  auto st = rig.in_server([&]() -> Status {
    auto l = listen_raw(IPPROTO_TCP, &port);
    if (!l) {
      return std::move(l).take_error();
    }
    lfd = std::move(*l);
    return {};
  });
  if (!st) {
    return std::move(st).take_error();
  }
  UniqueFd cfd;
  st = rig.in_client([&]() -> Status {
    auto c = connect_raw(IPPROTO_TCP, lab::MultipathLab::server_addr4(1), port);
    if (!c) {
      return std::move(c).take_error();
    }
    cfd = std::move(*c);
    return {};
  });
  if (!st) {
    return std::move(st).take_error();
  }
  const int sfd = ::accept4(lfd.get(), nullptr, nullptr, SOCK_CLOEXEC);
  if (sfd < 0) {
    return errno_error("accept");
  }
  UniqueFd server(sfd);
  RawResult res;
  const CpuTime reader0 = this_thread_cpu();
  const auto start = Clock::now();
  std::thread w([&] {
    (void)::pthread_setname_np(::pthread_self(), "bench-writer");
    const CpuTime cpu0 = this_thread_cpu();
    std::vector<std::byte> buf(1U << 20, std::byte{0x5a});
    std::uint64_t off = 0;
    while (off < total) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), total - off));
      if (!write_all(cfd.get(), buf.data(), n)) {
        return;
      }
      off += n;
    }
    ::shutdown(cfd.get(), SHUT_WR);
    res.writer_cpu = this_thread_cpu() - cpu0;
  });
  std::vector<std::byte> in(1U << 20);
  std::uint64_t got = 0;
  auto last = Clock::now();
  double gap = 0;
  for (;;) {
    const ssize_t r = ::recv(server.get(), in.data(), in.size(), 0);
    if (r <= 0) {
      break;
    }
    const auto now = Clock::now();
    gap = std::max(gap, ms(now - last));
    last = now;
    got += static_cast<std::uint64_t>(r);
  }
  if (std::getenv("RENDR_BENCH_GAPS") != nullptr) {
    progress("raw longest pause " + std::to_string(gap) + " ms");
  }
  res.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  res.reader_cpu = this_thread_cpu() - reader0;
  w.join();
  if (got != total) {
    return make_error(std::errc::io_error, "raw transfer: short");
  }
  return res;
}

// --- echo over raw sockets: worst latency after a drop (MPTCP baseline) ---



FailoverRun raw_echo_failover(EngineRig& rig, int lfd, const std::string& ip, std::uint16_t port) {
  FailoverRun run;
  UniqueFd cfd;
  auto st = rig.in_client([&]() -> Status {
    auto c = connect_raw(IPPROTO_MPTCP, ip, port);
    if (!c) {
      return std::move(c).take_error();
    }
    cfd = std::move(*c);
    return {};
  });
  if (!st) {
    progress("mptcp connect: " + st.error().message());
    return run;
  }
  const int sfd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  if (sfd < 0) {
    return run;
  }
  UniqueFd server(sfd);
  std::thread echo([&] {
    std::byte m[16];
    while (read_all(server.get(), m, sizeof m) && write_all(server.get(), m, sizeof m)) {
    }
  });
  // Wait (bounded) until the second subflow joined.
  for (int i = 0; i < 100; ++i) {
    mptcp_info info{};
    socklen_t len = sizeof info;
    if (::getsockopt(cfd.get(), SOL_MPTCP, MPTCP_INFO, &info, &len) == 0 &&
        info.mptcpi_subflows >= 1) {
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  timeval tv{10, 0};
  ::setsockopt(cfd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::vector<double> rtts;
  const auto start = Clock::now();
  bool ok = true;
  for (int i = 0; i < kPreDrop + kPostDrop && ok; ++i) {
    if (i == kPreDrop) {
      ok = rig.lab().drop(1, true).ok();
    }
    std::this_thread::sleep_until(start + 5ms * i);
    std::byte m[16] = {};
    std::memcpy(m, &i, sizeof i);
    const auto t0 = Clock::now();
    std::byte back[16];
    ok = ok && write_all(cfd.get(), m, sizeof m) && read_all(cfd.get(), back, sizeof back) &&
         std::memcmp(m, back, sizeof m) == 0;
    rtts.push_back(ms(Clock::now() - t0));
  }
  (void)rig.lab().clear(1);
  ::shutdown(cfd.get(), SHUT_RDWR);
  ::shutdown(server.get(), SHUT_RDWR);
  echo.join();
  if (ok) {
    run.ok = true;
    run.worst_ms = *std::max_element(rtts.begin() + kPreDrop, rtts.end());
    run.median_ms = percentile(rtts, 50);
  }
  return run;
}

FailoverRun rendr_echo_failover(EngineRig& rig, Listener& l, Mode mode) {
  FailoverRun run;
  DialOptions o;
  engine::FlowConfig fast;
  fast.probe_interval = 10ms;
  fast.fresh_min = 30ms;
  fast.fresh_max = 1s;
  static_cast<engine::FlowConfig&>(o) = fast;
  o.mode = mode;
  o.paths = {EngineRig::path(1, l.port()), EngineRig::path(2, l.port())};
  auto d = Dialer::create(o);
  if (!d) {
    return run;
  }
  auto c = rig.dial(**d);
  if (!c) {
    progress("dial: " + c.error().message());
    return run;
  }
  auto s = l.accept(deadline_in(5s));
  if (!s) {
    return run;
  }
  bool drop_ok = true;
  auto r = echo(**c, **s, 5ms, kPreDrop + kPostDrop, [&](int i) {
    if (i == kPreDrop) {
      drop_ok = rig.lab().drop(1, true).ok();
    }
  });
  (void)rig.lab().clear(1);
  if (!r.error.empty() || !drop_ok) {
    progress("rendr echo: " + r.error);
    return run;
  }
  run.ok = true;
  run.worst_ms = *std::max_element(r.rtt_ms.begin() + kPreDrop, r.rtt_ms.end());
  run.worst_before_ms = *std::max_element(r.rtt_ms.begin(), r.rtt_ms.begin() + kPreDrop);
  // The same number of messages right after the drop (failover happens in that window): the
  // worst of 300 messages is larger than the worst of 60 by chance alone.
  run.worst_after_same_ms =
      *std::max_element(r.rtt_ms.begin() + kPreDrop, r.rtt_ms.begin() + 2 * kPreDrop);
  run.median_ms = percentile(r.rtt_ms, 50);
  return run;
}

std::uint64_t rss_bytes() {
  std::ifstream f("/proc/self/statm");
  std::uint64_t size = 0;
  std::uint64_t resident = 0;
  f >> size >> resident;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

// idle_flow_bytes: RSS growth per idle flow (both ends in this process, one tcp path each, on
// loopback in the client namespace).
Result<double> idle_flow_bytes(EngineRig& rig, std::uint64_t n) {
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  Result<ListenerPtr> l = make_error(std::errc::invalid_argument, "unset");
  std::vector<ConnPtr> conns;
  double per = 0;
  auto st = rig.in_client([&]() -> Status {
    l = listen_tcp("127.0.0.1:0");
    if (!l) {
      return l.error();
    }
    DialOptions o;
    PathSpec p;
    p.address = (*l)->local_address();
    o.paths = {p};
    auto d = Dialer::create(o);
    if (!d) {
      return d.error();
    }
    // Warm up (threads, allocator arenas), then measure.
    for (int i = 0; i < 8; ++i) {
      auto c = (*d)->dial();
      if (!c) {
        return c.error();
      }
      conns.push_back(std::move(*c));
      auto s = (*l)->accept(deadline_in(5s));
      if (!s) {
        return s.error();
      }
      conns.push_back(std::move(*s));
    }
    const std::uint64_t before = rss_bytes();
    for (std::uint64_t i = 0; i < n; ++i) {
      auto c = (*d)->dial();
      if (!c) {
        return c.error();
      }
      conns.push_back(std::move(*c));
      auto s = (*l)->accept(deadline_in(5s));
      if (!s) {
        return s.error();
      }
      conns.push_back(std::move(*s));
    }
    std::this_thread::sleep_for(1500ms);  // a probe round on every flow
    const std::uint64_t after = rss_bytes();
    per = static_cast<double>(after - before) / static_cast<double>(n);
    return {};
  });
  // Clean closes, client end first (BYE, ACK), then its server end (already closed by the peer).
  conns.clear();
  if (!st) {
    return std::move(st).take_error();
  }
  return per;
}


}  // namespace rendr::bench
