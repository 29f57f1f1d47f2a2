// SPDX-License-Identifier: Apache-2.0
// rendr-demo — the README's main job: a live TCP connection moves between two hosts while an
// unmodified client (curl) keeps downloading, and the demo proves nothing was lost.
//
// It builds the gateway lab (named netns rendr-demo-{peer,gw,a,b}), serves a generated file over
// HTTP/1.1 from hostA, starts stock curl in the peer namespace, and migrates the serving socket
// hostA -> hostB -> hostA ... mid-download: freeze the flow (nftables in gw), checkpoint with
// TCP_REPAIR, release the source silently, steer the VIP route, restore in the other host, lift
// the freeze. The server's application state (the file offset) moves with the socket. At the end
// it compares SHA-256 of what curl saved with what was served. Exit 0 only if all is well.
#include "lab/gateway_lab.hpp"

#include <rendr/common/json.hpp>
#include <rendr/common/snapshot_codec.hpp>
#include <rendr/repair/repair.hpp>

#include <openssl/evp.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using namespace rendr;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kUsage =
    "usage: rendr-demo [--size-mib N] [--migrations N] [--rate-mib R] [--ipv6] [--json]\n"
    "                  [--keep-file]\n"
    "\n"
    "Live TCP migration demo: curl downloads a file from a VIP served by hostA while rendr\n"
    "moves the serving socket between hostA and hostB (network namespaces on this machine).\n"
    "Needs root (network namespaces, nftables, TCP_REPAIR).\n"
    "\n"
    "  --size-mib N     size of the served file in MiB (default 1024)\n"
    "  --migrations N   number of migrations during the download (default 4: A->B->A->B->A)\n"
    "  --rate-mib R     curl's download rate limit in MiB/s, 0 = unlimited (default 256); a\n"
    "                   paced reader keeps data queued in the socket when it migrates\n"
    "  --ipv6           use the IPv6 VIP [fd99::1] instead of 10.99.0.1\n"
    "  --json           print one JSON object with the results as the last line\n"
    "  --keep-file      keep curl's download (path printed) instead of deleting it\n";

lab::GatewayLab* g_lab = nullptr;

void on_signal(int) {
  if (g_lab != nullptr) {
    g_lab->teardown();
  }
  ::_exit(130);
}

// The served file: 64 KiB blocks of splitmix64 output seeded by the block number.
void fill(std::uint64_t offset, std::byte* out, std::size_t n) {
  std::size_t done = 0;
  while (done < n) {
    std::uint64_t pos = offset + done;
    std::uint64_t word = pos / 8;
    std::uint64_t z = word + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    std::size_t in = static_cast<std::size_t>(pos % 8);
    std::size_t k = std::min<std::size_t>(8 - in, n - done);
    for (std::size_t i = 0; i < k; ++i) {
      out[done + i] = static_cast<std::byte>(z >> (8 * (in + i)));
    }
    done += k;
  }
}

std::string hex(const unsigned char* md, unsigned len) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (unsigned i = 0; i < len; ++i) {
    s.push_back(kHex[md[i] >> 4]);
    s.push_back(kHex[md[i] & 15]);
  }
  return s;
}

Result<std::string> sha256_file(const std::string& path, std::uint64_t* size) {
  auto fd = UniqueFd::open(path, O_RDONLY);
  if (!fd) {
    return std::move(fd).take_error();
  }
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 20);
  *size = 0;
  ssize_t n = 0;
  while ((n = ::read(fd->get(), buf.data(), buf.size())) > 0) {
    EVP_DigestUpdate(ctx, buf.data(), static_cast<std::size_t>(n));
    *size += static_cast<std::uint64_t>(n);
  }
  unsigned char md[32];
  unsigned len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  return hex(md, len);
}

