// SPDX-License-Identifier: Apache-2.0
// rendr-bench migrate: native migration through rendr-agent in the gateway lab (named netns
// rbench-*). Three parts, each against a baseline measured in the same run:
//   downtime  echo every 1 ms over one connection; per migration, the worst per-message RTT of
//             messages sent around it (p50/p99 over --migrations, default 20);
//   bulk      HTTP download from rendr-fileserver with 5 migrations vs the same without;
//   stalls    bulk downloads migrated every 0.25 s (and the same half-closed): per migration,
//             the longest gap in data arriving at the client (migrate_load.cpp);
//   batch     --batch connections (default 1000) moved by one migrate request: total time;
//   busy      --busy-flows saturating downloads moved in one batch: frozen time.
// The last stdout line (with --json) is one JSON object.
#include "bench/cli.hpp"
#include "bench/loopback.hpp"
#include "bench/migrate_downtime.hpp"
#include "bench/migrate_load.hpp"
#include "bench/stats.hpp"
#include "bench/subcommand.hpp"
#include "lab/agent_stack.hpp"
#include "lab/gateway_lab.hpp"

#include <cmath>
#include <sys/stat.h>
#include <sys/wait.h>
#include <rendr/agents/embed.hpp>
#include <rendr/common/endpoint.hpp>
#include <rendr/common/json.hpp>

#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace rendr::bench {

namespace {

long long peer_resets(const lab::GatewayLab& lab) {
  std::string out;
  lab::shell("ip netns exec " + lab.ns("peer") + " nstat -az TcpEstabResets TcpInErrs TcpOutRsts",
             &out);
  long long sum = 0;
  std::size_t pos = 0;
  while ((pos = out.find("Tcp", pos)) != std::string::npos) {
    auto sp = out.find_first_of(" \t", pos);
    auto num = out.find_first_not_of(" \t", sp);
    sum += std::atoll(out.c_str() + num);
    pos = num;
  }
  return sum;
}

// tcp_counters returns "name=value ..." of the nonzero nstat counters |names| in |ns| since
// the last call there (nstat keeps per-netns history); used for the bulk diagnostics.
std::string tcp_counters(const std::string& ns, const std::string& names) {
  std::string out;
  lab::shell("ip netns exec " + ns + " nstat " + names, &out);
  std::string r;
  std::size_t pos = 0;
  while ((pos = out.find("Tcp", pos)) != std::string::npos) {
    auto sp = out.find_first_of(" \t", pos);
    auto num = out.find_first_not_of(" \t", sp);
    auto end = out.find_first_of(" \t\n", num);
    r += (r.empty() ? "" : " ") + out.substr(pos, sp - pos) + "=" + out.substr(num, end - num);
    pos = end;
  }
  return r.empty() ? "-" : r;
}

}  // namespace

