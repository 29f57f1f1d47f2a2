// SPDX-License-Identifier: Apache-2.0
// rendr-bench repair — cost of TCP_REPAIR checkpoint + restore of live kernel sockets, measured in
// a private network namespace on loopback (client and server ends in the same netns):
//   idle     checkpoint -> release -> restore of an idle ESTABLISHED socket, N times in a row,
//            each followed by a 1-byte ping-pong over the restored socket
//   queued   the same with |queue| bytes unread in the receive queue and |queue| bytes in the send
//            queue (the peer does not read: its window is closed); byte counts and contents are
//            checked after every iteration and the whole stream is drained and checked at the end
//   batch    N established sockets checkpointed, released and restored phase by phase; a sample
//            is verified with ping-pong afterwards (repair_batch.cpp)
//   variants the idle loop once per RestoreOptions {ack_kick, window_probe} combination
// Only checkpoint() and restore() are timed; release (silent close) is reported on its own.
#include "cli.hpp"
#include "loopback.hpp"
#include "progress.hpp"
#include "repair_batch.hpp"
#include "repair_minimal.hpp"
#include "stats.hpp"
#include "subcommand.hpp"
#include "timing_sys.hpp"

#include <rendr/agents/capabilities.hpp>
#include <rendr/common/json.hpp>
#include <rendr/repair/repair.hpp>

#include <sched.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace rendr::bench {
namespace {

constexpr const char* kTool = "rendr-bench repair";
constexpr double kIdleTargetUs = 30.0;
constexpr double kBatchTargetS = 1.0;
constexpr std::uint64_t kBatchReference = 10000;  // the batch size the target is stated for

struct Config {
  bool json = false;
  bool quiet = false;
  bool check_targets = false;
  bool variants = false;
  bool syscall_profile = false;
  std::vector<std::string> phases{"idle", "minimal", "queued", "batch"};
  std::uint64_t idle_iters = 2000;
  std::uint64_t queued_iters = 200;
  std::uint64_t queue_bytes = 1U << 20;
  std::uint64_t batch = kBatchReference;
  std::uint64_t batch_verify = 200;
  std::uint64_t warmup = 50;
  std::int64_t cpu = -1;
  bool ack_kick = true;
  bool window_probe = true;
  bool options_first = true;  // read the options before the timed checkpoint, as the agent does

  [[nodiscard]] bool has(std::string_view phase) const {
    return std::find(phases.begin(), phases.end(), phase) != phases.end();
  }
};

// Per-iteration timings of one latency loop.
struct Latency {
  Samples total;       // checkpoint + restore
  Samples checkpoint;
  Samples restore;
  Samples release;
  Samples options;  // read_options() + the tuple before the checkpoint (not frozen yet); untimed
  std::uint64_t iterations = 0;
};

struct VariantResult {
  bool ack_kick;
  bool window_probe;
  Latency lat;
};

// Deterministic stream contents, so queued bytes can be checked anywhere in the stream.
std::byte pattern_at(std::uint64_t stream, std::uint64_t off) {
  std::uint64_t x = (off + 1) * 0x9E3779B97F4A7C15ULL ^ (stream * 0xD1B54A32D192ED03ULL);
  x ^= x >> 29;
  return static_cast<std::byte>(x & 0xFF);
}
std::vector<std::byte> pattern(std::uint64_t stream, std::uint64_t off, std::size_t n) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    v[i] = pattern_at(stream, off + i);
  }
  return v;
}

