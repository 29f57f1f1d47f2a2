// SPDX-License-Identifier: Apache-2.0
// rendr-bench ingress: what `rendr-tun` (docs/tun-ingress.md) gives an unmodified application,
// in the ingress lab (tools/lab/ingress_lab.hpp: app -TUN- two paths - egress - origin), with
// rendr-tun ingress and egress as separate processes (tools/lab/ingress_stack.hpp):
//
//   e2e       one app flow to 198.18.0.10 (routed into the TUN): lwIP, an engine flow over
//             path 1, the egress's connect() to the origin; N MiB downloaded, every byte checked
//   raw       the same download to 198.19.0.10: the same origin routed over path 1 and the
//             egress's forwarding, no rendr (same run, same lab)
//   failover  a download runs, its active path is silently dropped (nftables, both ways); the
//             longest gap between two reads of the app around the drop, per run (the path back
//             between runs); p50 and max
//   flows     client threads in the app namespace open, use (8-byte request, 64-byte answer)
//             and close flows through rendr-tun for a few seconds: flows per second
//
// The app's client and the origin are threads of this process (sockets made inside their
// namespaces); rendr-tun's CPU time per thread name is read from /proc around the e2e transfer.
#include "cli.hpp"
#include "stats.hpp"
#include "subcommand.hpp"
#include "thread_cpu.hpp"

#include "lab/ingress_lab.hpp"
#include "lab/ingress_stack.hpp"

#include <rendr/common/endpoint.hpp>
#include <rendr/common/json.hpp>
#include <rendr/common/unique_fd.hpp>

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace rendr::bench {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::uint16_t kPort = 9000;
constexpr std::uint64_t kForever = ~0ULL;
// The origin sends byte i = pattern[i % kPeriod]: a prime period, so a lost, repeated or
// shifted chunk never compares equal.
constexpr std::size_t kPeriod = 1048573;
constexpr std::size_t kChunk = 256 * 1024;

const std::vector<char>& pattern() {
  static const std::vector<char> p = [] {
    std::vector<char> v(kPeriod + kChunk);
    std::uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (std::size_t i = 0; i < kPeriod; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      v[i] = static_cast<char>(x);
    }
    std::memcpy(v.data() + kPeriod, v.data(), kChunk);  // any offset has kChunk contiguous bytes
    return v;
  }();
  return p;
}

struct Config {
  bool json = false;
  bool quiet = false;
  bool check_targets = false;
  std::uint64_t mib = 1024;
  std::uint64_t runs = 10;
  std::uint64_t pre_mib = 16;
  std::uint64_t post_ms = 2000;
  std::uint64_t flow_clients = 8;
  std::uint64_t flows_ms = 3000;
  std::uint64_t send_mss = 32768;
  std::uint64_t probe_ms = 0;
  std::string tun_args;
  std::string prefix;
};

void bound(int fd, int seconds) {
  timeval tv{seconds, 0};
  (void)::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  (void)::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

// kHere: "the calling thread is in the namespace already" (a flows client thread).
constexpr int kHere = -1;

// socket_in makes a TCP socket inside the namespace |nsfd| (it stays there).
Result<UniqueFd> socket_in(int nsfd) {
  if (nsfd == kHere) {
    return UniqueFd::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  }
  auto in = lab::NetnsEnter::enter(nsfd);
  if (!in) {
    return std::move(in).take_error();
  }
  auto s = UniqueFd::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (!s) {
    return std::move(s).take_error();
  }
  return s;
}

Result<UniqueFd> connect_in(int nsfd, const std::string& addr) {
  auto s = socket_in(nsfd);
  if (!s) {
    return s;
  }
  bound(s->get(), 20);
  auto ep = Endpoint::parse_address(addr, kPort);
  if (!ep) {
    return std::move(ep).take_error();
  }
  sockaddr_storage ss{};
  const socklen_t len = ep->to_sockaddr(ss);
  if (::connect(s->get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    return errno_error("connect " + addr);
  }
  return s;
}

bool send_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) {
      return false;
    }
    p += k;
    n -= static_cast<std::size_t>(k);
  }
  return true;
}