// Hidden helper: echo server against the embedder API (one per host in the bench's lab).
int run_echo_server(std::span<char* const> args) {
  raise_nofile_to_hard();
  if (args.size() < 2) {
    return kExitUsage;
  }
  std::string sock = args[0];
  std::string listen = args[1];
  auto session = agents::Session::connect(sock, "echo");
  if (!session) {
    std::fprintf(stderr, "echo-server: %s\n", session.error().message().c_str());
    return kExitFailed;
  }
  auto ep = Endpoint::parse(listen);
  UniqueFd l(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(l.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage ss{};
  socklen_t sl = ep->to_sockaddr(ss);
  if (::bind(l.get(), reinterpret_cast<sockaddr*>(&ss), sl) != 0 || ::listen(l.get(), 4096) != 0) {
    std::perror("echo-server: listen");
    return kExitFailed;
  }
  std::printf("echo-server ready\n");
  std::fflush(stdout);
  std::map<std::uint64_t, UniqueFd> conns;
  std::vector<std::uint8_t> buf(65536);
  for (;;) {
    std::vector<pollfd> p = {{session->fd(), POLLIN, 0}, {l.get(), POLLIN, 0}};
    std::vector<std::uint64_t> ids;
    for (auto& [id, fd] : conns) {
      p.push_back({fd.get(), POLLIN, 0});
      ids.push_back(id);
    }
    // fd() is -1 while the agent is away; timeout_ms() says when to register again.
    const int st = session->timeout_ms();
    if (::poll(p.data(), p.size(), st < 0 || st > 1000 ? 1000 : st) < 0) {
      continue;
    }
    const bool agent_io = (p[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
    if (agent_io || session->timeout_ms() == 0) {
      for (;;) {
        auto ev = session->poll_event();
        if (!ev) {
          return kExitFailed;
        }
        if (!*ev) {
          break;
        }
        if (auto* er = std::get_if<agents::Session::ExportRequest>(&**ev)) {
          for (auto id : er->conn_ids) {
            auto it = conns.find(id);
            if (it != conns.end() && session->export_conn(id, it->second.get(), {}).ok()) {
              conns.erase(it);
            }
          }
        } else if (auto* ad = std::get_if<agents::Session::Adopt>(&**ev)) {
          conns[ad->conn_id] = std::move(ad->fd);
        } else if (auto* rt = std::get_if<agents::Session::Returned>(&**ev)) {
          conns[rt->conn_id] = std::move(rt->fd);
        }
        // AgentLost / AgentBack: nothing to do, the connections are served on.
      }
      if (agent_io) {
        continue;
      }
    }
    if ((p[1].revents & POLLIN) != 0) {
      for (;;) {
        int fd = ::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) {
          break;
        }
        ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        auto id = session->track(fd);
        if (id) {
          conns[*id] = UniqueFd(fd);
        } else {
          ::close(fd);
        }
      }
    }
    for (std::size_t k = 0; k < ids.size(); ++k) {
      if (p[2 + k].revents == 0) {
        continue;
      }
      auto it = conns.find(ids[k]);
      if (it == conns.end()) {
        continue;
      }
      ssize_t n = ::recv(it->second.get(), buf.data(), buf.size(), MSG_DONTWAIT);
      if (n > 0) {
        (void)::send(it->second.get(), buf.data(), static_cast<std::size_t>(n), MSG_NOSIGNAL);
      } else if (n == 0 || errno != EAGAIN) {
        (void)session->untrack(ids[k]);
        conns.erase(it);
      }
    }
  }
}

struct Sample {
  double t_s;
  double mib_s;
};

// plot_bulk draws both bulk timelines and the migration markers into |png| with gnuplot
// (Debian package gnuplot-nox; the setup script installs it).
Status plot_bulk(const std::string& png, const std::vector<Sample>& plain,
                 const std::vector<Sample>& migrated, const std::vector<double>& marks,
                 std::uint64_t mib) {
  auto data = [](const std::vector<Sample>& tl) {
    std::string d;
    char line[64];
    d += "0 0\n";
    for (const auto& smp : tl) {
      std::snprintf(line, sizeof line, "%.3f %.1f\n", smp.t_s, smp.mib_s);
      d += line;
    }
    return d + "e\n";
  };
  std::string script =
      "set terminal pngcairo size 1100,520 font 'sans,10'\n"
      "set output '" + png + "'\n"
      "set title 'rendr-bench migrate: " + std::to_string(mib) +
      " MiB HTTP download through the VIP; live migrations A<->B (dashed)'\n"
      "set xlabel 'time since the request (s)'\nset ylabel 'throughput (MiB/s, 100 ms samples)'\n"
      "set grid\nset key top right\nset yrange [0:*]\n";
  int k = 1;
  for (double m : marks) {
    char a[160];
    std::snprintf(a, sizeof a,
                  "set arrow from %.3f, graph 0 to %.3f, graph 1 nohead dt 2 lc rgb '#c03030'\n"
                  "set label 'm%d' at %.3f, graph 0.97 offset 0.3,0 tc rgb '#c03030'\n",
                  m, m, k, m);
    script += a;
    ++k;
  }
  // A sample is (end of its tick, rate over the tick): fsteps draws it over the tick.
  script += "plot '-' using 1:2 with fsteps lw 2 lc rgb '#909090' title 'no migration', "
            "'-' using 1:2 with fsteps lw 2 lc rgb '#2060c0' title 'with migrations'\n";
  script += data(plain) + data(migrated);
  FILE* g = ::popen("gnuplot 2>&1", "w");
  if (g == nullptr) {
    return make_error(std::errc::no_such_file_or_directory, "cannot run gnuplot");
  }
  std::fwrite(script.data(), 1, script.size(), g);
  int rc = ::pclose(g);
  if (rc != 0) {
    return make_error(std::errc::io_error,
                      "gnuplot failed (exit " + std::to_string(WEXITSTATUS(rc)) +
                          "; is gnuplot-nox installed? tools/setup --deps installs it)");
  }
  struct stat stbuf{};
  if (::stat(png.c_str(), &stbuf) != 0 || stbuf.st_size == 0) {
    return make_error(std::errc::io_error, "gnuplot wrote no " + png);
  }
  return {};
}

int run_migrate(std::span<char* const> args) {
  bool json = false;
  std::uint64_t migrations = 20;
  std::uint64_t batch = 1000;
  std::uint64_t bulk_mib = 1024;
  ArgParser ap("rendr-bench migrate [--json] [options]",
               "Native migration through rendr-agent in a gateway lab (named netns rbench-*): "
               "peer-observed downtime (echo every 1 ms), bulk throughput with 5 migrations vs "
               "none, and one batch of N connections. Needs root.");
  ap.flag("json", &json, "print one JSON object as the last line");
  ap.uint("migrations", &migrations, 1, 10000, "downtime samples (migrations), default 20");
  ap.uint("batch", &batch, 0, 20000, "connections moved in one batch (0 skips), default 1000");
  ap.uint("bulk-mib", &bulk_mib, 0, 65536, "bulk transfer size in MiB (0 skips), default 1024");
  std::uint64_t bulk_pairs = 5;
  ap.uint("bulk-pairs", &bulk_pairs, 1, 100,
          "bulk downloads without and with 5 migrations, alternated; the ratio is the median "
          "of the pairs' ratios, default 5");
  std::uint64_t stall_migrations = 10;
  std::uint64_t busy_flows = 50;
  ap.uint("stall-migrations", &stall_migrations, 0, 1000,
          "bulk (and half-closed) migrations 0.25 s apart whose stall the client measures "
          "(0 skips; needs --bulk-mib), default 10");
  ap.uint("busy-flows", &busy_flows, 0, 1000,
          "saturating downloads moved in one batch (0 skips; needs --bulk-mib), default 50");
  std::string plot;
  ap.str("plot", &plot, "FILE.png",
         "draw the bulk throughput timelines with migration markers into FILE.png (gnuplot)");
  auto pr = ap.parse(args);
  if (!pr) {
    std::fprintf(stderr, "rendr-bench migrate: %s\n", pr.error().message().c_str());
    return kExitUsage;
  }
  if (!*pr) {
    return kExitOk;
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "rendr-bench migrate: needs root (netns, eBPF, TCP_REPAIR)\n");
    return kExitFailed;
  }
  raise_nofile_to_hard();
  auto labr = lab::GatewayLab::create("rbench");
  if (!labr) {
    std::fprintf(stderr, "rendr-bench migrate: %s\n", labr.error().message().c_str());
    return kExitFailed;
  }
  auto& lab = **labr;
  lab::AgentStackOptions so;
  so.agent_bin = RENDR_AGENT_BIN;
  so.rendrctl_bin = RENDRCTL_BIN;
  so.freeze_grace_ms = 500;
  auto str = lab::AgentStack::start(lab, so);
  if (!str) {
    std::fprintf(stderr, "rendr-bench migrate: %s\n", str.error().message().c_str());
    return kExitFailed;
  }
  auto& stack = **str;
  char self[4096] = {};
  ssize_t sn = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (sn <= 0) {
    return kExitFailed;
  }
  const std::string work = stack.dir();
  for (const char* h : {"a", "b"}) {
    std::string lg = std::string("echo-") + h;
    (void)stack.spawn(h, {self, "echo-server", stack.sock(h), "10.99.0.1:9000"}, lg);
    if (!stack.wait_log(lg, "ready", 10000)) {
      std::fprintf(stderr, "echo server did not start: %s\n", stack.log(lg).c_str());
      return kExitFailed;
    }
  }
  const long long rst0 = peer_resets(lab);
  std::uint64_t bytes_lost = 0;
  std::string failures;

  // 1. Downtime.
  auto dtr = measure_downtime(lab, stack, 9000, static_cast<int>(migrations));
  if (!dtr) {
    std::fprintf(stderr, "rendr-bench migrate: %s\n", dtr.error().message().c_str());
    return kExitFailed;
  }
  const DowntimeResult& dt = *dtr;
  bytes_lost += dt.bytes_lost;
  failures += dt.failures;
  const std::vector<double>& downtimes = dt.downtime_ms;
  const std::vector<double>& frozen = dt.frozen_ms;
  const double baseline_p99 = dt.baseline_p99_ms;

  // 2. Bulk: the same download without and with 5 migrations.
  double ratio = 0;
  std::vector<double> bulk_plain;  // MiB/s per pair
  std::vector<double> bulk_with;
  std::vector<double> bulk_ratios;
  std::vector<Sample> plain_tl;  // (end of a 100 ms tick in s since the request, MiB/s)
  std::vector<Sample> mig_tl;
  std::vector<double> marks;  // s since the request at which each migration was requested
  std::uint64_t bulk_committed = 0;       // bulk migrations that committed
  std::uint64_t bulk_finished_first = 0;  // asked after the server had finished the flow
  if (bulk_mib > 0) {
    const std::uint64_t size = bulk_mib << 20;
    if (auto st = write_bench_file(work + "/bulk", size); !st) {
      std::fprintf(stderr, "rendr-bench: %s\n", st.error().message().c_str());
      return kExitFailed;
    }
    start_fileservers(stack, work);
    auto download = [&](int n_mig, std::vector<Sample>& timeline, std::vector<double>* mk) -> double {
      auto fd = connect_vip(lab, 8080);
      if (!fd) {
        failures += "bulk connect: " + fd.error().message() + "; ";
        return 0;
      }
      std::string req = "GET /bulk HTTP/1.1\r\nHost: vip\r\n\r\n";
      (void)::send(fd->get(), req.data(), req.size(), MSG_NOSIGNAL);
      const std::string tuple = server_tuple(fd->get());
      std::atomic<std::uint64_t> got{0};
      std::atomic<bool> done{false};
      const auto t0 = Clock::now();
      // Failed migrations, judged after the download: the server may finish the flow (write
      // everything, close, the agent stops tracking it) while bytes are still in flight to us.
      std::vector<std::pair<int, std::string>> mig_errors;
      // The migrating thread sleeps until the reader says the next mark is reached: a thread
      // polling every 1 ms beside the download (only in the migrated one) cost it a third of
      // its rate on 2 shared cores in some runs, before the first migration.
      std::mutex mark_mu;
      std::condition_variable mark_cv;
      const std::uint64_t step = size / static_cast<std::uint64_t>(n_mig + 1);
      std::thread mig([&] {
        std::string on = "a";
        for (int k = 1; k <= n_mig; ++k) {
          {
            std::unique_lock<std::mutex> lk(mark_mu);
            mark_cv.wait(lk, [&] {
              return done.load() || got.load() >= step * static_cast<std::uint64_t>(k);
            });
          }
          if (done) {
            break;
          }
          std::string to = on == "a" ? "b" : "a";
          if (mk != nullptr) {
            mk->push_back(std::chrono::duration<double>(Clock::now() - t0).count());
          }
          auto rep = stack.migrate(on, {tuple}, to);
          if (rep) {
            auto steps = rep->find("\"steps_ms\":");
            auto steps_end = steps == std::string::npos ? steps : rep->find('}', steps);
            std::fprintf(stderr, "bulk migration %d %s->%s: %s, frozen %s ms, %s bytes carried %s\n",
                         k, on.c_str(), to.c_str(), json_scalar(*rep, "result").c_str(),
                         json_scalar(*rep, "frozen_ms").c_str(),
                         json_scalar(*rep, "bytes_carried").c_str(),
                         steps == std::string::npos ? "" : rep->substr(steps, steps_end + 1 - steps).c_str());
          }
          if (rep && json_scalar(*rep, "result") == "committed") {
            on = to;
            ++bulk_committed;
          } else if (rep && json_scalar(*rep, "result") == "empty") {
            // The agent dropped the flow from the batch as ended (the server had finished it).
            mig_errors.emplace_back(k, "the flow had ended");
          } else {
            mig_errors.emplace_back(k, rep ? json_scalar(*rep, "error") : rep.error().message());
          }
        }
      });
      std::vector<std::uint8_t> buf(1 << 20);
      std::string head;
      bool in_body = false;
      std::uint64_t body = 0;
      std::uint64_t next_mark = step;
      auto tick = t0;
      std::uint64_t tick_bytes = 0;
      while (body < size) {
        ssize_t n = ::recv(fd->get(), buf.data(), buf.size(), 0);
        if (n <= 0) {
          break;
        }
        std::size_t off = 0;
        if (!in_body) {
          head.append(reinterpret_cast<char*>(buf.data()), static_cast<std::size_t>(n));
          auto e = head.find("\r\n\r\n");
          if (e == std::string::npos) {
            continue;
          }
          in_body = true;
          std::size_t hdr_in_this = static_cast<std::size_t>(n) - (head.size() - (e + 4));
          off = hdr_in_this;
        }
        for (std::size_t i = off; i < static_cast<std::size_t>(n); ++i) {
          if (buf[i] != file_byte(body + (i - off))) {
            ++bytes_lost;
          }
        }
        body += static_cast<std::uint64_t>(n) - off;
        got = body;
        if (n_mig > 0 && body >= next_mark) {
          next_mark += step;
          std::lock_guard<std::mutex> lk(mark_mu);
          mark_cv.notify_all();
        }
        tick_bytes += static_cast<std::uint64_t>(n) - off;
        auto now = Clock::now();
        if (now - tick >= std::chrono::milliseconds(100)) {
          timeline.push_back({std::chrono::duration<double>(now - t0).count(),
                              static_cast<double>(tick_bytes) / 1048576.0 /
                                  std::chrono::duration<double>(now - tick).count()});
          tick = now;
          tick_bytes = 0;
        }
      }
      {
        std::lock_guard<std::mutex> lk(mark_mu);
        done = true;
      }
      mark_cv.notify_all();
      mig.join();
      if (body < size) {
        bytes_lost += size - body;
      }
      for (const auto& [k, err] : mig_errors) {
        // The body arrived whole, and the source no longer tracked the flow or its server no
        // longer knew it: the server had already written everything and closed it (the rest
        // was in flight to us). Nothing was left to migrate; not a failure.
        if (body == size && (err.find("no tracked flow") != std::string::npos ||
                             err.find("unknown connection") != std::string::npos ||
                             err == "the flow had ended")) {
          ++bulk_finished_first;
          std::fprintf(stderr, "bulk migration %d not run: the server had already finished the "
                               "flow (%s)\n", k, err.c_str());
          continue;
        }
        failures += "bulk migration " + std::to_string(k) + " failed: " + err + "; ";
      }
      return static_cast<double>(body) / 1048576.0 /
             std::chrono::duration<double>(Clock::now() - t0).count();
    };
    const char* env_diag = std::getenv("RENDR_BENCH_NSTAT");
    const std::string kDiag = env_diag != nullptr ? env_diag :
        "TcpRetransSegs TcpExtPAWSEstab TcpExtTCPLossProbes TcpExtTCPTimeouts "
        "TcpExtTCPDSACKRecv TcpExtTCPACKSkippedSeq TcpExtTCPSpuriousRTOs TcpExtTCPZeroWindowDrop";
    for (const char* h : {"peer", "a", "b"}) {
      (void)tcp_counters(lab.ns(h), kDiag);  // start the history
    }
    // One download's rate moves between runs with nothing migrating (on 2 shared cores a run
    // holds ~400 or ~600 MiB/s from its first 100 ms on): one pair is mostly that noise. So
    // pairs alternate their order and the ratio is their median. The timelines and markers
    // come from the first pair.
    for (std::uint64_t k = 0; k < bulk_pairs; ++k) {
      std::vector<Sample> tl_plain;
      std::vector<Sample> tl_mig;
      std::vector<double> mk;
      double plain = 0;
      double with = 0;
      auto counters = [&](const char* what) {
        for (const char* h : {"peer", "a", "b"}) {
          std::fprintf(stderr, "bulk (%s) %s: %s\n", what, h,
                       tcp_counters(lab.ns(h), kDiag).c_str());
        }
      };
      auto run_plain = [&] {
        plain = download(0, k == 0 ? plain_tl : tl_plain, nullptr);
        counters("no migration");
      };
      auto run_mig = [&] {
        with = download(5, k == 0 ? mig_tl : tl_mig, k == 0 ? &marks : &mk);
        counters("5 migrations");
      };
      if (k % 2 == 0) {
        run_plain();
        run_mig();
      } else {
        run_mig();
        run_plain();
      }
      std::fprintf(stderr, "bulk pair %llu: %.0f MiB/s without, %.0f with 5 migrations\n",
                   static_cast<unsigned long long>(k + 1), plain, with);
      bulk_plain.push_back(plain);
      bulk_with.push_back(with);
      bulk_ratios.push_back(plain > 0 ? with / plain : 0);
    }
    ratio = percentile(bulk_ratios, 50);
  }

  // 2b. Stalls: migrations 0.25 s apart during a bulk download, then the same with the server
  // in CLOSE_WAIT (the client half-closed after its request).
  StallResult stalls;
  StallResult halfclose;
  if (bulk_mib > 0 && stall_migrations > 0) {
    StallOptions so2;
    so2.file = "bulk";
    so2.size = bulk_mib << 20;
    so2.migrations = static_cast<int>(stall_migrations);
    stalls = measure_stalls(lab, stack, so2);
    so2.half_close = true;
    halfclose = measure_stalls(lab, stack, so2);
    for (auto* r : {&stalls, &halfclose}) {
      bytes_lost += r->bytes_bad;
      failures += r->failures;
      std::fprintf(stderr, "%s stalls (ms):", r == &stalls ? "bulk" : "half-closed");
      for (double v : r->stall_ms) {
        std::fprintf(stderr, " %.1f", v);
      }
      std::fprintf(stderr, "; baseline longest gap %.1f ms\n", r->baseline_gap_ms);
    }
  }

  // 3. Batch.
  double batch_s = 0;
  if (batch > 0) {
    std::vector<UniqueFd> cs;
    for (std::uint64_t i = 0; i < batch; ++i) {
      auto fd = connect_vip(lab, 9000);
      if (!fd) {
        failures += "batch connect: " + fd.error().message() + "; ";
        break;
      }
      cs.push_back(std::move(*fd));
    }
    // Wait until the echo server tracks them all (an echo round trip each).
    for (auto& c : cs) {
      std::uint64_t m[2] = {7, 7};
      (void)::send(c.get(), m, sizeof m, MSG_NOSIGNAL);
      std::uint8_t r[16];
      (void)::recv(c.get(), r, sizeof r, MSG_WAITALL);
    }
    auto t0 = Clock::now();
    auto rep = stack.migrate("a", {}, "b", false, "echo");
    batch_s = ms_between(t0, Clock::now()) / 1000.0;
    if (!rep || json_scalar(*rep, "result") != "committed") {
      failures += "batch: " + (rep ? json_scalar(*rep, "error") : rep.error().message()) + "; ";
    }
    for (auto& c : cs) {
      std::uint64_t m[2] = {9, 9};
      (void)::send(c.get(), m, sizeof m, MSG_NOSIGNAL);
      std::uint8_t r[16];
      pollfd p{c.get(), POLLIN, 0};
      if (::poll(&p, 1, 5000) != 1 || ::recv(c.get(), r, sizeof r, MSG_WAITALL) != 16) {
        bytes_lost += 16;
      }
    }
  }
  const long long rst = peer_resets(lab) - rst0;

  // 4. A busy batch: saturating downloads moved together (after the RST count: the bench closes
  // these downloads unfinished, which resets them from the client's side).
  BusyBatchResult busy;
  if (bulk_mib > 0 && busy_flows > 0) {
    busy = measure_busy_batch(lab, stack, "bulk", bulk_mib << 20, static_cast<int>(busy_flows));
    bytes_lost += busy.bytes_bad;
    failures += busy.failures;
    std::fprintf(stderr, "busy batch of %llu: %s, frozen %.1f ms, total %.1f ms, %llu bytes carried %s\n",
                 static_cast<unsigned long long>(busy.flows), busy.result.c_str(), busy.frozen_ms,
                 busy.total_ms, static_cast<unsigned long long>(busy.bytes_carried),
                 busy.steps.c_str());
  }

  JsonWriter j;
  j.begin_object();
  j.kv("bench", "migrate");
  j.kv("downtime_p50_ms", percentile(downtimes, 50));
  j.kv("downtime_p99_ms", percentile(downtimes, 99));
  j.kv("downtime_max_ms", percentile(downtimes, 100));
  j.kv("echo_baseline_p99_ms", baseline_p99);
  j.kv("frozen_p50_ms", percentile(frozen, 50));
  j.kv("frozen_p99_ms", percentile(frozen, 99));
  j.kv("migrations", static_cast<std::uint64_t>(downtimes.size()));
  write_rounded(j, "downtime_ms", downtimes, 3);
  write_rounded(j, "frozen_ms", frozen, 3);
  j.kv("bulk_throughput_ratio", ratio);
  j.kv("bulk_throughput_ratio_min",
       bulk_ratios.empty() ? 0.0 : *std::min_element(bulk_ratios.begin(), bulk_ratios.end()));
  write_rounded(j, "bulk_pair_ratios", bulk_ratios, 3);
  write_rounded(j, "bulk_pair_mib_s_plain", bulk_plain, 1);
  write_rounded(j, "bulk_pair_mib_s_migrated", bulk_with, 1);
  j.kv("bulk_migrations_committed", bulk_committed);
  j.kv("bulk_migrations_after_end", bulk_finished_first);
  for (auto [key, tl] : {std::pair{"plain", &plain_tl}, std::pair{"migrated", &mig_tl}}) {
    j.begin_array(std::string("bulk_timeline_mib_s_") + key);
    for (const auto& smp : *tl) {
      j.value(static_cast<std::int64_t>(smp.mib_s));
    }
    j.end_array();
    j.begin_array(std::string("bulk_timeline_t_s_") + key);
    for (const auto& smp : *tl) {
      j.number(std::round(smp.t_s * 1000) / 1000);
    }
    j.end_array();
  }
  write_rounded(j, "bulk_migration_marks_s", marks, 3);
  if (!plot.empty() && bulk_mib > 0) {
    if (auto pl = plot_bulk(plot, plain_tl, mig_tl, marks, bulk_mib); !pl) {
      failures += "plot: " + pl.error().message() + "; ";
    } else {
      std::fprintf(stderr, "bulk timeline plot written to %s\n", plot.c_str());
      j.kv("bulk_plot", plot);
    }
  }
  j.kv("bulk_stall_p50_ms", percentile(stalls.stall_ms, 50));
  j.kv("bulk_stall_max_ms", percentile(stalls.stall_ms, 100));
  j.kv("bulk_stall_baseline_ms", stalls.baseline_gap_ms);
  j.kv("bulk_stall_migrations", stalls.committed);
  j.kv("halfclose_stall_p50_ms", percentile(halfclose.stall_ms, 50));
  j.kv("halfclose_stall_max_ms", percentile(halfclose.stall_ms, 100));
  j.kv("halfclose_stall_migrations", halfclose.committed);
  write_rounded(j, "bulk_stall_ms", stalls.stall_ms, 3);
  write_rounded(j, "halfclose_stall_ms", halfclose.stall_ms, 3);
  j.kv("busy_batch_flows", busy.flows);
  j.kv("busy_batch50_frozen_ms", busy.frozen_ms);
  j.kv("busy_batch_total_ms", busy.total_ms);
  j.kv("busy_batch_bytes_carried", busy.bytes_carried);
  j.kv("batch_connections", batch);
  j.kv("batch_1000_s", batch_s);
  j.kv("rst_seen", static_cast<std::int64_t>(rst));
  j.kv("bytes_lost", bytes_lost);
  if (!failures.empty()) {
    j.kv("failures", failures);
  }
  j.end_object();
  if (!json) {
    std::printf("downtime p50 %.2f ms p99 %.2f ms (freeze-to-commit p50 %.2f ms) over %zu migrations\n"
                "bulk throughput ratio %.3f\n"
                "bulk stall p50 %.1f ms max %.1f ms, half-closed max %.1f ms\n"
                "busy batch of %llu: frozen %.1f ms\n"
                "batch of %llu: %.3f s\nrst %lld, bytes lost %llu\n",
                percentile(downtimes, 50), percentile(downtimes, 99), percentile(frozen, 50),
                downtimes.size(), ratio, percentile(stalls.stall_ms, 50),
                percentile(stalls.stall_ms, 100), percentile(halfclose.stall_ms, 100),
                static_cast<unsigned long long>(busy.flows), busy.frozen_ms,
                static_cast<unsigned long long>(batch), batch_s, rst,
                static_cast<unsigned long long>(bytes_lost));
  }
  std::printf("%s\n", j.str().c_str());
  return failures.empty() ? kExitOk : kExitFailed;
}

}  // namespace rendr::bench
