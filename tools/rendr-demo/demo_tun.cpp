// SPDX-License-Identifier: Apache-2.0
// rendr-demo --tun: stock curl, knowing nothing of rendr, downloads a file through rendr-tun
// (docs/tun-ingress.md) in the ingress lab (tools/lab/ingress_lab.hpp: app -TUN- two paths -
// egress - origin). Its connection is terminated in rendr-tun's lwIP and carried over an engine
// flow with two paths; a third of the way in, the active path is silently dropped (nftables,
// both ways), two thirds in it is re-added, and rendr-tun dials it again. The report: bytes and
// SHA-256 of what curl saved against the source, curl's exit code, TCP resets between curl and
// rendr-tun (counted on the TUN), and the stall as curl saw it (the longest time its output file did not grow after the drop,
// next to the longest before it).
#include "demo_tun.hpp"

#include "lab/ingress_lab.hpp"
#include "lab/ingress_stack.hpp"

#include <rendr/common/json.hpp>
#include <rendr/common/unique_fd.hpp>

#include <openssl/evp.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace rendr::demo {
namespace {

using Clock = std::chrono::steady_clock;

lab::IngressLab* g_lab = nullptr;

void on_signal(int) {
  if (g_lab != nullptr) {
    g_lab->teardown();
  }
  ::_exit(130);
}

std::string sha256_file(const std::string& path, std::uint64_t* size) {
  *size = 0;
  auto fd = UniqueFd::open(path, O_RDONLY);
  if (!fd) {
    return {};
  }
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 20);
  for (ssize_t n; (n = ::read(fd->get(), buf.data(), buf.size())) > 0;) {
    EVP_DigestUpdate(ctx, buf.data(), static_cast<std::size_t>(n));
    *size += static_cast<std::uint64_t>(n);
  }
  unsigned char md[32];
  unsigned len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < len; ++i) {
    s.push_back(kHex[md[i] >> 4]);
    s.push_back(kHex[md[i] & 15]);
  }
  return s;
}

std::uint64_t file_size(const std::string& p) {
  struct stat sb {};
  return ::stat(p.c_str(), &sb) == 0 ? static_cast<std::uint64_t>(sb.st_size) : 0;
}

// active_peer: the egress's address on the active path of the first flow in a rendr-tun status
// document ("10.88.0.2:7000"; |field| "remote" in the ingress's, "local" in the egress's), or
// "none". The egress sends the download: its choice is the path the bytes take.
std::string active_peer(const std::string& status, const std::string& field) {
  const std::string id = json_scalar(status, "active_path");
  const auto paths = status.find("\"paths\":[");
  const auto at = paths == std::string::npos ? paths : status.find("\"id\":" + id + ",", paths);
  const auto r = at == std::string::npos ? at : status.find("\"" + field + "\":\"", at);
  if (id.empty() || id == "0" || r == std::string::npos) {
    return "none";
  }
  const auto start = r + field.size() + 4;
  return status.substr(start, status.find('"', start) - start);
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "rendr-demo: error: %s\n", msg.c_str());
  return 2;
}

}  // namespace

