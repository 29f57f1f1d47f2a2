// SPDX-License-Identifier: Apache-2.0
// rendr-bench userstack: what rendr's user-space TCP stack (userstack/: lwIP over TUN) costs a
// single flow, against the kernel doing the same transfer in the same run, and how long an idle
// connection takes to snapshot and rebuild. Inside a private network namespace with a TUN
// device provisioned as an operator would (docs/userstack.md): the VIP subnet routed into it, a
// kernel client on one side, the lwIP Connection API on the other.
//
//   rx: kernel client sends, lwIP receives     tx: lwIP sends, kernel client receives
//   raw: the same bytes kernel to kernel over the namespace's loopback, one way
//   snapshot_restore: freeze + snapshot + restore + thaw of an idle connection, then a
//   1-byte ping-pong to prove it lives (untimed).
#include "cli.hpp"
#include "progress.hpp"
#include "stats.hpp"
#include "subcommand.hpp"
#include "userstack_moves.hpp"

#include "lab/lab_util.hpp"

#include <rendr/common/json.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/userstack/stack.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <optional>
#include <string>
#include <vector>

namespace rendr::bench {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr const char* kTun = "rtun0";

struct Config {
  bool json = false;
  bool quiet = false;
  std::uint64_t mib = 1024;
  std::uint64_t restore_iters = 2000;
  std::uint64_t mtu = 65535;
  std::uint64_t send_mss = 32768;
  std::uint64_t moves = 10;
};

double gbps(std::uint64_t bytes, double s) { return s > 0 ? static_cast<double>(bytes) * 8 / s / 1e9 : 0; }

// bound_blocking: a blocked send/recv gives up after 20 s, so a transfer whose other end
// stopped ends short (and is reported) instead of hanging the benchmark.
void bound_blocking(int fd) {
  timeval tv{20, 0};
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

Result<UniqueFd> tcp_connect(const Endpoint& to) {
  UniqueFd fd(::socket(to.af(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    return errno_error("socket");
  }
  bound_blocking(fd.get());
  sockaddr_storage ss{};
  const socklen_t len = to.to_sockaddr(ss);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    return errno_error("connect " + to.to_string());
  }
  return fd;
}

// pump_kernel sends (|send|) or receives |total| bytes on a blocking kernel socket.
std::uint64_t pump_kernel(int fd, std::uint64_t total, bool send) {
  std::vector<char> buf(1 << 20, 'u');
  std::uint64_t done = 0;
  while (done < total) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), total - done));
    const ssize_t n = send ? ::send(fd, buf.data(), want, MSG_NOSIGNAL) : ::recv(fd, buf.data(), want, 0);
    if (n <= 0) {
      break;
    }
    done += static_cast<std::uint64_t>(n);
  }
  return done;
}

// pump_lwip reads (|send| false) or writes |total| bytes through a Connection, waiting on its
// event fd; bounded by |deadline|.
std::uint64_t pump_lwip(userstack::Connection& c, std::uint64_t total, bool send,
                        Clock::time_point deadline) {
  std::vector<std::byte> buf(1 << 20, std::byte{'u'});
  std::uint64_t done = 0;
  while (done < total && Clock::now() < deadline) {
    c.clear_event();
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), total - done));
    auto r = send ? c.write(std::span<const std::byte>(buf.data(), want))
                  : c.read(std::span<std::byte>(buf.data(), want));
    if (r && *r > 0) {
      done += *r;
      continue;
    }
    if (!r && r.error().code != std::errc::resource_unavailable_try_again) {
      break;  // reset, EOF or EPIPE: the transfer ends short (the caller reports it)
    }
    pollfd pf{c.event_fd(), POLLIN, 0};
    ::poll(&pf, 1, 10);
  }
  return done;
}

struct Transfer {
  std::uint64_t bytes = 0;
  double seconds = 0;
};

// one_way times |total| bytes from |from| to |to|, both run concurrently.
template <typename From, typename To>
Result<Transfer> one_way(std::uint64_t total, From from, To to, const char* what) {
  const auto t0 = Clock::now();
  auto sender = std::async(std::launch::async, from);
  const std::uint64_t got = to();
  const std::uint64_t sent = sender.get();
  Transfer t{got, std::chrono::duration<double>(Clock::now() - t0).count()};
  if (got != total || sent != total) {
    return make_error(std::errc::io_error, std::string(what) + ": " + std::to_string(sent) +
                                               " bytes sent, " + std::to_string(got) +
                                               " received of " + std::to_string(total));
  }
  return t;
}

