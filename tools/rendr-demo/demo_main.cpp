// SPDX-License-Identifier: Apache-2.0
// rendr-demo - the README's main job: a live TCP connection moves between two hosts while an
// unmodified client (curl) keeps downloading, and the demo proves nothing was lost.
//
// It builds the gateway lab (named netns rendr-demo-{peer,gw,a,b}), starts rendr-agent in gw
// (eBPF steering), hostA and hostB (eBPF freeze, TCP_REPAIR) with a fresh CA, and
// rendr-fileserver - an HTTP/1.1 server written against the embedder API, whose file offset
// migrates with the socket - on both hosts. Stock curl in the peer namespace downloads a file
// from the VIP while `migrate` requests move the connection A -> B -> A -> B through the agents
// (freeze, checkpoint, TLS ship, staged restore, steer, commit). At the end it compares the
// SHA-256 of what curl saved with the source file. Exit 0 only if all is well.
//
// --method userstack / mixed: the same download, but hostB (mixed) or both hosts (userstack)
// serve with the userstack method: root provisions a TUN device owned by uid 4242 once and
// routes the VIP into it (GatewayLab::use_userstack), and that host's agent then runs as uid
// 4242 with no capability at all (setpriv), terminating the connection in its lwIP; the file
// server gets it through the same embed API. The report shows each host agent's method, uid
// and effective capabilities.
//
// --tun: stock curl downloads through rendr-tun (TUN ingress + egress over a two-path engine
// flow) in the ingress lab while the active path is silently dropped and later re-added
// (demo_tun.cpp).
#include "demo_tun.hpp"
#include "lab/agent_stack.hpp"
#include "lab/gateway_lab.hpp"

#include <rendr/agents/message.hpp>
#include <rendr/agents/packet.hpp>
#include <rendr/common/json.hpp>

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

using namespace rendr;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kUsage =
    "usage: rendr-demo [--method M] [--size-mib N] [--migrations N] [--rate-mib R] [--json]\n"
    "                  [--keep-file] [--lab-prefix P]\n"
    "       rendr-demo --tun [--size-mib N] [--rate-mib R] [--json] [--keep-file] [--lab-prefix P]\n"
    "\n"
    "Live TCP migration demo: stock curl downloads a file from a VIP served by hostA while the\n"
    "rendr agents move the serving connection between hostA and hostB (network namespaces on\n"
    "this machine, torn down at the end). Needs root (netns, eBPF, TCP_REPAIR).\n"
    "\n"
    "  --method M       how the hosts hold the connection (default native):\n"
    "                     native     both hosts: kernel sockets, TCP_REPAIR + eBPF freeze\n"
    "                     userstack  both hosts: rendr's user-space TCP (lwIP) over a TUN\n"
    "                                device root provisioned once for uid 4242; the host\n"
    "                                agents run as uid 4242 with NO capabilities (setpriv)\n"
    "                     mixed      hostA native (root), hostB userstack (uid 4242, no\n"
    "                                capabilities): every move crosses methods\n"
    "                   (the gateway agent stays root: eBPF steering)\n"
    "  --size-mib N     size of the served file in MiB (default 1024)\n"
    "  --migrations N   migrations during the download (default 3: A->B->A->B)\n"
    "  --rate-mib R     curl's download rate limit in MiB/s, 0 = unlimited (default 256)\n"
    "  --json           print one JSON object with the results as the last line\n"
    "  --keep-file      keep curl's download (path printed) instead of deleting it\n"
    "  --lab-prefix P   name the lab's namespaces P-peer, P-gw, P-a, P-b (default rendr-demo;\n"
    "                   an earlier lab with the same prefix is removed first)\n"
    "\n"
    "  --tun            instead: an unmodified app through rendr-tun (docs/tun-ingress.md).\n"
    "                   Stock curl in P-app downloads from an origin in P-origin through the\n"
    "                   TUN, rendr-tun ingress, a two-path engine flow and rendr-tun egress;\n"
    "                   the active path is silently dropped (nftables) at 1/3 and re-added at\n"
    "                   2/3. Reports bytes, SHA-256, resets and the stall as curl saw it.\n"
    "                   Needs root (netns, TUN). Defaults: --size-mib 256 --rate-mib 32.\n";

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