int run_tun_demo(const TunDemoOptions& o) {
  const std::uint64_t size = o.size_mib << 20;
  ::signal(SIGPIPE, SIG_IGN);
  char tmpl[] = "/tmp/rendr-demo-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    return fail("mkdtemp failed");
  }
  const std::string work = tmpl;
  ::chmod(work.c_str(), 0755);
  const std::string src = work + "/file";
  const std::string out = work + "/download.bin";
  std::fprintf(stderr, "rendr-demo: writing the %llu MiB source file...\n",
               static_cast<unsigned long long>(o.size_mib));
  {
    auto fd = UniqueFd::open(src, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (!fd) {
      return fail(fd.error().message());
    }
    std::vector<std::uint64_t> buf((1 << 20) / 8);
    std::uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (std::uint64_t off = 0; off < size; off += buf.size() * 8) {
      for (auto& w : buf) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w = x;
      }
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size() * 8, size - off));
      if (::write(fd->get(), buf.data(), n) != static_cast<ssize_t>(n)) {
        return fail("write " + src + ": " + std::strerror(errno));
      }
    }
  }
  std::uint64_t src_size = 0;
  const std::string src_sha = sha256_file(src, &src_size);

  std::fprintf(stderr, "rendr-demo: building the ingress lab (app -TUN- two paths - egress - "
                       "origin)...\n");
  auto labr = lab::IngressLab::create(o.prefix);
  if (!labr) {
    return fail(labr.error().message());
  }
  lab::IngressLab& lab = **labr;
  g_lab = &lab;
  ::signal(SIGINT, on_signal);
  ::signal(SIGTERM, on_signal);
  std::fprintf(stderr, "rendr-demo: starting rendr-tun egress and ingress...\n");
  lab::IngressStackOptions so;
  so.tun_bin = o.tun_bin;
  so.ingress_args = {"--send-mss", "32768"};
  auto stackr = lab::IngressStack::start(lab, so);
  if (!stackr) {
    return fail(stackr.error().message());
  }
  lab::IngressStack& stack = **stackr;
  if (!stack.spawn("origin",
                   {"/bin/sh", "-c",
                    "cd '" + work + "' && exec python3 -u -m http.server 8080 --bind " +
                        lab::IngressLab::kOrigin4},
                   "origin") ||
      !stack.wait_log("origin", "Serving HTTP", 10000)) {
    return fail("the origin (python3 -m http.server) did not start: " + stack.log("origin"));
  }
  const std::string url = std::string("http://") + lab::IngressLab::kOrigin4 + ":8080/file";
  const std::string app_ns = lab.ns("app");
  // Resets between curl and rendr-tun, counted on the TUN itself (the app namespace's TCP
  // counters also see the engine's own carriers: a dropped path's carrier is reset when it
  // comes back, which curl never sees).
  if (auto st = lab.run("app", "nft add table inet rdemo && nft add chain inet rdemo in "
                               "'{ type filter hook input priority 0; }' && nft add chain inet "
                               "rdemo out '{ type filter hook output priority 0; }' && nft add "
                               "rule inet rdemo in iifname rtun0 tcp flags rst counter && nft add "
                               "rule inet rdemo out oifname rtun0 tcp flags rst counter");
      !st) {
    return fail(st.error().message());
  }
  const std::string rate = o.rate_mib == 0 ? "0" : std::to_string(o.rate_mib) + "M";
  auto curl = stack.spawn("app", {"curl", "-sS", "--max-time", "900", "--limit-rate", rate, "-o",
                                  out, url},
                          "curl");
  if (!curl) {
    return fail(curl.error().message());
  }
  std::printf("rendr-demo: stock curl in %s downloads %s (%llu MiB) through TUN %s and "
              "rendr-tun, two paths (p1 %s, p2 %s)\n",
              app_ns.c_str(), url.c_str(), static_cast<unsigned long long>(o.size_mib),
              lab::IngressLab::kTun, lab::IngressLab::egress_addr4(1).c_str(),
              lab::IngressLab::egress_addr4(2).c_str());
  std::fflush(stdout);

  // Watch curl's output grow; drop the path the egress sends on at a third, re-add it at two
  // thirds.
  const auto t0 = Clock::now();
  auto ms_since = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  std::uint64_t last_size = 0;
  auto last_growth = t0;
  double gap_before = 0;  // longest no-growth time before the drop (curl's own pace)
  double stall = 0;       // longest no-growth time from the drop on
  Clock::time_point t_drop{};
  Clock::time_point t_readd{};
  double drop_pct = 0;
  double readd_pct = 0;
  std::string active_before;
  std::string active_after;
  std::string redial_status;
  int drop_path = 0;          // the lab path dropped: the egress's active one at the drop
  std::uint64_t dropped = 0;  // packets the drop rules discarded (read before the re-add)
  double readded_ms = -1;  // re-add -> rendr-tun dialled the dropped path again
  int curl_status = -1;
  bool started = false;
  while (true) {
    int st = 0;
    if (::waitpid(*curl, &st, WNOHANG) == *curl) {
      curl_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
      break;
    }
    const auto now = Clock::now();
    const std::uint64_t s = file_size(out);
    if (s != last_size) {
      const double gap = ms_since(last_growth, now);
      if (started) {
        double& worst = t_drop == Clock::time_point{} ? gap_before : stall;
        worst = std::max(worst, gap);
      }
      started = true;
      last_size = s;
      last_growth = now;
    }
    if (t_drop == Clock::time_point{} && s >= size / 3) {
      const std::string eg = stack.status("egress");
      active_before = active_peer(eg, "local");
      drop_path = lab::IngressLab::active_path(eg);
      drop_path = drop_path == 0 ? 1 : drop_path;  // no active path: drop path 1 all the same
      t_drop = Clock::now();
      drop_pct = 100.0 * static_cast<double>(s) / static_cast<double>(size);
      if (auto d = lab.drop(drop_path, true); !d) {
        ::kill(*curl, SIGKILL);
        return fail(d.error().message());
      }
      std::printf("  %6.0f ms  %5.1f%%  path %d silently dropped (nftables, both ways); the "
                  "egress was sending on %s\n",
                  ms_since(t0, t_drop), drop_pct, drop_path, active_before.c_str());
      std::fflush(stdout);
    }
    if (t_drop != Clock::time_point{} && t_readd == Clock::time_point{} && s >= 2 * size / 3) {
      active_after = active_peer(stack.status("egress"), "local");
      const auto c = lab.drop_counters(drop_path);
      dropped = c ? c->out_packets + c->in_packets : 0;
      t_readd = Clock::now();
      readd_pct = 100.0 * static_cast<double>(s) / static_cast<double>(size);
      if (auto d = lab.drop(drop_path, false); !d) {
        ::kill(*curl, SIGKILL);
        return fail(d.error().message());
      }
      std::printf("  %6.0f ms  %5.1f%%  path %d re-added (the egress sends on %s)\n",
                  ms_since(t0, t_readd), readd_pct, drop_path, active_after.c_str());
      std::fflush(stdout);
    }
    if (t_readd != Clock::time_point{} && readded_ms < 0) {
      redial_status = stack.status("ingress");
      if (std::atoll(json_scalar(redial_status, "path_redials").c_str()) >= 1) {
        readded_ms = ms_since(t_readd, Clock::now());
        std::printf("  %6.0f ms          rendr-tun dialled path %d again (%.0f ms after it came "
                    "back)\n",
                    ms_since(t0, Clock::now()), drop_path, readded_ms);
        std::fflush(stdout);
      }
    }
    if (ms_since(t0, now) > 900000) {
      ::kill(*curl, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  const double secs = ms_since(t0, Clock::now()) / 1000.0;
  std::uint64_t got_size = 0;
  const std::string got_sha = sha256_file(out, &got_size);
  long long rsts = 0;
  {
    std::string rules;
    lab::shell("ip netns exec " + app_ns + " nft list table inet rdemo", &rules);
    for (auto p = rules.find("packets "); p != std::string::npos;
         p = rules.find("packets ", p + 8)) {
      rsts += std::atoll(rules.c_str() + p + 8);
    }
  }
  const bool sha_ok = !got_sha.empty() && got_sha == src_sha && got_size == src_size;
  // The drop hit the path the flow was on, and it moved to the other one.
  const int other = drop_path == 1 ? 2 : 1;
  const bool exercised =
      t_drop != Clock::time_point{} && dropped > 0 && drop_path > 0 &&
      active_before == lab::IngressLab::peers()[static_cast<std::size_t>(drop_path - 1)] &&
      active_after == lab::IngressLab::peers()[static_cast<std::size_t>(other - 1)];
  const bool ok = curl_status == 0 && sha_ok && rsts == 0 && exercised;
  std::printf("\nrendr-demo report (--tun)\n");
  std::printf("  curl exit      %d\n", curl_status);
  std::printf("  bytes          %llu received of %llu served\n",
              static_cast<unsigned long long>(got_size), static_cast<unsigned long long>(src_size));
  std::printf("  sha256 source  %s\n", src_sha.c_str());
  std::printf("  sha256 curl    %s\n", got_sha.c_str());
  std::printf("  resets         %lld TCP RSTs between curl and rendr-tun (on %s)\n", rsts,
              lab::IngressLab::kTun);
  std::printf("  path %d drop    at %.1f%%, %llu packets dropped; re-added at %.1f%%, dialled "
              "again %s\n",
              drop_path, drop_pct, static_cast<unsigned long long>(dropped), readd_pct,
              readded_ms >= 0 ? (std::to_string(static_cast<long long>(readded_ms)) +
                                 " ms later").c_str()
                              : "(not before curl finished)");
  std::printf("  stall (curl)   %.1f ms longest wait for bytes after the drop (before it: %.1f "
              "ms, curl's own pace at --limit-rate %s)\n",
              stall, gap_before, rate.c_str());
  std::printf("  elapsed        %.1f s (%.0f MiB/s)\n", secs,
              static_cast<double>(got_size) / 1048576.0 / secs);
  std::printf("  verdict        %s\n",
              ok ? "OK: nothing lost, nothing duplicated, no reset"
                 : "FAILED");
  if (!ok) {
    std::fprintf(stderr, "--- ingress ---\n%s--- egress ---\n%s--- curl ---\n%s",
                 stack.log("ingress").c_str(), stack.log("egress").c_str(),
                 stack.log("curl").c_str());
  }
  if (o.json) {
    JsonWriter j;
    j.begin_object();
    j.kv("ok", ok);
    j.kv("mode", "tun");
    j.kv("size_bytes", src_size);
    j.kv("received_bytes", got_size);
    j.kv("sha256_source", src_sha);
    j.kv("sha256_received", got_sha);
    j.kv("curl_exit", curl_status);
    j.kv("app_rsts", static_cast<std::int64_t>(rsts));
    j.kv("drop_at_percent", drop_pct);
    j.kv("readd_at_percent", readd_pct);
    j.kv("dropped_packets", dropped);
    j.kv("active_path_before_drop", active_before);
    j.kv("active_path_before_readd", active_after);
    j.kv("path1", lab::IngressLab::peers()[0]);
    j.kv("dropped_path", static_cast<std::int64_t>(drop_path));
    if (readded_ms >= 0) {
      j.kv("redial_ms", readded_ms);
    } else {
      j.kv_null("redial_ms");
    }
    j.kv("stall_ms", stall);
    j.kv("gap_before_drop_ms", gap_before);
    j.kv("rate_mib_s", o.rate_mib);
    j.kv("elapsed_s", secs);
    j.end_object();
    std::printf("%s\n", j.str().c_str());
  }
  if (o.keep) {
    std::printf("rendr-demo: download kept at %s\n", out.c_str());
  } else {
    (void)lab::shell("rm -rf '" + work + "'");
  }
  return ok ? 0 : 1;
}

}  // namespace rendr::demo