Status ping_pong(int kfd, userstack::Connection& c) {
  const char b = 'p';
  if (::send(kfd, &b, 1, MSG_NOSIGNAL) != 1) {
    return errno_error("ping");
  }
  if (pump_lwip(c, 1, false, Clock::now() + 2s) != 1 || pump_lwip(c, 1, true, Clock::now() + 2s) != 1) {
    return make_error(std::errc::io_error, "ping-pong through the rebuilt connection failed");
  }
  char r = 0;
  if (::recv(kfd, &r, 1, 0) != 1) {
    return errno_error("pong");
  }
  return {};
}

struct Results {
  Transfer rx, tx, raw;
  Samples restore;
  userstack::StackCounters counters;
};

Result<Results> run(const Config& cfg, Progress& prog) {
  const std::uint64_t total = cfg.mib << 20;
  Results res;
  userstack::StackOptions so;
  so.tun.name = kTun;
  so.tun.mtu = static_cast<unsigned>(cfg.mtu);
  so.send_mss = static_cast<std::uint16_t>(cfg.send_mss);
  auto st = userstack::Stack::start(so);
  if (!st) {
    return std::move(st).take_error().with_context("start the userstack on " + std::string(kTun));
  }
  userstack::Stack& stack = **st;
  const Endpoint vip = *Endpoint::parse("198.18.0.20:5001");
  auto k = tcp_connect(vip);
  if (!k) {
    return std::move(k).take_error();
  }
  auto acc = stack.accept(5s);
  if (!acc) {
    return std::move(acc).take_error().with_context("accept in lwIP");
  }
  userstack::Connection& c = **acc;
  const int kfd = k->get();
  const auto budget = Clock::now() + 120s;

  prog.begin("kernel -> lwIP", 0);
  auto rx = one_way(
      total, [&] { return pump_kernel(kfd, total, true); },
      [&] { return pump_lwip(c, total, false, budget); }, "kernel -> lwIP");
  if (!rx) {
    return std::move(rx).take_error();
  }
  res.rx = *rx;
  prog.end();
  prog.begin("lwIP -> kernel", 0);
  auto tx = one_way(
      total, [&] { return pump_lwip(c, total, true, budget); },
      [&] { return pump_kernel(kfd, total, false); }, "lwIP -> kernel");
  if (!tx) {
    return std::move(tx).take_error();
  }
  res.tx = *tx;
  prog.end();

  // The kernel baseline: loopback in the same namespace, one way.
  prog.begin("kernel -> kernel", 0);
  UniqueFd l(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  if (!l.valid() || ::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(l.get(), 1) != 0 || ::getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &al) != 0) {
    return errno_error("loopback listener");
  }
  auto rc = tcp_connect(*Endpoint::parse("127.0.0.1:" + std::to_string(ntohs(a.sin_port))));
  if (!rc) {
    return std::move(rc).take_error();
  }
  UniqueFd rs(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!rs.valid()) {
    return errno_error("accept");
  }
  bound_blocking(rs.get());
  auto raw = one_way(
      total, [&] { return pump_kernel(rc->get(), total, true); },
      [&] { return pump_kernel(rs.get(), total, false); }, "kernel -> kernel");
  if (!raw) {
    return std::move(raw).take_error();
  }
  res.raw = *raw;
  prog.end();

  // Snapshot + restore of the (now idle) connection, rebuilt in place each time.
  prog.begin("snapshot + restore", cfg.restore_iters);
  userstack::ConnectionPtr cur = std::move(*acc);
  const FourTuple tuple = cur->tuple();
  res.restore.reserve(cfg.restore_iters);
  for (std::uint64_t i = 0; i < cfg.restore_iters; ++i) {
    const auto t0 = Clock::now();
    stack.freeze(tuple);
    auto snap = stack.snapshot(*cur);
    if (!snap) {
      stack.thaw(tuple);
      return std::move(snap).take_error().with_context("snapshot " + std::to_string(i));
    }
    auto rebuilt = stack.restore(*snap);
    if (!rebuilt) {
      stack.thaw(tuple);
      return std::move(rebuilt).take_error().with_context("restore " + std::to_string(i));
    }
    stack.thaw(tuple);
    res.restore.add(static_cast<std::uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
    cur = std::move(*rebuilt);
    if (i % 100 == 99 || i + 1 == cfg.restore_iters) {
      RENDR_TRY_CTX(ping_pong(kfd, *cur), "after rebuild " + std::to_string(i));
    }
    prog.tick(i + 1);
  }
  prog.end();
  res.counters = stack.counters();
  cur.reset();
  return res;
}

}  // namespace

