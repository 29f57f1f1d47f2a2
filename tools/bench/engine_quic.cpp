// SPDX-License-Identifier: Apache-2.0
// measure_quic_stream and measure_g3_quic (engine_quic.hpp).
#include "engine_quic.hpp"

#include "rendrctl/cert.hpp"

#include <rendr/engine/stats_json.hpp>

#include <sys/resource.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>

namespace rendr::bench {

namespace {

// Certs: a CA with a "server" and a "client" certificate in a temporary directory.
struct TempCerts {
  std::string dir;
  ~TempCerts() {
    if (!dir.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  }
  Status make() {
    char tmpl[] = "/tmp/rendr-bench-quic-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      return errno_error("mkdtemp");
    }
    dir = tmpl;
    cert::InitOptions init;
    init.dir = dir;
    RENDR_TRY(cert::init_ca(init));
    for (const char* name : {"server", "client"}) {
      cert::IssueOptions is;
      is.dir = dir;
      is.name = name;
      RENDR_TRY(cert::issue(is));
    }
    return {};
  }
};

// QuicSetup: the certificates and the server's TLS every quic section starts from.
struct QuicSetup {
  TempCerts certs;
  QuicTls tls;

  // make: certificates in a temporary directory; |initial_rtt| (0: ngtcp2's) is where QUIC's
  // RTT starts and returns to after each rebind (ngtcp2 resets it to 333 ms; a veth path's is
  // ~0.1 ms).
  Status make(std::chrono::milliseconds initial_rtt = std::chrono::milliseconds(0)) {
    if (auto st = certs.make(); !st) {
      return Error{st.error().code, "quic certificates: " + st.error().message(), false};
    }
    tls = QuicTls{certs.dir + "/ca.pem", certs.dir + "/server.pem", certs.dir + "/server.key"};
    tls.initial_rtt = initial_rtt;
    return {};
  }
  // listen: a quic listener in the server namespace.
  Result<ListenerPtr> listen(EngineRig& rig) const {
    Result<ListenerPtr> l = make_error(std::errc::invalid_argument, "unset");
    (void)rig.in_server([&]() -> Status {
      l = listen_quic("0.0.0.0:0", tls, ListenOptions{});
      return {};
    });
    return l;
  }
  // path: a quic path on lab path |lab_path| to |port| with the client's certificate.
  PathSpec path(int lab_path, std::uint16_t port) const {
    PathSpec p = EngineRig::path(lab_path, port, "quic");
    p.opts = {{"ca", tls.ca},
              {"cert", certs.dir + "/client.pem"},
              {"key", certs.dir + "/client.key"},
              {"server_name", "server"}};
    return p;
  }
};

}  // namespace

QuicStreamResult measure_quic_stream(EngineRig& rig, std::uint64_t bytes, int runs,
                                     const std::function<void(const std::string&)>& progress) {
  QuicStreamResult out;
  QuicSetup q;
  if (auto st = q.make(); !st) {
    out.error = st.error().message();
    return out;
  }
  auto l = rig.listen_tcp(ListenOptions{});
  if (!l) {
    out.error = "listen: " + l.error().message();
    return out;
  }
  Result<std::string> qaddr = make_error(std::errc::invalid_argument, "unset");
  (void)rig.in_server([&]() -> Status {
    qaddr = (*l)->add_quic("0.0.0.0:0", q.tls);
    return {};
  });
  if (!qaddr) {
    out.error = "add_quic: " + qaddr.error().message();
    return out;
  }
  const auto qport = static_cast<std::uint16_t>(std::stoul(qaddr->substr(qaddr->rfind(':') + 1)));
  std::vector<double> tcp_s;
  std::vector<double> quic_s;
  std::vector<double> ratios;
  for (int i = 0; i < runs; ++i) {
    double one[2] = {0, 0};
    for (int k = 0; k < 2; ++k) {
      const bool quic = (k == 0) == (i % 2 == 0);  // even runs: quic first
      DialOptions o;
      o.paths = {quic ? q.path(1, qport) : EngineRig::path(1, (*l)->port(), "tcp")};
      auto d = Dialer::create(std::move(o));
      if (!d) {
        out.error = "dialer: " + d.error().message();
        return out;
      }
      auto c = rig.dial(**d);
      if (!c) {
        out.error = std::string(quic ? "quic" : "tcp") + " dial: " + c.error().message();
        return out;
      }
      auto s = (*l)->accept(deadline_in(std::chrono::seconds(5)));
      if (!s) {
        out.error = "accept: " + s.error().message();
        return out;
      }
      auto res = transfer(**c, **s, bytes, {}, false);
      if (!res.error.empty()) {
        out.error = std::string(quic ? "quic" : "tcp") + " transfer: " + res.error +
                    "\n  client: " + engine::flow_stats_json((*c)->stats()) +
                    "\n  server: " + engine::flow_stats_json((*s)->stats());
        return out;
      }
      one[quic ? 1 : 0] = res.seconds;
      (quic ? quic_s : tcp_s).push_back(res.seconds);
    }
    ratios.push_back(one[0] / one[1]);
    char line[200];
    std::snprintf(line, sizeof line, "quic stream run %d/%d: tcp %.0f MB/s, quic %.0f MB/s, ratio %.3f",
                  i + 1, runs, static_cast<double>(bytes) / one[0] / 1e6,
                  static_cast<double>(bytes) / one[1] / 1e6, one[0] / one[1]);
    progress(line);
  }
  out.tcp_mbps = static_cast<double>(bytes) / percentile(tcp_s, 50) / 1e6;
  out.quic_mbps = static_cast<double>(bytes) / percentile(quic_s, 50) / 1e6;
  out.ratio = percentile(ratios, 50);
  return out;
}

namespace {

using G3Clock = std::chrono::steady_clock;
constexpr std::uint32_t kEchoEvery = 100;  // the server echoes every 100th packet (RTT samples)

double process_cpu_s() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// G3Run: one flow's two phases. Packets carry [u32 id][u64 send time ns]; the server counts
// every id and echoes [id][send time] for each 100th, the client turns echoes into RTTs.
struct G3Run {
  PacketConn& client;
  PacketConn& server;
  std::size_t size;
  std::vector<std::uint8_t> seen;  // per id; the server reader thread only
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> sent{0};
  std::atomic<bool> stop{false};
  std::uint64_t rebind_first_id = UINT64_MAX;  // set before the second phase starts
  std::mutex mu;
  std::vector<double> rtt_base;
  std::vector<double> rtt_rebind;
  std::string error;  // first error of any thread (under mu)
  G3Clock::time_point last_read{};