// migrate_once checkpoints |server|, releases the frozen socket (and the caller's descriptor),
// restores it from the snapshot and puts the restored fd back into |server|. |check| sees the
// snapshot before release, untimed.
//
// With |options_first| the socket's options and 4-tuple are read and its descriptor duplicated
// first (read_options(), FourTuple::of_socket, dup: as the agent does once the server handed the
// socket over and before it freezes the flow) and passed to the checkpoint: they are reported
// apart, not in checkpoint + restore.
template <typename Check>
Status migrate_once(repair::Repairer& rep, UniqueFd& server, const repair::RestoreOptions& ro,
                    bool options_first, Latency* lat, Check&& check) {
  std::optional<TcpSocketOptions> opts;
  std::optional<FourTuple> tuple;
  UniqueFd dup;
  const std::uint64_t to = now_ns();
  if (options_first) {
    auto o = rep.read_options(server.get());
    if (!o) {
      return std::move(o).take_error();
    }
    opts = std::move(*o);
    auto t = FourTuple::of_socket(server.get());
    if (!t) {
      return std::move(t).take_error();
    }
    tuple = *t;
    auto d = UniqueFd::dup(server.get());
    if (!d) {
      return std::move(d).take_error();
    }
    dup = std::move(*d);
  }
  const std::uint64_t t0 = now_ns();
  auto cp = options_first ? rep.checkpoint(dup, &*opts, &*tuple) : rep.checkpoint(server.get());
  const std::uint64_t t1 = now_ns();
  if (!cp) {
    return std::move(cp).take_error();
  }
  RENDR_TRY(check(cp->snapshot));
  const std::uint64_t t2 = now_ns();
  server.reset();  // the checkpoint holds the last reference, in repair mode: close is silent
  rep.release(std::move(cp->socket));
  const std::uint64_t t3 = now_ns();
  auto fd = rep.restore(cp->snapshot, ro);
  const std::uint64_t t4 = now_ns();
  if (!fd) {
    return std::move(fd).take_error();
  }
  server = std::move(*fd);
  if (lat != nullptr) {
    lat->checkpoint.add(t1 - t0);
    if (options_first) {
      lat->options.add(t0 - to);
    }
    lat->release.add(t3 - t2);
    lat->restore.add(t4 - t3);
    lat->total.add((t1 - t0) + (t4 - t3));
    ++lat->iterations;
  }
  return {};
}

struct Pair {
  UniqueFd listener;
  UniqueFd client;
  UniqueFd server;
};

Result<Pair> open_pair(const ListenOptions& lo, const ConnectOptions& co) {
  Pair p;
  auto l = listen_loopback(lo);
  if (!l) {
    return std::move(l).take_error();
  }
  p.listener = std::move(*l);
  auto port = local_port(p.listener.get());
  if (!port) {
    return std::move(port).take_error();
  }
  auto c = connect_loopback(*port, co);
  if (!c) {
    return std::move(c).take_error();
  }
  p.client = std::move(*c);
  auto s = accept_one(p.listener.get());
  if (!s) {
    return std::move(s).take_error();
  }
  p.server = std::move(*s);
  return p;
}

Result<Latency> run_idle(const Config& cfg, repair::Repairer& rep,
                         const repair::RestoreOptions& ro, std::uint64_t iters, Progress& prog,
                         const std::string& label) {
  auto pair = open_pair({}, {});
  if (!pair) {
    return std::move(pair).take_error().with_context(label + ": set up a connection");
  }
  auto no_check = [](const TcpSnapshot& s) -> Status {
    if (!s.send_queue.empty() || !s.recv_queue.empty()) {
      return make_error(std::errc::io_error, "idle socket has queued data");
    }
    return {};
  };
  Latency lat;
  lat.total.reserve(iters);
  lat.checkpoint.reserve(iters);
  lat.restore.reserve(iters);
  lat.release.reserve(iters);
  prog.begin(label, cfg.warmup + iters);
  for (std::uint64_t i = 0; i < cfg.warmup + iters; ++i) {
    const bool measured = i >= cfg.warmup;
    if (auto st = migrate_once(rep, pair->server, ro, cfg.options_first, measured ? &lat : nullptr, no_check);
        !st.ok()) {
      return std::move(st).take_error().with_context(label + " iteration " + std::to_string(i));
    }
    if (auto st = ping_pong(pair->server.get(), pair->client.get(), static_cast<std::uint8_t>(i));
        !st.ok()) {
      return std::move(st).take_error().with_context(label + " iteration " + std::to_string(i) +
                                                     ": stream check after restore");
    }
    prog.tick(i + 1);
  }
  char buf[96];
  std::snprintf(buf, sizeof buf, "p50 %.1f us", lat.total.percentile_us(50));
  prog.end(buf);
  return lat;
}