// Origin: port 9000 on every address of its namespace. Per connection (a worker of a small
// pool): an 8-byte request N, N bytes of the pattern (kForever: until the peer goes away), then
// it waits for the peer's EOF and closes.
class Origin {
 public:
  Status start(int nsfd) {
    auto s = socket_in(nsfd);
    if (!s) {
      return std::move(s).take_error();
    }
    const int one = 1;
    (void)::setsockopt(s->get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(kPort);
    if (::bind(s->get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(s->get(), 1024) != 0) {
      return errno_error("origin listen :9000");
    }
    listen_ = std::move(*s);
    acceptor_ = std::thread([this] { accept_loop(); });
    for (int i = 0; i < 32; ++i) {
      workers_.emplace_back([this] { work(); });
    }
    return {};
  }
  ~Origin() {
    stop_ = true;
    if (listen_.valid()) {
      ::shutdown(listen_.get(), SHUT_RDWR);
    }
    {
      // Wake the workers blocked in send/recv on connections still open.
      std::lock_guard lk(mu_);
      for (int fd : active_) {
        ::shutdown(fd, SHUT_RDWR);
      }
    }
    cv_.notify_all();
    if (acceptor_.joinable()) {
      acceptor_.join();
    }
    for (auto& w : workers_) {
      w.join();
    }
  }

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{listen_.get(), POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) {
        continue;
      }
      UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!c.valid()) {
        continue;
      }
      bound(c.get(), 30);
      std::lock_guard lk(mu_);
      queue_.push_back(std::move(c));
      cv_.notify_one();
    }
  }
  void work() {
    for (;;) {
      UniqueFd c;
      {
        std::unique_lock lk(mu_);
        cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
        if (stop_ && queue_.empty()) {
          return;
        }
        c = std::move(queue_.front());
        queue_.pop_front();
        active_.push_back(c.get());
      }
      serve(c.get());
      std::lock_guard lk(mu_);
      active_.erase(std::find(active_.begin(), active_.end(), c.get()));
    }
  }
  void serve(int fd) {
    std::uint64_t n = 0;
    std::size_t got = 0;
    while (got < sizeof n) {
      const ssize_t k = ::recv(fd, reinterpret_cast<char*>(&n) + got, sizeof n - got, 0);
      if (k <= 0) {
        return;
      }
      got += static_cast<std::size_t>(k);
    }
    const auto& pat = pattern();
    std::uint64_t off = 0;
    while (off < n && !stop_) {
      const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, n - off));
      const ssize_t k =
          ::send(fd, pat.data() + off % kPeriod, want, MSG_NOSIGNAL);
      if (k <= 0) {
        return;
      }
      off += static_cast<std::uint64_t>(k);
    }
    char sink[512];
    while (::recv(fd, sink, sizeof sink, 0) > 0) {
    }
  }
  UniqueFd listen_;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<UniqueFd> queue_;
  std::vector<int> active_;  // fds being served (owned by their worker)
};

struct Download {
  std::uint64_t bytes = 0;
  double seconds = 0;
  bool intact = true;
  double max_gap_ms = 0;  // from the last read before at() on (see download())
};

// download asks the origin at |addr| (through the app namespace) for |n| bytes and reads
// |want| of them (want <= n), checking each against the pattern. |at|: called once when
// |at_bytes| arrived (the failover run starts dropping the path there, on another thread, so
// reading goes on); the longest gap between two reads from the last one before it is
// max_gap_ms. |before_close| runs with the connection still open (CPU readings while
// rendr-tun's flow threads live). |min_after|: reading goes on at least that long after at()
// (bytes already in the buffers along the way must not hide the stall).
template <typename AtBytes, typename BeforeClose>
Result<Download> download(int app_ns, const std::string& addr, std::uint64_t n,
                          std::uint64_t want, std::uint64_t at_bytes, AtBytes&& at,
                          BeforeClose&& before_close,
                          std::chrono::milliseconds min_after = std::chrono::milliseconds(0)) {
  auto c = connect_in(app_ns, addr);
  if (!c) {
    return std::move(c).take_error();
  }
  if (!send_all(c->get(), reinterpret_cast<const char*>(&n), sizeof n)) {
    return errno_error("request to " + addr);
  }
  const auto& pat = pattern();
  // One buffer per client thread: a short flow (flows/s) must not pay for zeroing and faulting
  // in 256 KiB of the bench's own memory each time.
  thread_local std::vector<char> buf(kChunk);
  Download d;
  const auto t0 = Clock::now();
  bool fired = false;
  Clock::time_point last = t0;
  Clock::time_point fired_at = t0;
  while (d.bytes < want || (fired && Clock::now() - fired_at < min_after)) {
    // An endless stream may be read past |want| (min_after); a finite one never past it.
    const std::uint64_t left = n == kForever ? buf.size() : want - std::min(want, d.bytes);
    const auto ask = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), left));
    if (ask == 0) {
      break;
    }
    const ssize_t k = ::recv(c->get(), buf.data(), ask, 0);
    const auto now = Clock::now();
    if (k <= 0) {
      return make_error(std::errc::io_error,
                        "download from " + addr + ": " + (k == 0 ? "EOF" : std::strerror(errno)) +
                            " after " + std::to_string(d.bytes) + " of " + std::to_string(want) +
                            " bytes");
    }
    if (fired) {  // |last| is the read before at() for the first one
      d.max_gap_ms = std::max(d.max_gap_ms, std::chrono::duration<double, std::milli>(now - last).count());
    }
    last = now;
    if (std::memcmp(buf.data(), pat.data() + d.bytes % kPeriod, static_cast<std::size_t>(k)) != 0) {
      d.intact = false;
    }
    d.bytes += static_cast<std::uint64_t>(k);
    if (!fired && d.bytes >= at_bytes) {
      fired = true;
      fired_at = Clock::now();
      at();
    }
  }
  d.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  before_close();
  return d;
}