  G3Run(PacketConn& c, PacketConn& s, std::size_t sz, std::uint64_t total)
      : client(c), server(s), size(sz), seen(total, 0) {}

  void fail(const std::string& e) {
    std::lock_guard lk(mu);
    if (error.empty()) {
      error = e;
    }
    stop = true;
  }

  void serve() {
    std::vector<std::byte> in;
    while (!stop) {
      auto r = server.read(in, deadline_in(std::chrono::milliseconds(200)));
      if (!r) {
        if (r.error().code == std::make_error_code(std::errc::timed_out)) {
          continue;
        }
        fail("server read: " + r.error().message());
        return;
      }
      if (!*r || in.size() < 12) {
        fail("server read: EOF or a short packet");
        return;
      }
      std::uint32_t id = 0;
      std::memcpy(&id, in.data(), sizeof id);
      if (id >= seen.size()) {
        fail("server read: unknown packet id " + std::to_string(id));
        return;
      }
      seen[id] = static_cast<std::uint8_t>(std::min(seen[id] + 1, 255));
      received.fetch_add(1, std::memory_order_relaxed);
      last_read = G3Clock::now();
      if (id % kEchoEvery == 0) {
        if (auto st = server.write(std::span<const std::byte>(in.data(), 12),
                                   deadline_in(std::chrono::seconds(10)));
            !st) {
          fail("server echo: " + st.error().message());
          return;
        }
      }
    }
  }

  void read_echoes() {
    std::vector<std::byte> in;
    while (!stop) {
      auto r = client.read(in, deadline_in(std::chrono::milliseconds(200)));
      if (!r) {
        if (r.error().code == std::make_error_code(std::errc::timed_out)) {
          continue;
        }
        fail("client echo read: " + r.error().message());
        return;
      }
      if (!*r || in.size() != 12) {
        fail("client echo read: EOF or a malformed echo");
        return;
      }
      std::uint32_t id = 0;
      std::uint64_t t = 0;
      std::memcpy(&id, in.data(), sizeof id);
      std::memcpy(&t, in.data() + 4, sizeof t);
      const double rtt = static_cast<double>(now_ns() - t) / 1e6;
      std::lock_guard lk(mu);
      (id >= rebind_first_id ? rtt_rebind : rtt_base).push_back(rtt);
    }
  }