Result<Alternated> run_vs_minimal(const Config& cfg, repair::Repairer& rep,
                                  const repair::RestoreOptions& ro, Progress& prog) {
  auto a = open_pair({}, {});
  auto b = open_pair({}, {});
  if (!a || !b) {
    return (a ? b.error() : a.error()).with_context("minimal: set up the connections");
  }
  auto rendr_step = [&](std::uint8_t tag) -> Result<std::uint64_t> {
    Latency one;  // this iteration only
    RENDR_TRY(migrate_once(rep, a->server, ro, cfg.options_first, &one, [](const TcpSnapshot&) -> Status { return {}; }));
    RENDR_TRY(ping_pong(a->server.get(), a->client.get(), tag));
    return static_cast<std::uint64_t>(one.total.max_us() * 1000.0);
  };
  prog.begin("rendr vs minimal", cfg.warmup + cfg.idle_iters);
  auto res = run_alternated(cfg.warmup, cfg.idle_iters, cfg.options_first, rendr_step, b->server,
                            b->client.get(),
                            [&](std::uint64_t i) { prog.tick(i); });
  if (res) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "ratio %.2f", res->ratio());
    prog.end(buf);
  }
  return res;
}

Result<Latency> run_queued(const Config& cfg, repair::Repairer& rep,
                           const repair::RestoreOptions& ro, Progress& prog) {
  const auto qb = static_cast<std::size_t>(cfg.queue_bytes);
  // The server keeps |qb| unread bytes and |qb| bytes for a peer whose small receive buffer is
  // full (window closed), so both queues stay put between iterations.
  ListenOptions lo;
  lo.rcvbuf_force = static_cast<int>(std::min<std::uint64_t>(qb * 4 + (256U << 10), 1U << 30));
  lo.sndbuf_force = lo.rcvbuf_force;
  ConnectOptions co;
  co.rcvbuf = 4096;
  auto pair = open_pair(lo, co);
  if (!pair) {
    return std::move(pair).take_error().with_context("queued: set up a connection");
  }
  constexpr std::uint64_t kUp = 1;    // client -> server
  constexpr std::uint64_t kDown = 2;  // server -> client
  const auto up = pattern(kUp, 0, qb);
  RENDR_TRY_CTX(write_exact(pair->client.get(), up, 10000), "queued: fill the receive queue");
  // Fill the send queue: top up until SIOCOUTQ holds exactly |qb| and stays there (what the
  // client's buffer absorbs first is acknowledged, possibly after a delayed ACK).
  std::uint64_t written = 0;
  int stable = 0;
  const std::uint64_t deadline = now_ns() + 10'000'000'000ULL;
  while (stable < 3) {
    if (now_ns() > deadline) {
      return make_error(std::errc::timed_out,
                        "queued: the send queue did not settle at " + std::to_string(qb) + " bytes");
    }
    auto sin = inq(pair->server.get());
    auto so = outq(pair->server.get());
    if (!sin || !so) {
      return (!sin ? sin : so).error().with_context("queued: fill");
    }
    if (static_cast<std::size_t>(*so) < qb) {
      const std::size_t want = qb - static_cast<std::size_t>(*so);
      const auto chunk = pattern(kDown, written, want);
      ssize_t n = ::send(pair->server.get(), chunk.data(), chunk.size(),
                         MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN) {
        return errno_error("queued: fill the send queue");
      }
      written += n > 0 ? static_cast<std::uint64_t>(n) : 0;
      stable = 0;
    } else if (static_cast<std::size_t>(*sin) == qb) {
      ++stable;
    }
    timespec ts{0, 20'000'000};
    nanosleep(&ts, nullptr);
  }
  auto absorbed = inq(pair->client.get());
  if (!absorbed) {
    return std::move(absorbed).take_error();
  }
  // Invariant across migrations: server SIOCOUTQ + client SIOCINQ == bytes written downstream.
  const std::uint64_t down_total = written;
  prog.note("queued: " + std::to_string(qb) + " B unread at the server, " + std::to_string(qb) +
            " B in its send queue, peer window closed after " + std::to_string(*absorbed) + " B");

  // Precomputed once: a 1 MiB allocation per iteration would perturb the heap (and so the
  // allocator behaviour the timed peeks see).
  const auto down_expected = pattern(kDown, down_total - qb, qb);
  auto check = [&](const TcpSnapshot& s) -> Status {
    if (s.recv_queue.size() != qb || s.send_queue.size() != qb) {
      return make_error(std::errc::io_error,
                        "snapshot queues are " + std::to_string(s.recv_queue.size()) + "/" +
                            std::to_string(s.send_queue.size()) + " bytes, expected " +
                            std::to_string(qb) + " each");
    }
    if (s.recv_queue != up) {
      return make_error(std::errc::io_error, "snapshot receive queue content differs");
    }
    if (s.send_queue != down_expected) {
      return make_error(std::errc::io_error, "snapshot send queue content differs");
    }
    return {};
  };
  Latency lat;
  prog.begin("queued", cfg.warmup / 10 + cfg.queued_iters);
  const std::uint64_t warm = cfg.warmup / 10;
  for (std::uint64_t i = 0; i < warm + cfg.queued_iters; ++i) {
    const std::string ctx = "queued iteration " + std::to_string(i);
    RENDR_TRY_CTX(migrate_once(rep, pair->server, ro, cfg.options_first, i >= warm ? &lat : nullptr, check), ctx);
    auto si = inq(pair->server.get());
    auto so = outq(pair->server.get());
    auto ci = inq(pair->client.get());
    if (!si || !so || !ci) {
      return make_error(std::errc::io_error, ctx + ": cannot read queue sizes after restore");
    }
    if (static_cast<std::size_t>(*si) != qb ||
        static_cast<std::uint64_t>(*so) + static_cast<std::uint64_t>(*ci) != down_total) {
      return make_error(std::errc::io_error,
                        ctx + ": after restore server inq=" + std::to_string(*si) + " outq=" +
                            std::to_string(*so) + " client inq=" + std::to_string(*ci) +
                            "; expected inq=" + std::to_string(qb) +
                            " and outq+client inq=" + std::to_string(down_total));
    }
    prog.tick(i + 1);
  }
  // Drain and check both directions end to end, then prove the stream still works.
  std::vector<std::byte> got(qb);
  RENDR_TRY_CTX(read_exact(pair->server.get(), got, 10000), "queued: drain the receive queue");
  if (got != up) {
    return make_error(std::errc::io_error, "queued: receive queue content differs after drain");
  }
  std::vector<std::byte> down(down_total);
  RENDR_TRY_CTX(read_exact(pair->client.get(), down, 10000), "queued: drain the send queue");
  if (down != pattern(kDown, 0, down_total)) {
    return make_error(std::errc::io_error, "queued: send stream content differs after drain");
  }
  RENDR_TRY_CTX(ping_pong(pair->server.get(), pair->client.get(), 0x5A), "queued: final ping");
  char buf[96];
  std::snprintf(buf, sizeof buf, "p50 %.1f us", lat.total.percentile_us(50));
  prog.end(buf);
  return lat;
}