double gbps(const Download& d) {
  return d.seconds > 0 ? static_cast<double>(d.bytes) * 8 / d.seconds / 1e9 : 0;
}

std::vector<std::string> split(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> v;
  for (std::string w; in >> w;) {
    v.push_back(w);
  }
  return v;
}

// flat_object: the flat JSON object under |key| in |json| ("null" when absent).
std::string flat_object(const std::string& json, const std::string& key) {
  const auto at = json.find("\"" + key + "\":{");
  if (at == std::string::npos) {
    return "null";
  }
  const auto open = json.find('{', at);
  const auto close = json.find('}', open);
  return close == std::string::npos ? "null" : json.substr(open, close - open + 1);
}

double load_1m() {
  std::ifstream f("/proc/loadavg");
  double l = -1;
  f >> l;
  return l;
}

struct Flows {
  std::uint64_t ok = 0;
  std::uint64_t failed = 0;
  double seconds = 0;
  std::string first_error;
};

Flows run_flows(int app_ns, const char* addr, std::uint64_t clients,
                std::chrono::milliseconds dur) {
  std::atomic<std::uint64_t> ok{0};
  std::atomic<std::uint64_t> failed{0};
  std::mutex mu;
  std::string first_error;
  const auto t0 = Clock::now();
  const auto end = t0 + dur;
  std::vector<std::thread> ts;
  for (std::uint64_t i = 0; i < clients; ++i) {
    ts.emplace_back([&] {
      // The client thread lives in the app namespace: its sockets need no setns each (the
      // bench's own cost per flow, on the same two cores as rendr-tun).
      auto in = lab::NetnsEnter::enter(app_ns);
      if (!in) {
        ++failed;
        std::lock_guard lk(mu);
        first_error = in.error().message();
        return;
      }
      while (Clock::now() < end) {
        auto d = download(kHere, addr, 64, 64, kForever, [] {}, [] {});
        if (d && d->intact && d->bytes == 64) {
          ++ok;
          continue;
        }
        ++failed;
        std::lock_guard lk(mu);
        if (first_error.empty()) {
          first_error = d ? "answer not intact" : d.error().message();
        }
      }
    });
  }
  for (auto& t : ts) {
    t.join();
  }
  Flows f;
  f.ok = ok;
  f.failed = failed;
  f.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  f.first_error = first_error;
  return f;
}

// CpuReport: rendr-tun's CPU during the e2e transfer, per process and per thread name.
struct CpuReport {
  CpuTime ingress, egress, client;
  std::map<std::string, CpuTime> ingress_threads, egress_threads;
};

std::map<std::string, CpuTime> diff(const std::map<std::string, CpuTime>& after,
                                    const std::map<std::string, CpuTime>& before) {
  std::map<std::string, CpuTime> d;
  for (const auto& [k, v] : after) {
    const auto it = before.find(k);
    d[k] = it == before.end() ? v : v - it->second;
  }
  return d;
}

void write_threads(JsonWriter& j, const char* key, const std::map<std::string, CpuTime>& m) {
  j.begin_object(key);
  for (const auto& [k, v] : m) {
    if (v.total() > 0) {
      j.kv(k, v.total());
    }
  }
  j.end_object();
}

}  // namespace