struct MigrationReport {
  std::string from;
  std::string to;
  double at_percent = 0;
  double pause_ms = 0;       // freeze on -> freeze off
  double checkpoint_us = 0;
  double restore_us = 0;
  std::uint64_t carried_bytes = 0;  // bytes in the socket queues that moved with it
  std::string error;
};

double us_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::micro>(b - a).count();
}

long long snmp(const lab::GatewayLab& lab, const std::string& name) {
  std::string out;
  lab::shell("ip netns exec " + lab.ns("peer") + " cat /proc/net/snmp", &out);
  // "Tcp: <names>\nTcp: <values>"
  auto first = out.find("Tcp:");
  if (first == std::string::npos) {
    return -1;
  }
  auto second = out.find("Tcp:", first + 4);
  if (second == std::string::npos) {
    return -1;
  }
  std::string names = out.substr(first + 4, out.find('\n', first) - first - 4);
  std::string values = out.substr(second + 4, out.find('\n', second) - second - 4);
  std::size_t pn = 0;
  std::size_t pv = 0;
  while (pn < names.size() && pv < values.size()) {
    auto en = names.find_first_not_of(' ', pn);
    auto ev = values.find_first_not_of(' ', pv);
    if (en == std::string::npos || ev == std::string::npos) {
      break;
    }
    auto nn = names.find(' ', en);
    auto nv = values.find(' ', ev);
    if (names.substr(en, nn - en) == name) {
      return std::atoll(values.substr(ev, nv - ev).c_str());
    }
    pn = nn == std::string::npos ? names.size() : nn;
    pv = nv == std::string::npos ? values.size() : nv;
  }
  return -1;
}