std::string on_off(bool v) { return v ? "on" : "off"; }

std::string variant_key(bool kick, bool probe) {
  return std::string("kick_") + (kick ? "on" : "off") + "_probe_" + (probe ? "on" : "off");
}

void print_latency(const char* name, Latency& l) {
  std::printf("%-8s %6llu iters  total p50 %8.1f us  p99 %8.1f us  max %8.1f us | checkpoint p50 "
              "%7.1f p99 %7.1f | restore p50 %7.1f p99 %7.1f | release p50 %6.1f | options "
              "before freeze p50 %6.1f\n",
              name, static_cast<unsigned long long>(l.iterations), l.total.percentile_us(50),
              l.total.percentile_us(99), l.total.max_us(), l.checkpoint.percentile_us(50),
              l.checkpoint.percentile_us(99), l.restore.percentile_us(50),
              l.restore.percentile_us(99), l.release.percentile_us(50),
              l.options.empty() ? 0.0 : l.options.percentile_us(50));
}

void json_latency(JsonWriter& j, const std::string& prefix, std::optional<Latency>& l) {
  auto put = [&](const std::string& key, double v) {
    if (l) {
      j.kv(prefix + key, v);
    } else {
      j.kv_null(prefix + key);
    }
  };
  put("p50_us", l ? l->total.percentile_us(50) : 0);
  put("p99_us", l ? l->total.percentile_us(99) : 0);
  put("mean_us", l ? l->total.mean_us() : 0);
  put("max_us", l ? l->total.max_us() : 0);
  put("checkpoint_p50_us", l ? l->checkpoint.percentile_us(50) : 0);
  put("checkpoint_p99_us", l ? l->checkpoint.percentile_us(99) : 0);
  put("restore_p50_us", l ? l->restore.percentile_us(50) : 0);
  put("restore_p99_us", l ? l->restore.percentile_us(99) : 0);
  put("release_p50_us", l ? l->release.percentile_us(50) : 0);
  if (l && !l->options.empty()) {
    j.kv(prefix + "options_p50_us", l->options.percentile_us(50));
  } else {
    j.kv_null(prefix + "options_p50_us");
  }
}