  // write_phase writes ids [first, first + count) at |pps|, paced in 1 ms steps; with
  // |max_seconds| > 0 it also stops then (capacity runs: the writer falls behind |pps| and
  // writes as fast as the flow accepts).
  void write_phase(std::uint64_t first, std::uint64_t count, std::uint64_t pps,
                   double max_seconds = 0) {
    std::vector<std::byte> p(size);
    for (std::size_t i = 12; i < size; ++i) {
      p[i] = static_cast<std::byte>(i & 0xff);
    }
    const auto start = G3Clock::now();
    for (std::uint64_t i = 0; i < count && !stop;) {
      const double elapsed = std::chrono::duration<double>(G3Clock::now() - start).count();
      if (max_seconds > 0 && elapsed >= max_seconds) {
        break;
      }
      const auto due = static_cast<std::uint64_t>(elapsed * static_cast<double>(pps));
      if (i >= due) {
        std::this_thread::sleep_for(std::chrono::microseconds(500));
        continue;
      }
      for (std::uint32_t burst = 0; i < due && i < count && !stop && burst < 4096; ++i, ++burst) {
        const auto id = static_cast<std::uint32_t>(first + i);
        const std::uint64_t t = now_ns();
        std::memcpy(p.data(), &id, sizeof id);
        std::memcpy(p.data() + 4, &t, sizeof t);
        if (auto st = client.write(p, deadline_in(std::chrono::seconds(10))); !st) {
          fail("client write " + std::to_string(id) + ": " + st.error().message());
          return;
        }
        sent.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
};

// PacketPair: a packet flow dialed from the client namespace (the Dialer's io thread is made
// there, so rebind_path binds its new socket there) and the listener's end of it.
struct PacketPair {
  std::unique_ptr<Dialer> dialer;
  PacketConnPtr client;
  PacketConnPtr server;
};

// dial_packets: one packet flow over |p| with G3's 8 MiB send window; |name| says which in errors.
Result<PacketPair> dial_packets(EngineRig& rig, Listener& l, const PathSpec& p,
                                const std::string& name) {
  DialOptions d;
  d.paths = {p};
  d.ledger_max_bytes = 8U << 20;
  Result<std::unique_ptr<Dialer>> dialer = make_error(std::errc::invalid_argument, "unset");
  Result<PacketConnPtr> c = make_error(std::errc::invalid_argument, "unset");
  (void)rig.in_client([&]() -> Status {
    dialer = Dialer::create(std::move(d));
    if (dialer) {
      c = (*dialer)->dial_packet();
    }
    return {};
  });
  if (!dialer || !c) {
    const Error& e = !dialer ? dialer.error() : c.error();
    return Error{e.code, "dial " + name + ": " + e.message(), false};
  }
  auto s = l.accept_packet(deadline_in(std::chrono::seconds(5)));
  if (!s) {
    return Error{s.error().code, "accept_packet " + name + ": " + s.error().message(), false};
  }
  return PacketPair{std::move(*dialer), std::move(*c), std::move(*s)};
}

// finish: waits until everything written arrived (or the flow reported why not, at most 10 s)
// and a little for late duplicates and echoes, then stops and joins the run's threads.
void finish(G3Run& run, std::thread& server_t, std::thread& echo_t) {
  const auto drain_until = G3Clock::now() + std::chrono::seconds(10);
  while (!run.stop && run.received.load() < run.sent.load() && G3Clock::now() < drain_until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  run.stop = true;
  server_t.join();
  echo_t.join();
}

// count_seen: ids never delivered and ids delivered more than once, of the first |sent|.
void count_seen(const G3Run& run, std::uint64_t sent, std::uint64_t& missing,
                std::uint64_t& dups) {
  for (std::uint64_t i = 0; i < sent; ++i) {
    missing += run.seen[i] == 0 ? 1 : 0;
    dups += run.seen[i] > 1 ? 1 : 0;
  }
}

}  // namespace

G3QuicResult measure_g3_quic(EngineRig& rig, const G3QuicOptions& o,
                             const std::function<void(const std::string&)>& progress) {
  G3QuicResult out;
  out.offered_pps = static_cast<double>(o.pps);
  QuicSetup q;
  if (auto st = q.make(std::chrono::milliseconds(1)); !st) {
    out.error = st.error().message();
    return out;
  }
  auto l = q.listen(rig);
  if (!l) {
    out.error = "listen_quic: " + l.error().message();
    return out;
  }
  PathSpec p = q.path(1, (*l)->port());
  p.opts["mode"] = "datagram";
  p.opts["initial_rtt_ms"] = "1";
  auto pair = dial_packets(rig, **l, p, "quic datagram");
  if (!pair) {
    out.error = pair.error().message();
    return out;
  }
  auto& c = pair->client;
  auto& s = pair->server;
  const auto per_phase = static_cast<std::uint64_t>(o.seconds * static_cast<double>(o.pps));
  if (per_phase == 0 || 2 * per_phase > UINT32_MAX) {
    out.error = "g3: seconds x pps out of range";
    return out;
  }
  G3Run run(*c, *s, std::max<std::size_t>(o.size, 12), 2 * per_phase);
  const PathId path = c->active_path();
  const double cpu0 = process_cpu_s();
  const CpuTime dio0 = named_threads_cpu("rendr-dialer");
  const CpuTime lio0 = named_threads_cpu("rendr-listener");
  const auto t0 = G3Clock::now();
  std::thread server_t([&] { run.serve(); });
  std::thread echo_t([&] { run.read_echoes(); });
  for (int phase = 0; phase < 2 && !run.stop; ++phase) {
    const bool rebind = phase == 1;
    progress(rebind ? "g3 quic: phase 2, with rebinds" : "g3 quic: phase 1, baseline");
    if (rebind) {
      std::lock_guard lk(run.mu);
      run.rebind_first_id = per_phase;
    }
    std::thread writer([&] { run.write_phase(phase * per_phase, per_phase, o.pps); });
    if (rebind) {
      const auto start = G3Clock::now();
      for (int i = 0; i < o.rebinds && !run.stop; ++i) {
        std::this_thread::sleep_until(
            start + std::chrono::duration_cast<G3Clock::duration>(
                        std::chrono::duration<double>(o.seconds * (i + 1) / (o.rebinds + 1))));
        Status st = c->rebind_path(path, "0.0.0.0:0");
        // The peer's next connection id is a round trip away after the previous rebind.
        for (int k = 0; k < 200 && !st &&
                        st.error().code ==
                            std::make_error_code(std::errc::resource_unavailable_try_again);
             ++k) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          st = c->rebind_path(path, "0.0.0.0:0");
        }
        if (!st) {
          run.fail("rebind " + std::to_string(i + 1) + ": " + st.error().message());
          break;
        }
        ++out.rebinds;
      }
    }
    writer.join();
  }
  finish(run, server_t, echo_t);
  out.cpu_s = process_cpu_s() - cpu0;
  out.dialer_io_cpu_s = (named_threads_cpu("rendr-dialer") - dio0).total();
  out.listener_io_cpu_s = (named_threads_cpu("rendr-listener") - lio0).total();
  out.sent = run.sent.load();
  count_seen(run, out.sent, out.missing, out.dups);
  const std::uint64_t got = run.received.load();
  const double secs = std::chrono::duration<double>(run.last_read - t0).count();
  out.pps = secs > 0 ? static_cast<double>(got) / secs : 0;
  out.cpu_us_per_packet = got > 0 ? out.cpu_s * 1e6 / static_cast<double>(got) : 0;
  out.rtt_p95_ms = percentile(run.rtt_rebind, 95);
  out.rtt_p95_baseline_ms = percentile(run.rtt_base, 95);
  out.rtt_p50_ms = percentile(run.rtt_rebind, 50);
  out.rtt_p50_baseline_ms = percentile(run.rtt_base, 50);
  out.rtt_max_ms = percentile(run.rtt_rebind, 100);
  out.rtt_max_baseline_ms = percentile(run.rtt_base, 100);
  const auto cs = c->stats();
  out.migrations = cs.migration_count;
  out.retransmits = cs.retransmits;
  if (!run.error.empty()) {
    out.error = run.error + "\n  client: " + engine::flow_stats_json(cs) +
                "\n  server: " + engine::flow_stats_json(s->stats());
  }
  (void)c->close();
  return out;
}

G1Result measure_g1_quic(EngineRig& rig, std::uint64_t bytes,
                         const std::function<void(const std::string&)>& progress) {
  G1Result out;
  QuicSetup q;
  if (auto st = q.make(); !st) {
    out.error = st.error().message();
    return out;
  }
  auto l = q.listen(rig);
  if (!l) {
    out.error = "listen_quic: " + l.error().message();
    return out;
  }
  const std::vector<PathSpec> paths = {q.path(1, (*l)->port()), q.path(2, (*l)->port())};
  return g1(rig, **l, paths, bytes, progress);
}

DgramCapResult measure_dgram_capacity(EngineRig& rig, const DgramCapOptions& o,
                                      const std::function<void(const std::string&)>& progress) {
  DgramCapResult out;
  out.offered_pps = static_cast<double>(o.pps);
  QuicSetup q;
  if (auto st = q.make(std::chrono::milliseconds(1)); !st) {
    out.error = st.error().message();
    return out;
  }
  auto ql = q.listen(rig);
  if (!ql) {
    out.error = "listen_quic: " + ql.error().message();
    return out;
  }
  auto ul = rig.listen_udpflow(ListenOptions{});
  if (!ul) {
    out.error = "listen_udpflow: " + ul.error().message();
    return out;
  }
  const auto count = static_cast<std::uint64_t>(o.seconds * static_cast<double>(o.pps));
  if (count == 0 || count > UINT32_MAX) {
    out.error = "dgramcap: seconds x pps out of range";
    return out;
  }
  std::vector<double> quic_pps;
  std::vector<double> udp_pps;
  for (int i = 0; i < 2 * o.runs; ++i) {
    const bool quic = i % 2 == 0;
    Listener& l = quic ? **ql : **ul;
    PathSpec p = quic ? q.path(1, l.port()) : EngineRig::path(1, l.port(), "udpflow");
    if (quic) {
      p.opts["mode"] = "datagram";
      p.opts["initial_rtt_ms"] = "1";
    }
    const char* name = quic ? "quic datagram" : "udpflow";
    auto pair = dial_packets(rig, l, p, name);  // G3's send window
    if (!pair) {
      out.error = pair.error().message();
      return out;
    }
    auto& c = pair->client;
    auto& s = pair->server;
    G3Run run(*c, *s, std::max<std::size_t>(o.size, 12), count);
    const auto t0 = G3Clock::now();
    std::thread server_t([&] { run.serve(); });
    std::thread echo_t([&] { run.read_echoes(); });
    run.write_phase(0, count, o.pps, o.seconds);
    finish(run, server_t, echo_t);
    DgramCapRun r;
    r.quic = quic;
    r.sent = run.sent.load();
    count_seen(run, r.sent, r.missing, r.dups);
    const double secs = std::chrono::duration<double>(run.last_read - t0).count();
    r.pps = secs > 0 ? static_cast<double>(run.received.load()) / secs : 0;
    (void)c->close();
    if (!run.error.empty()) {
      out.error = std::string(name) + ": " + run.error;
      return out;
    }
    out.missing += r.missing;
    out.dups += r.dups;
    (quic ? quic_pps : udp_pps).push_back(r.pps);
    out.runs.push_back(r);
    char line[200];
    std::snprintf(line, sizeof line,
                  "dgramcap run %d/%d %s: %.0f pps delivered, sent %llu, "
                  "missing %llu, dups %llu",
                  i + 1, 2 * o.runs, name, r.pps, static_cast<unsigned long long>(r.sent),
                  static_cast<unsigned long long>(r.missing),
                  static_cast<unsigned long long>(r.dups));
    progress(line);
  }
  out.quic_pps = percentile(quic_pps, 50);
  out.udpflow_pps = percentile(udp_pps, 50);
  out.ratio = out.udpflow_pps > 0 ? out.quic_pps / out.udpflow_pps : 0;
  return out;
}

void print_dgram_capacity(const DgramCapResult& r) {
  std::printf(
      "  datagram capacity (one 1 KiB packet flow, lab path 1, offered %.0f pps, %zu runs "
      "alternated): quic datagram %.0f pps, udpflow %.0f pps, ratio %.3f (target >= 0.6), "
      "missing %llu, dups %llu\n",
      r.offered_pps, r.runs.size(), r.quic_pps, r.udpflow_pps, r.ratio,
      static_cast<unsigned long long>(r.missing), static_cast<unsigned long long>(r.dups));
}

void write_dgram_capacity_json(JsonWriter& j, const DgramCapResult* r) {
  if (r == nullptr) {
    for (const char* k : {"udpflow_pps", "quic_dgram_pps", "quic_dgram_vs_udpflow_ratio",
                          "dgramcap_offered_pps", "dgramcap_missing", "dgramcap_dups"}) {
      j.kv_null(k);
    }
    return;
  }
  j.kv("udpflow_pps", r->udpflow_pps);
  j.kv("quic_dgram_pps", r->quic_pps);
  j.kv("quic_dgram_vs_udpflow_ratio", r->ratio);
  j.kv("dgramcap_offered_pps", r->offered_pps);
  j.kv("dgramcap_missing", r->missing);
  j.kv("dgramcap_dups", r->dups);
  j.begin_array("dgramcap_runs");
  for (const auto& run : r->runs) {
    j.begin_object();
    j.kv("carrier", run.quic ? "quic" : "udpflow");
    j.kv("pps", std::round(run.pps));
    j.kv("sent", run.sent);
    j.kv("missing", run.missing);
    j.kv("dups", run.dups);
    j.end_object();
  }
  j.end_array();
}

double g3_quic_rtt_ratio(const G3QuicResult& r) {
  return r.rtt_p95_baseline_ms > 0 ? r.rtt_p95_ms / r.rtt_p95_baseline_ms : 0;
}

bool g3_quic_targets_met(const G3QuicResult& r, int rebinds) {
  return r.pps >= 0.99 * r.offered_pps && r.missing == 0 && r.dups == 0 &&
         r.rebinds == rebinds && g3_quic_rtt_ratio(r) < 2;
}

void print_g3_quic(const G3QuicResult& r) {
  std::printf("  G3 quic (one datagram path, %d rebinds): offered %.0f pps, delivered %.0f pps, "
              "sent %llu, missing %llu, dups %llu; RTT p95 %.3f ms vs %.3f ms baseline (ratio "
              "%.2f), p50 %.3f / %.3f ms, max %.1f / %.1f ms; engine migrations %llu, "
              "retransmits %llu; CPU %.2f s (%.1f us/packet; dialer io %.2f s, listener io "
              "%.2f s); targets %s\n",
              r.rebinds, r.offered_pps, r.pps, static_cast<unsigned long long>(r.sent),
              static_cast<unsigned long long>(r.missing), static_cast<unsigned long long>(r.dups),
              r.rtt_p95_ms, r.rtt_p95_baseline_ms, g3_quic_rtt_ratio(r), r.rtt_p50_ms,
              r.rtt_p50_baseline_ms, r.rtt_max_ms,
              r.rtt_max_baseline_ms, static_cast<unsigned long long>(r.migrations),
              static_cast<unsigned long long>(r.retransmits), r.cpu_s, r.cpu_us_per_packet,
              r.dialer_io_cpu_s, r.listener_io_cpu_s, g3_quic_targets_met(r) ? "met" : "missed");
}

void write_g3_quic_json(JsonWriter& j, const G3QuicResult* r) {
  const auto num = [&](std::string_view key, double v) {
    if (r != nullptr) {
      j.kv(key, v);
    } else {
      j.kv_null(key);
    }
  };
  const auto cnt = [&](std::string_view key, std::uint64_t v) {
    if (r != nullptr) {
      j.kv(key, v);
    } else {
      j.kv_null(key);
    }
  };
  const G3QuicResult none;
  const G3QuicResult& g = r != nullptr ? *r : none;
  num("g3_quic_pps", g.pps);
  num("g3_quic_offered_pps", g.offered_pps);
  cnt("g3_quic_sent", g.sent);
  cnt("g3_quic_missing", g.missing);
  cnt("g3_quic_dups", g.dups);
  cnt("g3_quic_rebinds", static_cast<std::uint64_t>(g.rebinds));
  num("g3_quic_rtt_p95_ms", g.rtt_p95_ms);
  num("g3_quic_rtt_p95_baseline_ms", g.rtt_p95_baseline_ms);
  num("g3_quic_rtt_p95_ratio", g3_quic_rtt_ratio(g));
  num("g3_quic_rtt_p50_ms", g.rtt_p50_ms);
  num("g3_quic_rtt_p50_baseline_ms", g.rtt_p50_baseline_ms);
  num("g3_quic_rtt_max_ms", g.rtt_max_ms);
  num("g3_quic_rtt_max_baseline_ms", g.rtt_max_baseline_ms);
  cnt("g3_quic_migrations", g.migrations);
  cnt("g3_quic_retransmits", g.retransmits);
  num("g3_quic_cpu_s", g.cpu_s);
  num("g3_quic_cpu_us_per_packet", g.cpu_us_per_packet);
  num("g3_quic_dialer_io_cpu_s", g.dialer_io_cpu_s);
  num("g3_quic_listener_io_cpu_s", g.listener_io_cpu_s);
}

}  // namespace rendr::bench