int run_ingress(std::span<char* const> args) {
  Config cfg;
  ArgParser p(
      "rendr-bench ingress [--json] [options]",
      "Measures rendr-tun (TUN ingress + egress, docs/tun-ingress.md) in the ingress lab\n"
      "(rendr-lab's ingress topology, own prefix): a single app flow through the TUN, one engine\n"
      "path and the egress to the origin (e2e) against the same download routed without rendr\n"
      "(raw); the app's longest read gap when the active path is silently dropped (nftables),\n"
      "per run; new app flows per second through one rendr-tun. Needs root (namespaces, TUN).\n"
      "Targets: e2e >= 3 Gbit/s, failover stall p50 <= 50 ms, >= 2000 flows/s.");
  p.flag("json", &cfg.json, "print one JSON object as the last line of stdout");
  p.flag("quiet", &cfg.quiet, "no progress lines on stderr");
  p.flag("check-targets", &cfg.check_targets, "exit 3 when a target is missed");
  p.uint("mib", &cfg.mib, 1, 1 << 20, "MiB per download (e2e and raw)");
  p.uint("runs", &cfg.runs, 0, 1000, "failover runs (0 skips)");
  p.uint("pre-mib", &cfg.pre_mib, 1, 1 << 16,
         "failover: MiB read before the drop (as much again is read after it)");
  p.uint("post-ms", &cfg.post_ms, 0, 60000,
         "failover: read at least this long after the drop (buffered bytes hide a stall)");
  p.uint("flow-clients", &cfg.flow_clients, 0, 256, "flows: concurrent client threads (0 skips)");
  p.uint("flows-ms", &cfg.flows_ms, 100, 600000, "flows: how long the clients run");
  p.uint("send-mss", &cfg.send_mss, 0, 65000,
         "rendr-tun ingress --send-mss (lwIP's segments to the app; 0 = lwIP's 1460)");
  p.uint("probe-ms", &cfg.probe_ms, 0, 1000,
         "rendr-tun --probe-ms on both sides (path probe interval; dead after 3x; 0 = the "
         "engine's 1 s / 500 ms)");
  p.str("tun-args", &cfg.tun_args, "ARGS", "extra arguments for rendr-tun ingress (split on spaces)");
  p.str("prefix", &cfg.prefix, "P", "lab namespace prefix (default rbi<pid>)");
  auto parsed = p.parse(args);
  if (!parsed) {
    std::fprintf(stderr, "rendr-bench ingress: %s\n", parsed.error().message().c_str());
    return kExitUsage;
  }
  if (!*parsed) {
    return kExitOk;
  }
  auto fail = [](const std::string& what, const Error& e) {
    std::fprintf(stderr, "rendr-bench ingress: %s: %s\n", what.c_str(), e.message().c_str());
    return kExitFailed;
  };
  auto say = [&](const std::string& s) {
    if (!cfg.quiet) {
      std::fprintf(stderr, "rendr-bench ingress: %s\n", s.c_str());
    }
  };
  if (cfg.prefix.empty()) {
    cfg.prefix = "rbi" + std::to_string(::getpid());
  }
  const double load_start = load_1m();
  say("building the ingress lab " + cfg.prefix);
  auto labr = lab::IngressLab::create(cfg.prefix);
  if (!labr) {
    return fail("lab", labr.error());
  }
  lab::IngressLab& lab = **labr;
  lab::IngressStackOptions so;
  so.tun_bin = RENDR_TUN_BIN;
  so.ingress_args = split(cfg.tun_args);
  if (cfg.send_mss != 0) {
    so.ingress_args.insert(so.ingress_args.end(), {"--send-mss", std::to_string(cfg.send_mss)});
  }
  if (cfg.probe_ms != 0) {
    for (auto* a : {&so.ingress_args, &so.egress_args}) {
      a->insert(a->end(), {"--probe-ms", std::to_string(cfg.probe_ms)});
    }
  }
  auto stackr = lab::IngressStack::start(lab, so);
  if (!stackr) {
    return fail("rendr-tun", stackr.error());
  }
  lab::IngressStack& stack = **stackr;
  auto app_ns = lab.netns_fd("app");
  auto origin_ns = lab.netns_fd("origin");
  if (!app_ns || !origin_ns) {
    return fail("namespaces", app_ns ? origin_ns.error() : app_ns.error());
  }
  Origin origin;
  if (auto st = origin.start(origin_ns->get()); !st) {
    return fail("origin", st.error());
  }
  const std::uint64_t total = cfg.mib << 20;
  const int app = app_ns->get();
  const pid_t in_pid = stack.pid("ingress");
  const pid_t eg_pid = stack.pid("egress");

  say("raw: " + std::to_string(cfg.mib) + " MiB to " + lab::IngressLab::kOriginRaw4 +
      " (routed, no rendr)");
  auto raw = download(app, lab::IngressLab::kOriginRaw4, total, total, kForever, [] {}, [] {});
  if (!raw) {
    return fail("raw download", raw.error());
  }
  say("e2e: " + std::to_string(cfg.mib) + " MiB to " + lab::IngressLab::kOrigin4 +
      " through rendr-tun");
  CpuReport cpu;
  const auto in0 = process_cpu(in_pid);
  const auto eg0 = process_cpu(eg_pid);
  const auto in_t0 = threads_cpu_by_name(in_pid);
  const auto eg_t0 = threads_cpu_by_name(eg_pid);
  const auto me0 = this_thread_cpu();
  auto e2e = download(app, lab::IngressLab::kOrigin4, total, total, kForever, [] {}, [&] {
    cpu.client = this_thread_cpu() - me0;
    cpu.ingress = process_cpu(in_pid) - in0;
    cpu.egress = process_cpu(eg_pid) - eg0;
    cpu.ingress_threads = diff(threads_cpu_by_name(in_pid), in_t0);
    cpu.egress_threads = diff(threads_cpu_by_name(eg_pid), eg_t0);
  });
  if (!e2e) {
    return fail("e2e download", e2e.error());
  }

  std::vector<double> stalls;
  bool fo_intact = true;
  int fo_failed = 0;
  std::string fo_errors;
  int on_p1 = 0;       // runs whose flow was on path 1 at the drop
  int on_dropped = 0;  // runs whose dropped path carried the flow (every run, ideally)
  for (std::uint64_t r = 0; r < cfg.runs; ++r) {
    say("failover run " + std::to_string(r + 1) + "/" + std::to_string(cfg.runs));
    const std::uint64_t pre = cfg.pre_mib << 20;
    int active = 0;  // the lab path the flow was on at the drop (dropped; 1 when unknown)
    std::string late_status;
    Status dropped = make_error(std::errc::io_error, "the download ended before the drop");
    std::thread dropper;
    auto d = download(
        app, lab::IngressLab::kOrigin4, kForever, 2 * pre, pre,
        [&] {
          dropper = std::thread([&] {
            // The path the download's bytes come on: the egress's active one.
            active = lab::IngressLab::active_path(stack.status("egress"));
            active = active == 0 ? 1 : active;
            dropped = lab.drop(active, true);
            // What both sides think 1.5 s later, shown when the run stalls that long.
            std::this_thread::sleep_for(1500ms);
            late_status = "ingress: " + stack.status("ingress") +
                          "egress: " + stack.status("egress");
          });
        },
        [] {}, std::chrono::milliseconds(cfg.post_ms));
    if (dropper.joinable()) {
      dropper.join();
    }
    const int path = active == 0 ? 1 : active;  // no drop happened: nothing to undo but path 1
    const auto counters = lab.drop_counters(path);
    const Status undrop = lab.drop(path, false);
    if (!dropped || !undrop) {
      return fail("drop the active path", dropped ? undrop.error() : dropped.error());
    }
    if (!d || d->max_gap_ms > 1500) {
      std::fprintf(stderr, "rendr-bench ingress: failover run %llu: %s; 1.5 s after the drop:\n%s",
                   static_cast<unsigned long long>(r + 1),
                   d ? ("stalled " + std::to_string(d->max_gap_ms) + " ms").c_str()
                     : d.error().message().c_str(),
                   late_status.c_str());
    }
    if (!d) {
      // The app saw an error (a reset: rendr-tun ended the flow) or nothing for 20 s: a failed
      // run, counted apart (not a stall sample).
      ++fo_failed;
      fo_errors += (fo_errors.empty() ? "" : "; ") + d.error().message();
      continue;
    }
    fo_intact = fo_intact && d->intact;
    // The dropped path carried the flow (it had traffic to drop).
    if (counters && counters->in_packets > 0) {
      ++on_dropped;
      on_p1 += path == 1 ? 1 : 0;
    }
    stalls.push_back(d->max_gap_ms);
  }

  Flows flows;
  Flows raw_flows;
  CpuTime flows_in, flows_eg, flows_self;
  std::map<std::string, CpuTime> flows_in_threads, flows_eg_threads;
  std::string flows_status;
  if (cfg.flow_clients > 0) {
    const auto i0 = process_cpu(in_pid);
    const auto e0 = process_cpu(eg_pid);
    const auto s0 = process_cpu(::getpid());
    const auto it0 = threads_cpu_by_name(in_pid);
    const auto et0 = threads_cpu_by_name(eg_pid);
    say("flows: " + std::to_string(cfg.flow_clients) + " clients for " +
        std::to_string(cfg.flows_ms) + " ms");
    flows = run_flows(app, lab::IngressLab::kOrigin4, cfg.flow_clients,
                      std::chrono::milliseconds(cfg.flows_ms));
    flows_in = process_cpu(in_pid) - i0;
    flows_eg = process_cpu(eg_pid) - e0;
    flows_self = process_cpu(::getpid()) - s0;
    flows_in_threads = diff(threads_cpu_by_name(in_pid), it0);
    flows_eg_threads = diff(threads_cpu_by_name(eg_pid), et0);
    flows_status = stack.status("ingress");
    // The baseline: the same clients and origin, routed without rendr (the egress host only
    // forwards), for as long.
    say("raw flows: " + std::to_string(cfg.flow_clients) + " clients for " +
        std::to_string(cfg.flows_ms) + " ms to " + lab::IngressLab::kOriginRaw4);
    raw_flows = run_flows(app, lab::IngressLab::kOriginRaw4, cfg.flow_clients,
                          std::chrono::milliseconds(cfg.flows_ms));
  }
  const double load_end = load_1m();
  const double e2e_gbps = gbps(*e2e);
  const double raw_gbps = gbps(*raw);
  const double stall_p50 = percentile(stalls, 50);
  const double stall_max = percentile(stalls, 100);
  const double fps = flows.seconds > 0 ? static_cast<double>(flows.ok) / flows.seconds : 0;
  const double raw_fps =
      raw_flows.seconds > 0 ? static_cast<double>(raw_flows.ok) / raw_flows.seconds : 0;
  const bool intact = e2e->intact && raw->intact && fo_intact;
  const double gib = static_cast<double>(e2e->bytes) / (1ULL << 30);

  std::printf("rendr-bench ingress  %llu MiB per download, rendr-tun --send-mss %llu --probe-ms "
              "%llu, load %.2f -> %.2f\n",
              static_cast<unsigned long long>(cfg.mib),
              static_cast<unsigned long long>(cfg.send_mss),
              static_cast<unsigned long long>(cfg.probe_ms), load_start, load_end);
  std::printf("e2e (app -> TUN -> rendr-tun -> engine, 1 path -> egress -> origin) %6.2f Gbit/s  "
              "(target >= 3)\n", e2e_gbps);
  std::printf("raw (app -> origin, routed, no rendr)                             %6.2f Gbit/s\n",
              raw_gbps);
  std::printf("cpu during e2e: ingress %.2f s, egress %.2f s, app client %.2f s (%.2f CPU-s/GiB "
              "in rendr-tun)\n", cpu.ingress.total(), cpu.egress.total(), cpu.client.total(),
              gib > 0 ? (cpu.ingress.total() + cpu.egress.total()) / gib : 0.0);
  for (const auto& [name, m] : {std::pair{"ingress", &cpu.ingress_threads},
                                std::pair{"egress", &cpu.egress_threads}}) {
    std::printf("  %s threads:", name);
    for (const auto& [k, v] : *m) {
      if (v.total() > 0) {
        std::printf(" %s %.2f s (usr %.2f sys %.2f);", k.c_str(), v.total(), v.user_s, v.sys_s);
      }
    }
    std::printf("\n");
  }
  std::printf("failover stall (largest app read gap, active path dropped) p50 %.1f ms  max %.1f "
              "ms  (%zu runs, %d with traffic on the dropped path, %d on path 1; target p50 <= "
              "50)\n",
              stall_p50, stall_max, stalls.size(), on_dropped, on_p1);
  if (fo_failed > 0) {
    std::printf("failover runs FAILED at the app: %d (%s)\n", fo_failed, fo_errors.c_str());
  }
  std::printf("new app flows through one rendr-tun  %.0f /s  (%llu ok, %llu failed, %llu "
              "clients; target >= 2000)%s%s\n",
              fps, static_cast<unsigned long long>(flows.ok),
              static_cast<unsigned long long>(flows.failed),
              static_cast<unsigned long long>(cfg.flow_clients),
              flows.first_error.empty() ? "" : ": ", flows.first_error.c_str());
  if (cfg.flow_clients > 0) {
    std::printf("cpu during flows: ingress %.2f s, egress %.2f s, bench (clients + origin) %.2f s "
                "over %.1f s\n", flows_in.total(), flows_eg.total(), flows_self.total(),
                flows.seconds);
    std::printf("raw flows (the same clients, routed, no rendr)  %.0f /s  (%llu failed%s%s)\n",
                raw_fps, static_cast<unsigned long long>(raw_flows.failed),
                raw_flows.first_error.empty() ? "" : ": ", raw_flows.first_error.c_str());
  }
  std::printf("bytes intact: %s\n", intact ? "yes" : "NO");
  if (cfg.json) {
    JsonWriter j;
    j.begin_object();
    j.kv("bench", "ingress");
    j.kv("mib", cfg.mib);
    j.kv("send_mss", cfg.send_mss);
    j.kv("probe_ms", cfg.probe_ms);
    j.kv("load_1m_start", load_start);
    j.kv("load_1m_end", load_end);
    j.kv("e2e_gbps", e2e_gbps);
    j.kv("raw_gbps", raw_gbps);
    j.kv("e2e_vs_raw_ratio", raw_gbps > 0 ? e2e_gbps / raw_gbps : 0.0);
    j.kv("e2e_bytes", e2e->bytes);
    j.kv("raw_bytes", raw->bytes);
    j.kv("bytes_intact", intact);
    j.begin_object("e2e_cpu_s");
    j.kv("ingress", cpu.ingress.total());
    j.kv("egress", cpu.egress.total());
    j.kv("app_client", cpu.client.total());
    write_threads(j, "ingress_threads", cpu.ingress_threads);
    write_threads(j, "egress_threads", cpu.egress_threads);
    j.end_object();
    j.kv("e2e_rendr_cpu_s_per_gib",
         gib > 0 ? (cpu.ingress.total() + cpu.egress.total()) / gib : 0.0);
    if (stalls.empty()) {
      j.kv_null("failover_stall_ms_p50");
      j.kv_null("failover_stall_ms_max");
    } else {
      j.kv("failover_stall_ms_p50", stall_p50);
      j.kv("failover_stall_ms_max", stall_max);
    }
    j.begin_array("failover_stall_ms");
    for (double s : stalls) {
      j.number(s);
    }
    j.end_array();
    j.kv("failover_runs", static_cast<std::uint64_t>(stalls.size()) +
                              static_cast<std::uint64_t>(fo_failed));
    j.kv("failover_runs_on_path1", on_p1);
    j.kv("failover_runs_on_dropped", on_dropped);
    j.kv("failover_runs_failed", fo_failed);
    j.kv("failover_errors", fo_errors);
    j.kv("flows_per_s", fps);
    j.kv("flows_ok", flows.ok);
    j.kv("flows_failed", flows.failed);
    j.kv("flow_clients", cfg.flow_clients);
    j.kv("flows_error", flows.first_error);
    j.kv("raw_flows_per_s", raw_fps);
    j.kv("raw_flows_failed", raw_flows.failed);
    j.kv("flows_vs_raw_ratio", raw_fps > 0 ? fps / raw_fps : 0.0);
    j.begin_object("flows_cpu_s");
    j.kv("ingress", flows_in.total());
    j.kv("egress", flows_eg.total());
    j.kv("bench", flows_self.total());
    write_threads(j, "ingress_live_threads", flows_in_threads);
    write_threads(j, "egress_live_threads", flows_eg_threads);
    j.end_object();
    j.raw("flows_ingress_counters",
          flat_object(flows_status, "counters"));
    j.end_object();
    std::printf("%s\n", j.str().c_str());
  }
  if (!intact) {
    std::fprintf(stderr, "rendr-bench ingress: bytes were NOT intact\n");
    return kExitFailed;
  }
  if (cfg.check_targets &&
      (e2e_gbps < 3 || (!stalls.empty() && stall_p50 > 50) ||
       (cfg.flow_clients > 0 && fps < 2000))) {
    return kExitTargetMissed;
  }
  return kExitOk;
}

}  // namespace rendr::bench