void print_syscall_profile(const TimingSys::Table& t, std::uint64_t iterations) {
  struct Row {
    std::string name;
    TimingSys::Stat stat;
  };
  std::vector<Row> rows;
  std::uint64_t total_ns = 0;
  std::uint64_t total_calls = 0;
  for (const auto& [k, v] : t) {
    rows.push_back({k.first + (k.second.empty() ? "" : " " + k.second), v});
    total_ns += v.ns;
    total_calls += v.calls;
  }
  std::sort(rows.begin(), rows.end(),
            [](const Row& a, const Row& b) { return a.stat.ns > b.stat.ns; });
  const auto it = static_cast<double>(iterations);
  std::printf("syscall profile (idle phase, checkpoint + restore through repair::Sys, %llu "
              "iterations incl. warmup): %.1f calls, %.2f us per iteration\n",
              static_cast<unsigned long long>(iterations), static_cast<double>(total_calls) / it,
              static_cast<double>(total_ns) / 1000.0 / it);
  std::printf("  %-44s %8s %9s %12s\n", "call", "per iter", "avg ns", "us per iter");
  for (const auto& r : rows) {
    std::printf("  %-44s %8.2f %9.0f %12.2f\n", r.name.c_str(),
                static_cast<double>(r.stat.calls) / it,
                static_cast<double>(r.stat.ns) / static_cast<double>(r.stat.calls),
                static_cast<double>(r.stat.ns) / 1000.0 / it);
  }
}

}  // namespace