struct MigrationReport {
  std::string from;
  std::string to;
  double at_percent = 0;
  std::string json;
  std::string result;
  double frozen_ms = 0;
  double total_ms = 0;
  std::uint64_t carried = 0;
  std::string error;
};

constexpr int kAgentUid = 4242;  // the userstack host agents' user (no capabilities)

// HostAgent: how a host agent runs, read back from /proc (not from what was asked for).
struct HostAgent {
  std::string name;
  std::string method;
  std::string uid = "?";      // real uid
  std::string cap_eff = "?";  // effective capability mask (hex)
};

HostAgent host_agent(const std::string& name, const std::string& method, pid_t pid) {
  HostAgent h{name, method};
  std::string status;
  lab::shell("cat /proc/" + std::to_string(pid) + "/status", &status);
  auto field = [&](const std::string& f) -> std::string {
    auto p = status.find("\n" + f + ":");
    if (p == std::string::npos) {
      return "?";
    }
    p = status.find_first_not_of(" \t", p + f.size() + 2);
    return status.substr(p, status.find_first_of("\t\n", p) - p);
  };
  h.uid = field("Uid");
  h.cap_eff = field("CapEff");
  return h;
}

std::uint64_t file_size(const std::string& p) {
  struct stat sb {};
  return ::stat(p.c_str(), &sb) == 0 ? static_cast<std::uint64_t>(sb.st_size) : 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t size_mib = 1024;
  int migrations = 3;
  std::uint64_t rate_mib = 256;
  bool json = false;
  bool keep = false;
  std::string method = "native";
  std::string prefix = "rendr-demo";
  bool tun = false;
  bool size_set = false;
  bool rate_set = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto need = [&](const char* what) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "rendr-demo: %s needs a value\n%s", what, kUsage);
        std::exit(2);
      }
      return argv[++i];
    };
    char* end = nullptr;
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--size-mib") {
      size_mib = std::strtoull(need("--size-mib"), &end, 10);
      size_set = true;
      if (*end != '\0' || size_mib == 0 || size_mib > 65536) {
        return fail("--size-mib must be a number in 1..65536");
      }
    } else if (a == "--migrations") {
      migrations = static_cast<int>(std::strtol(need("--migrations"), &end, 10));
      if (*end != '\0' || migrations < 0 || migrations > 1000) {
        return fail("--migrations must be a number in 0..1000");
      }
    } else if (a == "--rate-mib") {
      rate_mib = std::strtoull(need("--rate-mib"), &end, 10);
      rate_set = true;
      if (*end != '\0' || rate_mib > 100000) {
        return fail("--rate-mib must be a number in 0..100000");
      }
    } else if (a == "--method") {
      method = need("--method");
      if (method != "native" && method != "userstack" && method != "mixed") {
        return fail("--method must be native, userstack or mixed (got '" + method + "')");
      }
    } else if (a == "--lab-prefix") {
      prefix = need("--lab-prefix");
    } else if (a == "--json") {
      json = true;
    } else if (a == "--tun") {
      tun = true;
    } else if (a == "--keep-file") {
      keep = true;
    } else {
      std::fprintf(stderr, "rendr-demo: unknown argument '%s'\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (tun) {
    if (method != "native" || migrations != 3) {
      return fail("--tun takes no --method or --migrations (the path under the flow changes, "
                  "not the host)");
    }
    if (::geteuid() != 0) {
      return fail("needs root (network namespaces, a TUN device); run with sudo");
    }
    demo::TunDemoOptions t;
    t.tun_bin = RENDR_TUN_BIN;
    t.prefix = prefix;
    t.size_mib = size_set ? size_mib : 256;
    t.rate_mib = rate_set ? rate_mib : 32;
    t.json = json;
    t.keep = keep;
    return demo::run_tun_demo(t);
  }
  if (::geteuid() != 0) {
    return fail("needs root (network namespaces, eBPF, TCP_REPAIR); run with sudo");
  }
  const std::uint64_t size = size_mib << 20;
  ::signal(SIGPIPE, SIG_IGN);

  char tmpl[] = "/tmp/rendr-demo-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    return fail("mkdtemp failed");
  }
  const std::string work = tmpl;
  const std::string src_path = work + "/file";
  const std::string out_path = work + "/download.bin";
  std::fprintf(stderr, "rendr-demo: writing the %llu MiB source file...\n",
               static_cast<unsigned long long>(size_mib));
  {
    auto fd = UniqueFd::open(src_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (!fd) {
      return fail(fd.error().message());
    }
    std::vector<std::byte> buf(1 << 20);
    for (std::uint64_t off = 0; off < size; off += buf.size()) {
      std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), size - off));
      fill(off, buf.data(), n);
      if (::write(fd->get(), buf.data(), n) != static_cast<ssize_t>(n)) {
        return fail("write " + src_path + ": " + std::strerror(errno));
      }
    }
  }
  std::uint64_t src_size = 0;
  auto src_sha = sha256_file(src_path, &src_size);
  if (!src_sha) {
    return fail(src_sha.error().message());
  }

  std::fprintf(stderr, "rendr-demo: building the gateway lab (peer -- gw -- hostA, hostB)...\n");
  auto lab_r = lab::GatewayLab::create(prefix);
  if (!lab_r) {
    return fail(lab_r.error().message());
  }
  auto& lab = **lab_r;
  g_lab = &lab;
  ::signal(SIGINT, on_signal);
  ::signal(SIGTERM, on_signal);

  // Hosts on the userstack method: root's one-time step (a TUN device owned by the agents' user,
  // the VIP routed into it); their agents then run with no privilege.
  std::vector<std::string> us_hosts;
  if (method == "userstack") {
    us_hosts = {"a", "b"};
  } else if (method == "mixed") {
    us_hosts = {"b"};
  }
  lab::AgentStackOptions so;
  so.agent_bin = RENDR_AGENT_BIN;
  so.rendrctl_bin = RENDRCTL_BIN;
  so.unpriv_uid = kAgentUid;
  so.unpriv_gid = kAgentUid;
  for (const auto& h : us_hosts) {
    std::fprintf(stderr, "rendr-demo: provisioning host%s for the userstack method (TUN rtun0 "
                         "owned by uid %d, VIP routed into it)...\n",
                 h == "a" ? "A" : "B", kAgentUid);
    if (auto st = lab.use_userstack(h == "a" ? lab::Host::a : lab::Host::b, "rtun0", kAgentUid,
                                    kAgentUid);
        !st) {
      return fail(st.error().message());
    }
    so.agent_args[h] = {"--method", "userstack", "--tun", "rtun0", "--service-port", "http=8080"};
    so.unprivileged.push_back(h);
  }
  std::fprintf(stderr, "rendr-demo: starting rendr-agent in gw, hostA, hostB (mutual TLS)...\n");
  auto stack_r = lab::AgentStack::start(lab, so);
  if (!stack_r) {
    return fail(stack_r.error().message());
  }
  auto& stack = **stack_r;
  auto is_us = [&](const std::string& h) {
    return std::find(us_hosts.begin(), us_hosts.end(), h) != us_hosts.end();
  };
  std::vector<HostAgent> hosts;
  for (const char* h : {"a", "b"}) {
    hosts.push_back(host_agent(h, is_us(h) ? "userstack" : "native", stack.pid(h)));
  }
  for (const char* h : {"a", "b"}) {
    // A userstack host has no VIP address (it is routed into the TUN): its file server listens
    // on loopback and gets every VIP connection through its agent.
    auto pid = stack.spawn(h, {RENDR_FILESERVER_BIN, "--agent", stack.sock(h), "--service", "http",
                               "--root", work, "--listen",
                               std::string(is_us(h) ? "127.0.0.1" : lab::GatewayLab::kVip4) +
                                   ":8080"},
                           std::string("fileserver-") + h);
    if (!pid || !stack.wait_log(std::string("fileserver-") + h, "ready", 10000)) {
      return fail(std::string("rendr-fileserver did not start in host ") + h + ": " +
                  stack.log(std::string("fileserver-") + h));
    }
  }

  const std::string url = "http://10.99.0.1:8080/file";
  const long long rst0 = snmp(lab, "EstabResets");
  const long long outrst0 = snmp(lab, "OutRsts");
  const long long inerr0 = snmp(lab, "InErrs");
  pid_t curl = ::fork();
  if (curl == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    const std::string rate = rate_mib == 0 ? "0" : std::to_string(rate_mib) + "M";
    ::execlp("ip", "ip", "netns", "exec", lab.ns("peer").c_str(), "curl", "-sS", "-g",
             "--max-time", "900", "--limit-rate", rate.c_str(), "-o", out_path.c_str(),
             url.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  std::printf("rendr-demo: stock curl in the peer namespace downloads %s (%llu MiB)\n",
              url.c_str(), static_cast<unsigned long long>(size_mib));
  std::fflush(stdout);
  const auto t_start = Clock::now();

  // The connection, as hostA's agent tracks it.
  std::string tuple;
  for (int i = 0; i < 1000 && tuple.empty(); ++i) {
    auto s = agents::connect_control(stack.sock("a"));
    if (s) {
      auto r = agents::call(s->get(), agents::Message(agents::MsgType::flows), 5000);
      if (r && r->type() == agents::MsgType::json) {
        tuple = json_scalar(r->str_or(agents::Tag::text, ""), "tuple");
      }
    }
    if (tuple.empty()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  if (tuple.empty()) {
    ::kill(curl, SIGKILL);
    return fail("the file server on hostA never reported curl's connection:\n" +
                stack.log("fileserver-a") + stack.log("a"));
  }
  std::printf("rendr-demo: connection %s served by hostA\n", tuple.c_str());
  // (The default demo's output stays as it was: the host lines are for the other methods.)
  for (const auto& h : method == "native" ? std::vector<HostAgent>{} : hosts) {
    std::printf("rendr-demo: host%s agent: method %s, uid %s, CapEff %s\n",
                h.name == "a" ? "A" : "B", h.method.c_str(), h.uid.c_str(), h.cap_eff.c_str());
  }

  std::vector<MigrationReport> reports;
  std::string on = "a";
  int curl_status = -1;
  bool curl_done = false;
  for (int k = 1; k <= migrations && !curl_done; ++k) {
    const std::uint64_t mark = size * static_cast<std::uint64_t>(k) /
                               static_cast<std::uint64_t>(migrations + 1);
    while (file_size(out_path) < mark) {
      int st = 0;
      if (::waitpid(curl, &st, WNOHANG) == curl) {
        curl_done = true;
        curl_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    // The download may have ended while the last migration was being reported (curl catches
    // up after a stall at its --limit-rate): then there is nothing left to move.
    if (int st = 0; !curl_done && ::waitpid(curl, &st, WNOHANG) == curl) {
      curl_done = true;
      curl_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    }
    if (curl_done) {
      std::printf("  the download ended before migration %d: a lower --rate-mib or a larger "
                  "--size-mib leaves room for every migration\n",
                  k);
      break;
    }
    MigrationReport mr;
    mr.from = on;
    mr.to = on == "a" ? "b" : "a";
    mr.at_percent = 100.0 * static_cast<double>(file_size(out_path)) / static_cast<double>(size);
    auto r = stack.migrate(on, {tuple}, mr.to);
    if (!r) {
      mr.result = "error";
      mr.error = r.error().message();
    } else {
      mr.json = *r;
      mr.result = json_scalar(*r, "result");
      mr.frozen_ms = std::atof(json_scalar(*r, "frozen_ms").c_str());
      mr.total_ms = std::atof(json_scalar(*r, "total_ms").c_str());
      mr.carried = std::strtoull(json_scalar(*r, "bytes_carried").c_str(), nullptr, 10);
      mr.error = json_scalar(*r, "error");
    }
    if (mr.result == "committed") {
      on = mr.to;
    }
    std::printf("  migration %d: host%s -> host%s at %5.1f%%  %s: frozen %.2f ms (freeze to "
                "commit), total %.2f ms, %llu bytes in flight carried%s%s\n",
                k, mr.from == "a" ? "A" : "B", mr.to == "a" ? "A" : "B", mr.at_percent,
                mr.result.c_str(), mr.frozen_ms, mr.total_ms,
                static_cast<unsigned long long>(mr.carried), mr.error.empty() ? "" : ": ",
                mr.error.c_str());
    std::fflush(stdout);
    reports.push_back(mr);
  }
  if (!curl_done) {
    int st = 0;
    auto deadline = Clock::now() + std::chrono::seconds(900);
    while (::waitpid(curl, &st, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        ::kill(curl, SIGKILL);
        ::waitpid(curl, &st, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    curl_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t_start).count();
  std::uint64_t got_size = 0;
  auto got_sha = sha256_file(out_path, &got_size);
  const long long rsts = (snmp(lab, "EstabResets") - rst0) + (snmp(lab, "OutRsts") - outrst0) +
                         (snmp(lab, "InErrs") - inerr0);
  int committed = 0;
  for (const auto& r : reports) {
    committed += r.result == "committed" ? 1 : 0;
  }
  const bool sha_ok = got_sha && *got_sha == *src_sha && got_size == src_size;
  // A userstack host agent must really have run without any capability.
  bool unpriv_ok = true;
  for (const auto& h : hosts) {
    unpriv_ok = unpriv_ok && (h.method != "userstack" || (h.cap_eff == "0000000000000000" &&
                                                          h.uid == std::to_string(kAgentUid)));
  }
  const bool ok = curl_status == 0 && sha_ok && rsts == 0 && unpriv_ok &&
                  committed == static_cast<int>(reports.size()) &&
                  static_cast<int>(reports.size()) == migrations;
  std::printf("\nrendr-demo report\n");
  if (method != "native") {
    std::printf("  method         %s\n", method.c_str());
  }
  for (const auto& h : method == "native" ? std::vector<HostAgent>{} : hosts) {
    std::printf("  host%s agent    %s, uid %s, effective capabilities %s%s\n",
                h.name == "a" ? "A" : "B", h.method.c_str(), h.uid.c_str(), h.cap_eff.c_str(),
                h.cap_eff == "0000000000000000" ? " (none)" : "");
  }
  std::printf("  migrations     %d of %d committed (hostA <-> hostB through rendr-agent)\n",
              committed, migrations);
  std::printf("  curl exit      %d\n", curl_status);
  std::printf("  bytes          %llu received of %llu served\n",
              static_cast<unsigned long long>(got_size), static_cast<unsigned long long>(src_size));
  std::printf("  sha256 source  %s\n", src_sha->c_str());
  std::printf("  sha256 curl    %s\n", got_sha ? got_sha->c_str() : got_sha.error().message().c_str());
  std::printf("  peer RSTs      %lld\n", rsts);
  std::printf("  elapsed        %.1f s (%.0f MiB/s)\n", secs,
              static_cast<double>(got_size) / 1048576.0 / secs);
  std::printf("  verdict        %s\n", ok ? "OK: nothing lost, nothing duplicated, no reset"
                                             : "FAILED");
  if (!ok) {
    std::fprintf(stderr, "--- agent a ---\n%s--- agent b ---\n%s--- gw ---\n%s",
                 stack.log("a").c_str(), stack.log("b").c_str(), stack.log("gw").c_str());
  }
  if (json) {
    JsonWriter j;
    j.begin_object();
    j.kv("ok", ok);
    if (method != "native") {
      j.kv("method", method);
      j.begin_array("hosts");
      for (const auto& h : hosts) {
        j.begin_object();
        j.kv("host", h.name);
        j.kv("method", h.method);
        j.kv("uid", h.uid);
        j.kv("cap_eff", h.cap_eff);
        j.end_object();
      }
      j.end_array();
    }
    j.kv("size_bytes", src_size);
    j.kv("received_bytes", got_size);
    j.kv("sha256_source", *src_sha);
    j.kv("sha256_received", got_sha ? *got_sha : std::string());
    j.kv("curl_exit", curl_status);
    j.kv("peer_rsts", static_cast<std::int64_t>(rsts));
    j.kv("elapsed_s", secs);
    j.begin_array("migrations");
    for (const auto& r : reports) {
      j.raw("", r.json.empty() ? "null" : r.json);
    }
    j.end_array();
    j.end_object();
    std::printf("%s\n", j.str().c_str());
  }
  if (keep) {
    std::printf("rendr-demo: download kept at %s\n", out_path.c_str());
  } else {
    (void)lab::shell("rm -rf '" + work + "'");
  }
  return ok ? 0 : 1;
}