int fail(const std::string& msg) {
  std::fprintf(stderr, "rendr-demo: error: %s\n", msg.c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t size_mib = 1024;
  int migrations = 4;
  std::uint64_t rate_mib = 256;
  bool v6 = false;
  bool json = false;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto need = [&](const char* what) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "rendr-demo: %s needs a value\n%s", what, kUsage);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--size-mib") {
      char* end = nullptr;
      size_mib = std::strtoull(need("--size-mib"), &end, 10);
      if (*end != '\0' || size_mib == 0 || size_mib > 65536) {
        return fail("--size-mib must be a number in 1..65536");
      }
    } else if (a == "--migrations") {
      char* end = nullptr;
      migrations = static_cast<int>(std::strtol(need("--migrations"), &end, 10));
      if (*end != '\0' || migrations < 0 || migrations > 1000) {
        return fail("--migrations must be a number in 0..1000");
      }
    } else if (a == "--rate-mib") {
      char* end = nullptr;
      rate_mib = std::strtoull(need("--rate-mib"), &end, 10);
      if (*end != '\0' || rate_mib > 100000) {
        return fail("--rate-mib must be a number in 0..100000");
      }
    } else if (a == "--ipv6") {
      v6 = true;
    } else if (a == "--json") {
      json = true;
    } else if (a == "--keep-file") {
      keep = true;
    } else {
      std::fprintf(stderr, "rendr-demo: unknown argument '%s'\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (::geteuid() != 0) {
    return fail("needs root (network namespaces, nftables, TCP_REPAIR); run with sudo");
  }
  const std::uint64_t size = size_mib << 20;
  ::signal(SIGPIPE, SIG_IGN);

  std::fprintf(stderr, "rendr-demo: building the gateway lab (peer -- gw -- hostA, hostB)...\n");
  auto lab_r = lab::GatewayLab::create("rendr-demo");
  if (!lab_r) {
    return fail(lab_r.error().message());
  }
  auto& lab = **lab_r;
  g_lab = &lab;
  ::signal(SIGINT, on_signal);
  ::signal(SIGTERM, on_signal);

  const std::uint16_t port = 8080;
  auto vip = *Endpoint::parse_address(v6 ? lab::GatewayLab::kVip6 : lab::GatewayLab::kVip4, port);
  auto ns_a = lab.netns_fd("a");
  auto ns_b = lab.netns_fd("b");
  if (!ns_a || !ns_b) {
    return fail("cannot open the lab's namespaces");
  }
  UniqueFd listener;
  {
    auto in = lab::NetnsEnter::enter(ns_a->get());
    if (!in) {
      return fail(in.error().message());
    }
    auto l = UniqueFd::socket(vip.af(), SOCK_STREAM, 0);
    sockaddr_storage ss{};
    socklen_t sl = vip.to_sockaddr(ss);
    if (!l || ::bind(l->get(), reinterpret_cast<sockaddr*>(&ss), sl) != 0 ||
        ::listen(l->get(), 16) != 0) {
      return fail("listen on " + vip.to_string() + " in hostA: " + std::strerror(errno));
    }
    listener = std::move(*l);
  }

  char tmpl[] = "/tmp/rendr-demo-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    return fail("mkdtemp failed");
  }
  const std::string out_path = std::string(tmpl) + "/download.bin";
  const std::string url = v6 ? "http://[fd99::1]:8080/file" : "http://10.99.0.1:8080/file";
  const long long rst0 = snmp(lab, "EstabResets");
  const long long outrst0 = snmp(lab, "OutRsts");
  pid_t curl = ::fork();
  if (curl == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    const std::string rate = rate_mib == 0 ? "0" : std::to_string(rate_mib) + "M";
    ::execlp("ip", "ip", "netns", "exec", lab.ns("peer").c_str(), "curl", "-sS", "-g",
             "--max-time", "600", "--limit-rate", rate.c_str(), "-o", out_path.c_str(),
             url.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::printf("rendr-demo: curl (peer namespace, stock curl) is downloading %s (%llu MiB)\n",
              url.c_str(), static_cast<unsigned long long>(size_mib));
  std::fflush(stdout);

  pollfd lp{listener.get(), POLLIN, 0};
  if (::poll(&lp, 1, 10000) != 1) {
    return fail("curl did not connect within 10 s");
  }
  UniqueFd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!conn) {
    return fail(std::string("accept: ") + std::strerror(errno));
  }
  // Read the request head.
  std::string req;
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (req.find("\r\n\r\n") == std::string::npos && Clock::now() < deadline) {
    pollfd p{conn.get(), POLLIN, 0};
    ::poll(&p, 1, 100);
    char buf[2048];
    ssize_t n = ::recv(conn.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      req.append(buf, static_cast<std::size_t>(n));
    } else if (n == 0) {
      return fail("curl closed before sending its request");
    }
  }
  if (req.rfind("GET /file ", 0) != 0) {
    return fail("unexpected request: " + req.substr(0, req.find('\r')));
  }
  std::string head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
                     std::to_string(size) + "\r\nConnection: close\r\n\r\n";

  // Application state that travels with the socket: how much of the response was written.
  std::uint64_t head_sent = 0;
  std::uint64_t body_sent = 0;
  EVP_MD_CTX* served = EVP_MD_CTX_new();
  EVP_DigestInit_ex(served, EVP_sha256(), nullptr);
  std::vector<std::byte> buf(256 * 1024);
  std::vector<MigrationReport> reports;
  repair::Repairer rep;
  bool on_a = true;
  int done_migrations = 0;
  const auto t_start = Clock::now();
  std::string serve_error;

  while (head_sent < head.size() || body_sent < size) {
    // Migrate when the body crosses the next k/(migrations+1) mark.
    if (done_migrations < migrations &&
        body_sent >= size * static_cast<std::uint64_t>(done_migrations + 1) /
                         static_cast<std::uint64_t>(migrations + 1)) {
      MigrationReport mr;
      mr.from = on_a ? "hostA" : "hostB";
      mr.to = on_a ? "hostB" : "hostA";
      mr.at_percent = 100.0 * static_cast<double>(body_sent) / static_cast<double>(size);
      sockaddr_storage la{};
      sockaddr_storage ra{};
      socklen_t ll = sizeof la;
      socklen_t rl = sizeof ra;
      ::getsockname(conn.get(), reinterpret_cast<sockaddr*>(&la), &ll);
      ::getpeername(conn.get(), reinterpret_cast<sockaddr*>(&ra), &rl);
      FourTuple t{*Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&la), ll),
                  *Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ra), rl)};
      const auto t0 = Clock::now();
      if (auto f = lab.freeze(t); !f) {
        serve_error = f.error().message();
        break;
      }
      const auto t1 = Clock::now();
      auto cp = rep.checkpoint(conn.get());
      const auto t2 = Clock::now();
      if (!cp) {
        (void)lab.unfreeze();
        mr.error = cp.error().message();
        reports.push_back(mr);
        serve_error = "checkpoint failed: " + mr.error;
        break;
      }
      mr.checkpoint_us = us_between(t1, t2);
      mr.carried_bytes = cp->snapshot.send_queue.size() + cp->snapshot.recv_queue.size();
      if (std::getenv("RENDR_DEMO_DEBUG") != nullptr) {
        std::fprintf(stderr, "%s\n", snapshot_to_json(cp->snapshot).c_str());
      }
      rep.release(std::move(cp->socket));
      conn.reset();
      (void)lab.route_vip_to(on_a ? lab::Host::b : lab::Host::a);
      Result<UniqueFd> restored = make_error(std::errc::invalid_argument, "not run");
      Clock::time_point t3;
      Clock::time_point t4;
      {
        auto in = lab::NetnsEnter::enter(on_a ? ns_b->get() : ns_a->get());
        if (!in) {
          serve_error = in.error().message();
          break;
        }
        t3 = Clock::now();
        restored = rep.restore(cp->snapshot);
        t4 = Clock::now();
      }
      (void)lab.unfreeze();
      const auto t5 = Clock::now();
      mr.restore_us = us_between(t3, t4);
      mr.pause_ms = us_between(t0, t5) / 1000.0;
      if (!restored) {
        mr.error = restored.error().message();
        reports.push_back(mr);
        serve_error = "restore failed: " + mr.error;
        break;
      }
      conn = std::move(*restored);
      int fl = ::fcntl(conn.get(), F_GETFL);
      ::fcntl(conn.get(), F_SETFL, fl | O_NONBLOCK);
      on_a = !on_a;
      ++done_migrations;
      reports.push_back(mr);
      std::printf("  migration %d: %s -> %s at %5.1f%%  pause %.2f ms (checkpoint %.0f us, "
                  "restore %.0f us), %llu bytes in flight carried\n",
                  done_migrations, mr.from.c_str(), mr.to.c_str(), mr.at_percent, mr.pause_ms,
                  mr.checkpoint_us, mr.restore_us,
                  static_cast<unsigned long long>(mr.carried_bytes));
      std::fflush(stdout);
    }
    pollfd p{conn.get(), POLLOUT, 0};
    if (::poll(&p, 1, 30000) != 1) {
      serve_error = "no progress for 30 s at byte " + std::to_string(body_sent);
      break;
    }
    ssize_t n = 0;
    if (head_sent < head.size()) {
      n = ::send(conn.get(), head.data() + head_sent, head.size() - head_sent, MSG_NOSIGNAL);
      if (n > 0) {
        head_sent += static_cast<std::uint64_t>(n);
      }
    } else {
      std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), size - body_sent));
      // Do not cross a migration mark in one write, so migrations happen at the planned points.
      fill(body_sent, buf.data(), want);
      n = ::send(conn.get(), buf.data(), want, MSG_NOSIGNAL);
      if (n > 0) {
        EVP_DigestUpdate(served, buf.data(), static_cast<std::size_t>(n));
        body_sent += static_cast<std::uint64_t>(n);
      }
    }
    if (n < 0 && errno != EAGAIN) {
      serve_error = std::string("send: ") + std::strerror(errno);
      break;
    }
  }
  // Orderly close after the whole body (curl sees Content-Length satisfied, then FIN).
  conn.reset();
  unsigned char md[32];
  unsigned mdlen = 0;
  EVP_DigestFinal_ex(served, md, &mdlen);
  EVP_MD_CTX_free(served);
  const std::string served_sha = hex(md, mdlen);

  int status = 0;
  int curl_rc = -1;
  for (int i = 0; i < 60000 && ::waitpid(curl, &status, WNOHANG) == 0; ++i) {
    ::poll(nullptr, 0, 10);
  }
  if (WIFEXITED(status)) {
    curl_rc = WEXITSTATUS(status);
  } else {
    ::kill(curl, SIGKILL);
    ::waitpid(curl, &status, 0);
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t_start).count();
  std::uint64_t got_size = 0;
  auto got_sha = sha256_file(out_path, &got_size);
  const long long rst = snmp(lab, "EstabResets") - rst0;
  const long long outrst = snmp(lab, "OutRsts") - outrst0;
  if (!keep) {
    std::remove(out_path.c_str());
    ::rmdir(tmpl);
  }
  lab.teardown();
  g_lab = nullptr;

  const bool sha_ok = got_sha.ok() && *got_sha == served_sha && got_size == size;
  const bool ok = serve_error.empty() && curl_rc == 0 && sha_ok && rst == 0 && outrst == 0 &&
                  done_migrations == migrations;
  double worst = 0;
  for (const auto& r : reports) {
    worst = std::max(worst, r.pause_ms);
  }
  std::printf("\nrendr-demo report\n");
  std::printf("  migrations        %d of %d (%s)\n", done_migrations, migrations,
              v6 ? "IPv6" : "IPv4");
  std::printf("  worst pause       %.2f ms (freeze on -> off, includes nftables)\n", worst);
  std::printf("  transfer          %llu MiB in %.2f s\n", static_cast<unsigned long long>(size_mib), secs);
  std::printf("  curl exit status  %d\n", curl_rc);
  std::printf("  sha256 served     %s\n", served_sha.c_str());
  std::printf("  sha256 received   %s (%llu bytes)\n", got_sha.ok() ? got_sha->c_str() : "-",
              static_cast<unsigned long long>(got_size));
  std::printf("  peer RSTs         %lld received, %lld sent\n", rst, outrst);
  if (!serve_error.empty()) {
    std::printf("  error             %s\n", serve_error.c_str());
  }
  if (keep) {
    std::printf("  download kept at  %s\n", out_path.c_str());
  }
  std::printf("RESULT: %s\n", ok ? "OK - no byte lost or duplicated, no reset"
                                 : "FAILED - see above");
  if (json) {
    JsonWriter j;
    j.begin_object();
    j.kv("ok", ok);
    j.kv("family", v6 ? "ipv6" : "ipv4");
    j.kv("size_bytes", size);
    j.kv("seconds", secs);
    j.kv("curl_exit", curl_rc);
    j.kv("sha256_served", served_sha);
    j.kv("sha256_received", got_sha.ok() ? *got_sha : std::string());
    j.kv("received_bytes", got_size);
    j.kv("peer_rst_received", static_cast<std::int64_t>(rst));
    j.kv("peer_rst_sent", static_cast<std::int64_t>(outrst));
    j.kv("error", serve_error);
    j.begin_array("migrations");
    for (const auto& r : reports) {
      j.begin_object();
      j.kv("from", r.from);
      j.kv("to", r.to);
      j.kv("at_percent", r.at_percent);
      j.kv("pause_ms", r.pause_ms);
      j.kv("checkpoint_us", r.checkpoint_us);
      j.kv("restore_us", r.restore_us);
      j.kv("carried_bytes", r.carried_bytes);
      j.kv("error", r.error);
      j.end_object();
    }
    j.end_array();
    j.end_object();
    std::printf("%s\n", j.str().c_str());
  }
  return ok ? 0 : 1;
}