int run_repair(std::span<char* const> args) {
  Config cfg;
  ArgParser p(
      "rendr-bench repair [--json] [options]",
      "Measures TCP_REPAIR checkpoint+restore of live kernel TCP sockets (rendr::repair) inside\n"
      "a private network namespace on loopback. Needs root (CAP_SYS_ADMIN for the namespace,\n"
      "CAP_NET_ADMIN for TCP_REPAIR, CAP_NET_RAW for the ACK kick).\n"
      "Phases: idle (checkpoint -> release -> restore -> 1-byte ping-pong, repeated), queued\n"
      "(same, with --queue-bytes unread in the receive queue and in the send queue of a peer\n"
      "that does not read), batch (--batch sockets checkpointed, released, restored; a sample\n"
      "verified). Only checkpoint and restore are timed; release is reported separately.\n"
      "Targets: idle p50 <= 30 us (checkpoint+restore), 10000 sockets in <= 1 s.");
  p.flag("json", &cfg.json, "print one JSON object as the last line of stdout");
  p.flag("quiet", &cfg.quiet, "no progress lines on stderr");
  p.choices("phases", &cfg.phases, {"idle", "minimal", "queued", "batch"},
            "phases to run (minimal: rendr's idle loop alternated with the minimal recipe)");
  p.uint("idle-iters", &cfg.idle_iters, 1, 10'000'000, "measured idle iterations");
  p.uint("queued-iters", &cfg.queued_iters, 1, 1'000'000, "measured queued iterations");
  p.uint("queue-bytes", &cfg.queue_bytes, 1, 64U << 20,
         "bytes in each queue for the queued phase (suffix Ki/Mi allowed)");
  p.uint("batch", &cfg.batch, 1, 200'000, "sockets in the batch phase");
  p.uint("batch-verify", &cfg.batch_verify, 0, 200'000,
         "restored batch sockets verified with ping-pong");
  p.uint("warmup", &cfg.warmup, 0, 1'000'000,
         "unmeasured idle iterations first (queued uses a tenth)");
  p.on_off("ack-kick", &cfg.ack_kick, "RestoreOptions.ack_kick for all phases");
  p.on_off("window-probe", &cfg.window_probe, "RestoreOptions.window_probe for all phases");
  p.on_off("options-first", &cfg.options_first,
           "read the socket options and addresses before the timed checkpoint, while the flow "
           "still runs, as rendr-agent does (off: the checkpoint reads them inside the frozen "
           "window); the minimal recipe follows the same rule for its addresses and options");
  p.flag("variants", &cfg.variants,
         "also run the idle loop for every {ack-kick, window-probe} combination");
  p.flag("syscall-profile", &cfg.syscall_profile,
         "time every repair syscall of the idle phase and print a per-call table (per-call "
         "times are taken around the call; the bookkeeping slows the idle loop itself)");
  p.integer("cpu", &cfg.cpu, -1, 4095, "pin the benchmark to this CPU (-1: no pinning)");
  p.flag("check-targets", &cfg.check_targets,
         "exit 3 when a measured target (idle p50, 10000-socket batch) is missed");
  auto parsed = p.parse(args);
  if (!parsed) {
    std::fprintf(stderr, "%s: %s\n", kTool, parsed.error().context.c_str());
    return kExitUsage;
  }
  if (!*parsed) {
    return kExitOk;
  }

  Progress prog(kTool, cfg.quiet);
  auto fail = [&](const Error& e) {
    std::fprintf(stderr, "%s: FAILED: %s\n", kTool, e.message().c_str());
    return kExitFailed;
  };
  if (cfg.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(static_cast<int>(cfg.cpu), &set);
    if (::sched_setaffinity(0, sizeof set, &set) != 0) {
      return fail(errno_error("pin to CPU " + std::to_string(cfg.cpu)));
    }
  }
  if (auto st = enter_private_netns(); !st.ok()) {
    return fail(st.error());
  }
  if (auto st = repair::probe_tcp_repair(); !st.ok()) {
    return fail(st.error());
  }

  TimingSys timing(repair::real_sys());
  timing.set_enabled(false);
  repair::Sys& sys = cfg.syscall_profile ? static_cast<repair::Sys&>(timing) : repair::real_sys();
  // The default log sink, as a tool would use it: repair warnings (e.g. "ACK kick skipped")
  // appear on stderr, and per-connection debug lines are not even formatted unless RENDR_LOG=debug.
  repair::Repairer rep(sys);
  repair::RestoreOptions ro;
  ro.ack_kick = cfg.ack_kick;
  ro.window_probe = cfg.window_probe;
  // As rendr-agent does: the netns the restores run in is read once, not from each socket.
  if (UniqueFd probe(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)); probe.valid()) {
    ro.netns_cookie = rep.netns_cookie(probe.get());
  }
  const std::string kernel = agents::kernel_release();
  prog.note("kernel " + kernel + ", private netns, loopback; ack_kick=" + on_off(cfg.ack_kick) +
            " window_probe=" + on_off(cfg.window_probe));

  std::optional<Latency> idle;
  std::optional<Latency> queued;
  std::optional<BatchResult> batch;
  std::vector<VariantResult> variants;
  if (cfg.has("idle")) {
    timing.set_enabled(cfg.syscall_profile);
    auto r = run_idle(cfg, rep, ro, cfg.idle_iters, prog, "idle");
    timing.set_enabled(false);
    if (!r) {
      return fail(r.error());
    }
    idle = std::move(*r);
  }
  std::optional<Alternated> vs_min;
  if (cfg.has("minimal")) {
    auto r = run_vs_minimal(cfg, rep, ro, prog);
    if (!r) {
      return fail(r.error());
    }
    vs_min = std::move(*r);
  }
  if (cfg.variants) {
    for (bool kick : {true, false}) {
      for (bool probe : {true, false}) {
        repair::RestoreOptions vo;
        vo.ack_kick = kick;
        vo.window_probe = probe;
        vo.netns_cookie = ro.netns_cookie;
        auto r = run_idle(cfg, rep, vo, cfg.idle_iters, prog, "idle " + variant_key(kick, probe));
        if (!r) {
          return fail(r.error());
        }
        variants.push_back({kick, probe, std::move(*r)});
      }
    }
  }
  if (cfg.has("queued")) {
    auto r = run_queued(cfg, rep, ro, prog);
    if (!r) {
      return fail(r.error());
    }
    queued = std::move(*r);
  }
  if (cfg.has("batch")) {
    auto r = run_batch(rep, ro, cfg.batch, cfg.batch_verify, prog);
    if (!r) {
      return fail(r.error());
    }
    batch = *r;
  }

  // Human-readable report.
  std::printf("rendr-bench repair  kernel %s  ack_kick=%s window_probe=%s  (times: checkpoint + "
              "restore; release separate)\n",
              kernel.c_str(), on_off(cfg.ack_kick).c_str(), on_off(cfg.window_probe).c_str());
  if (idle) {
    print_latency("idle", *idle);
  }
  if (queued) {
    char name[32];
    std::snprintf(name, sizeof name, "queued");
    print_latency(name, *queued);
    std::printf("         (%llu B unread in the receive queue + %llu B in the send queue)\n",
                static_cast<unsigned long long>(cfg.queue_bytes),
                static_cast<unsigned long long>(cfg.queue_bytes));
  }
  if (vs_min) {
    std::printf("minimal  rendr p50 %.1f us vs minimal recipe p50 %.1f us (alternated, %llu "
                "iterations): ratio %.2f\n",
                vs_min->rendr.percentile_us(50), vs_min->minimal.percentile_us(50),
                static_cast<unsigned long long>(vs_min->iterations), vs_min->ratio());
  }
  for (auto& v : variants) {
    std::printf("variant ack_kick=%-3s window_probe=%-3s ", on_off(v.ack_kick).c_str(),
                on_off(v.window_probe).c_str());
    print_latency("idle", v.lat);
  }
  if (batch) {
    std::printf("batch    %llu sockets  checkpoint+restore %.3f s (%.1f us/socket, %.0f "
                "sockets/s) | checkpoint %.3f s  restore %.3f s | release %.3f s | verified %llu\n",
                static_cast<unsigned long long>(batch->sockets), batch->total_s(),
                batch->per_socket_us(),
                batch->total_s() > 0 ? static_cast<double>(batch->sockets) / batch->total_s() : 0,
                batch->checkpoint_s, batch->restore_s, batch->release_s,
                static_cast<unsigned long long>(batch->verified));
  }
  if (cfg.syscall_profile && idle) {
    print_syscall_profile(timing.table(), cfg.warmup + cfg.idle_iters);
  }
  std::optional<bool> idle_met;
  std::optional<bool> batch_met;
  if (idle) {
    idle_met = idle->total.percentile_us(50) <= kIdleTargetUs;
    std::printf("target   idle p50 <= %.0f us: %s\n", kIdleTargetUs, *idle_met ? "met" : "MISSED");
  }
  if (batch && batch->sockets == kBatchReference) {
    batch_met = batch->total_s() <= kBatchTargetS;
    std::printf("target   %llu sockets <= %.0f s: %s\n",
                static_cast<unsigned long long>(kBatchReference), kBatchTargetS,
                *batch_met ? "met" : "MISSED");
  }

  if (cfg.json) {
    JsonWriter j;
    j.begin_object();
    j.kv("bench", "repair");
    j.kv("kernel", kernel);
    j.kv("ack_kick", cfg.ack_kick);
    j.kv("window_probe", cfg.window_probe);
    j.kv("options_first", cfg.options_first);
    j.kv("warmup_iterations", cfg.warmup);
    j.kv("idle_iterations", idle ? idle->iterations : std::uint64_t{0});
    j.kv("queued_iterations", queued ? queued->iterations : std::uint64_t{0});
    j.kv("queue_bytes", cfg.queue_bytes);
    json_latency(j, "idle_", idle);
    // Unprefixed checkpoint/restore keys describe the idle socket (the headline case).
    if (idle) {
      j.kv("checkpoint_p50_us", idle->checkpoint.percentile_us(50));
      j.kv("checkpoint_p99_us", idle->checkpoint.percentile_us(99));
      j.kv("restore_p50_us", idle->restore.percentile_us(50));
      j.kv("restore_p99_us", idle->restore.percentile_us(99));
    } else {
      for (const char* k : {"checkpoint_p50_us", "checkpoint_p99_us", "restore_p50_us",
                            "restore_p99_us"}) {
        j.kv_null(k);
      }
    }
    json_latency(j, "queued_", queued);
    if (vs_min) {
      j.kv("idle_vs_minimal_ratio", vs_min->ratio());
      j.kv("idle_alternated_p50_us", vs_min->rendr.percentile_us(50));
      j.kv("minimal_p50_us", vs_min->minimal.percentile_us(50));
      j.kv("minimal_iterations", vs_min->iterations);
    } else {
      for (const char* k : {"idle_vs_minimal_ratio", "idle_alternated_p50_us", "minimal_p50_us"}) {
        j.kv_null(k);
      }
    }
    j.kv("batch_sockets", batch ? batch->sockets : std::uint64_t{0});
    if (batch) {
      j.kv("batch_s", batch->total_s());
      j.kv("batch_checkpoint_s", batch->checkpoint_s);
      j.kv("batch_restore_s", batch->restore_s);
      j.kv("batch_release_s", batch->release_s);
      j.kv("batch_per_socket_us", batch->per_socket_us());
      j.kv("batch_sockets_per_s",
           batch->total_s() > 0 ? static_cast<double>(batch->sockets) / batch->total_s() : 0.0);
      j.kv("batch_verified", batch->verified);
    } else {
      for (const char* k : {"batch_s", "batch_checkpoint_s", "batch_restore_s", "batch_release_s",
                            "batch_per_socket_us", "batch_sockets_per_s", "batch_verified"}) {
        j.kv_null(k);
      }
    }
    // batch_10000_s is only a measurement when the batch really had 10000 sockets.
    if (batch && batch->sockets == kBatchReference) {
      j.kv("batch_10000_s", batch->total_s());
    } else {
      j.kv_null("batch_10000_s");
    }
    j.begin_object("variants");
    for (auto& v : variants) {
      j.begin_object(variant_key(v.ack_kick, v.window_probe));
      j.kv("p50_us", v.lat.total.percentile_us(50));
      j.kv("p99_us", v.lat.total.percentile_us(99));
      j.kv("checkpoint_p50_us", v.lat.checkpoint.percentile_us(50));
      j.kv("restore_p50_us", v.lat.restore.percentile_us(50));
      j.kv("restore_p99_us", v.lat.restore.percentile_us(99));
      j.kv("iterations", v.lat.iterations);
      j.end_object();
    }
    j.end_object();
    j.kv("idle_target_us", kIdleTargetUs);
    j.kv("batch_target_s", kBatchTargetS);
    if (idle_met) {
      j.kv("idle_target_met", *idle_met);
    } else {
      j.kv_null("idle_target_met");
    }
    if (batch_met) {
      j.kv("batch_target_met", *batch_met);
    } else {
      j.kv_null("batch_target_met");
    }
    j.end_object();
    std::printf("%s\n", j.str().c_str());
  }
  std::fflush(stdout);
  if (cfg.check_targets && ((idle_met && !*idle_met) || (batch_met && !*batch_met))) {
    std::fprintf(stderr, "%s: a target was missed\n", kTool);
    return kExitTargetMissed;
  }
  return kExitOk;
}

}  // namespace rendr::bench