int run_userstack(std::span<char* const> args) {
  Config cfg;
  ArgParser p(
      "rendr-bench userstack [--json] [options]",
      "Measures rendr's user-space TCP stack (lwIP over TUN) inside a private network namespace:\n"
      "one flow kernel -> lwIP (rx) and lwIP -> kernel (tx), the same bytes kernel -> kernel over\n"
      "loopback in the same run (raw), and freeze + snapshot + restore + thaw of an idle\n"
      "connection. Then rendr-agent moves a 1 ms echo connection between two hosts of a gateway\n"
      "lab (rbus-*), as `rendr-bench migrate` does: native <-> userstack (stalls) and userstack\n"
      "-> userstack (downtime). Needs root (namespaces, TUN, eBPF and TCP_REPAIR for the labs).\n"
      "Targets: rx and tx >= 5 Gbit/s, snapshot+restore p50 <= 50 us, cross-method stall <= 5 ms,\n"
      "userstack downtime p50 <= 2 ms.");
  p.flag("json", &cfg.json, "print one JSON object as the last line of stdout");
  p.flag("quiet", &cfg.quiet, "no progress lines on stderr");
  p.uint("mib", &cfg.mib, 1, 1 << 20, "MiB per transfer (each direction and the baseline)");
  p.uint("restore-iters", &cfg.restore_iters, 1, 1'000'000, "snapshot + restore cycles");
  p.uint("mtu", &cfg.mtu, 1280, 65535, "TUN MTU");
  p.uint("send-mss", &cfg.send_mss, 536, 65000, "lwIP send MSS (StackOptions::send_mss)");
  p.uint("moves", &cfg.moves, 0, 1000,
         "agent moves per lab (mixed: n2u/u2n stalls; userstack: u->u downtime), 0 skips");
  auto parsed = p.parse(args);
  if (!parsed) {
    std::fprintf(stderr, "rendr-bench userstack: %s\n", parsed.error().message().c_str());
    return kExitUsage;
  }
  if (!*parsed) {
    return kExitOk;
  }
  const std::string ns = "rbench-us-" + std::to_string(::getpid());
  if (auto st = lab::netns_add(ns); !st.ok()) {
    std::fprintf(stderr, "rendr-bench userstack: %s\n", st.error().message().c_str());
    return kExitFailed;
  }
  struct Drop {
    std::string n;
    ~Drop() { lab::netns_del(n); }
  } drop{ns};
  auto prov = lab::run_script(
      "provision " + std::string(kTun),
      {lab::in_ns(ns, std::string("ip tuntap add dev ") + kTun + " mode tun"),
       lab::in_ns(ns, std::string("ip link set ") + kTun + " up"),
       lab::in_ns(ns, std::string("ip addr add 10.77.0.1/32 dev ") + kTun),
       lab::in_ns(ns, std::string("ip route add 198.18.0.0/24 dev ") + kTun + " src 10.77.0.1")});
  auto nsfd = lab::open_netns(ns);
  if (!prov.ok() || !nsfd) {
    std::fprintf(stderr, "rendr-bench userstack: %s\n",
                 (!prov.ok() ? prov.error() : nsfd.error()).message().c_str());
    return kExitFailed;
  }
  Result<Results> r = make_error(std::errc::io_error, "not run");
  {
    auto in = lab::NetnsEnter::enter(nsfd->get());
    if (!in) {
      std::fprintf(stderr, "rendr-bench userstack: %s\n", in.error().message().c_str());
      return kExitFailed;
    }
    Progress prog("rendr-bench userstack", cfg.quiet);
    r = run(cfg, prog);
  }
  if (!r) {
    std::fprintf(stderr, "rendr-bench userstack: %s\n", r.error().message().c_str());
    return kExitFailed;
  }
  // The agents' labs run from the original namespace, after the stack above is gone.
  std::optional<UserstackMoves> moves;
  if (cfg.moves > 0) {
    if (!cfg.quiet) {
      std::fprintf(stderr, "rendr-bench userstack: agent moves (mixed lab, then userstack lab)\n");
    }
    auto m = measure_userstack_moves(static_cast<int>(cfg.moves));
    if (!m) {
      std::fprintf(stderr, "rendr-bench userstack: %s\n", m.error().message().c_str());
      return kExitFailed;
    }
    moves = std::move(*m);
    if (!moves->failures.empty()) {
      std::fprintf(stderr, "rendr-bench userstack: moves: %s\n", moves->failures.c_str());
    }
  }
  const double rx = gbps(r->rx.bytes, r->rx.seconds);
  const double tx = gbps(r->tx.bytes, r->tx.seconds);
  const double raw = gbps(r->raw.bytes, r->raw.seconds);
  std::printf("rendr-bench userstack  %llu MiB per transfer, TUN MTU %llu, lwIP send MSS %llu\n",
              static_cast<unsigned long long>(cfg.mib), static_cast<unsigned long long>(cfg.mtu),
              static_cast<unsigned long long>(cfg.send_mss));
  std::printf("rx (kernel -> lwIP)   %6.2f Gbit/s\n", rx);
  std::printf("tx (lwIP -> kernel)   %6.2f Gbit/s\n", tx);
  std::printf("raw (kernel -> kernel, loopback) %6.2f Gbit/s\n", raw);
  std::printf("snapshot + restore    p50 %.1f us  p99 %.1f us  (%llu cycles)\n",
              r->restore.percentile_us(50), r->restore.percentile_us(99),
              static_cast<unsigned long long>(r->restore.size()));
  if (moves) {
    std::printf("n2u stall (native -> userstack)  p50 %.2f ms  max %.2f ms  (%zu moves)\n",
                percentile(moves->n2u_ms, 50), percentile(moves->n2u_ms, 100),
                moves->n2u_ms.size());
    std::printf("u2n stall (userstack -> native)  p50 %.2f ms  max %.2f ms  (%zu moves)\n",
                percentile(moves->u2n_ms, 50), percentile(moves->u2n_ms, 100),
                moves->u2n_ms.size());
    std::printf("u->u downtime                    p50 %.2f ms  p99 %.2f ms  (%zu moves, echo "
                "baseline p99 %.2f ms)\n",
                percentile(moves->u2u_ms, 50), percentile(moves->u2u_ms, 99),
                moves->u2u_ms.size(), moves->baseline_p99_ms);
  }
  if (cfg.json) {
    JsonWriter j;
    j.begin_object();
    j.kv("bench", "userstack");
    j.kv("mib", cfg.mib);
    j.kv("tun_mtu", cfg.mtu);
    j.kv("send_mss", cfg.send_mss);
    j.kv("rx_gbps", rx);
    j.kv("tx_gbps", tx);
    j.kv("raw_kernel_gbps", raw);
    j.kv("rx_vs_raw_ratio", raw > 0 ? rx / raw : 0.0);
    j.kv("tx_vs_raw_ratio", raw > 0 ? tx / raw : 0.0);
    j.kv("snapshot_restore_p50_us", r->restore.percentile_us(50));
    j.kv("snapshot_restore_p99_us", r->restore.percentile_us(99));
    j.kv("snapshot_restore_cycles", static_cast<std::uint64_t>(r->restore.size()));
    j.kv("rx_packets", r->counters.rx_packets);
    j.kv("tx_packets", r->counters.tx_packets);
    j.kv("rx_hold_dropped", r->counters.rx_hold_dropped);
    // Per move the peer's worst echo round trip around it; p50 over the moves (null: skipped
    // with --moves 0, or no move of that kind was measured).
    auto p50_or_null = [&j](const char* key, const std::vector<double>& v, double pct) {
      if (v.empty()) {
        j.kv_null(key);
      } else {
        j.kv(key, percentile(v, pct));
      }
    };
    const std::vector<double> none;
    p50_or_null("u2n_stall_ms", moves ? moves->u2n_ms : none, 50);
    p50_or_null("u2n_stall_max_ms", moves ? moves->u2n_ms : none, 100);
    p50_or_null("n2u_stall_ms", moves ? moves->n2u_ms : none, 50);
    p50_or_null("n2u_stall_max_ms", moves ? moves->n2u_ms : none, 100);
    p50_or_null("migrate_downtime_p50_ms", moves ? moves->u2u_ms : none, 50);
    p50_or_null("migrate_downtime_p99_ms", moves ? moves->u2u_ms : none, 99);
    p50_or_null("migrate_frozen_p50_ms", moves ? moves->frozen_ms : none, 50);
    write_rounded(j, "u2n_stalls_ms", moves ? moves->u2n_ms : none, 3);
    write_rounded(j, "n2u_stalls_ms", moves ? moves->n2u_ms : none, 3);
    write_rounded(j, "migrate_downtimes_ms", moves ? moves->u2u_ms : none, 3);
    j.kv("moves", moves ? cfg.moves : 0);
    j.kv("moves_bytes_lost", moves ? moves->bytes_lost : 0);
    j.kv("moves_failures", moves ? moves->failures : std::string());
    j.end_object();
    std::printf("%s\n", j.str().c_str());
  }
  return kExitOk;
}

}  // namespace rendr::bench
