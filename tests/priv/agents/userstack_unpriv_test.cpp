// SPDX-License-Identifier: Apache-2.0
// The userstack method with NO privilege (docs/userstack.md "Provisioning"): root provisions
// once (a TUN device `user U group G`, the VIP routed into it: GatewayLab::use_userstack), then
// the host agents run as uid 4242 under `setpriv --reuid 4242 --regid 4242 --clear-groups
// --inh-caps=-all --bounding-set=-all` (AgentStackOptions::unprivileged). /dev/net/tun is 0600
// root on this machine (Debian's udev makes it 0666), so each agent opens a private clone node
// owned by its user (--tun-clone), the way an operator without udev's rule would.
//
// Also the privilege matrix of the one capability probe (`rendrctl status --json`) under
// setpriv / unshare: every row asserts what the kernel really allowed and the reason code.
#include "lab/agent_stack.hpp"
#include "lab/gateway_lab.hpp"
#include "lab/lab_util.hpp"
#include "support/netns.hpp"

#include <rendr/common/json.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace rendr;

namespace {

constexpr int kUid = 4242;
const std::string kSetpriv = "setpriv --reuid 4242 --regid 4242 --clear-groups --inh-caps=-all "
                             "--bounding-set=-all ";

std::string sh_out(const std::string& ns, const std::string& cmd) {
  auto r = lab::output_in(ns, cmd + "; echo \"EXIT=$?\"");
  return r ? *r : "EXIT=-1 " + r.error().message();
}

int exit_of(const std::string& out) {
  auto p = out.rfind("EXIT=");
  return p == std::string::npos ? -1 : std::atoi(out.c_str() + p + 5);
}

// proc_field: "CapEff", "Uid", ... of /proc/<pid>/status, as written.
std::string proc_field(pid_t pid, const std::string& field) {
  std::string s = test::read_file("/proc/" + std::to_string(pid) + "/status");
  auto p = s.find("\n" + field + ":");
  if (p == std::string::npos) {
    return "missing";
  }
  p = s.find_first_not_of(" \t", p + field.size() + 2);
  return s.substr(p, s.find('\n', p) - p);
}

// cap_field reads |field| ("ok", "reason") of capability |cap| in a status JSON.
std::string cap_field(const std::string& json, const std::string& cap, const std::string& field) {
  auto p = json.find("\"" + cap + "\":{");
  return p == std::string::npos ? "absent" : json_scalar(json.substr(p), field);
}

off_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : 0;
}

}  // namespace

TEST_CASE("unprivileged userstack agents serve curl and move its download with nothing lost",
          "[.userstack_agent][userstack_agent][netns]") {
  auto g = lab::GatewayLab::create(test::unique_prefix("usu"));
  REQUIRE(g.ok());
  auto& lab = **g;
  for (auto h : {lab::Host::a, lab::Host::b}) {
    auto st = lab.use_userstack(h, "rtun0", kUid, kUid);
    INFO((st ? "" : st.error().message()));
    REQUIRE(st.ok());
  }
  lab::AgentStackOptions so;
  so.agent_bin = RENDR_AGENT_BIN;
  so.rendrctl_bin = RENDRCTL_BIN;
  const std::vector<std::string> us = {"--method", "userstack", "--tun", "rtun0",
                                       "--service-port", "http=8080"};
  so.agent_args = {{"a", us}, {"b", us}};
  so.unprivileged = {"a", "b"};
  auto s = lab::AgentStack::start(lab, so);
  INFO((s ? "" : s.error().message()));
  REQUIRE(s.ok());
  auto& stack = **s;

  // The agents really run as uid 4242 with no capability at all.
  for (const char* h : {"a", "b"}) {
    INFO("agent " << h);
    const pid_t pid = stack.pid(h);
    REQUIRE(pid > 0);
    CHECK(proc_field(pid, "Uid").rfind("4242\t4242\t4242\t4242", 0) == 0);
    CHECK(proc_field(pid, "CapEff") == "0000000000000000");
    CHECK(proc_field(pid, "CapPrm") == "0000000000000000");
    CHECK(proc_field(pid, "CapBnd") == "0000000000000000");
    auto st = lab::output_in(lab.ns(h), std::string(RENDRCTL_BIN) + " status --agent " +
                                            stack.sock(h) + " --json");
    REQUIRE(st.ok());
    INFO(*st);
    CHECK(json_scalar(*st, "method") == "userstack");
    CHECK(cap_field(*st, "tcp_repair", "ok") == "false");
    CHECK(cap_field(*st, "tcp_repair", "reason") == "EPERM");
    CHECK(cap_field(*st, "ebpf_sched_cls", "reason") == "EPERM");
    CHECK(cap_field(*st, "userstack", "ok") == "true");
    // The control socket serves root (above) and the agent's own user; another user is
    // refused by SO_PEERCRED even when it gets past the file mode (CAP_DAC_OVERRIDE here).
    const std::string status = std::string(RENDRCTL_BIN) + " status --agent " + stack.sock(h);
    const std::string own = sh_out(lab.ns(h), kSetpriv + status + " 2>&1");
    INFO(own);
    CHECK(exit_of(own) == 0);
    CHECK(own.find("userstack") != std::string::npos);
    const std::string other =
        sh_out(lab.ns(h), "setpriv --reuid 4343 --regid 4343 --clear-groups "
                          "--inh-caps=+dac_override --ambient-caps=+dac_override " + status +
                              " 2>&1");
    INFO(other);
    // (The agent's "root-only" fail reply is usually lost: it closes the socket with the
    // request unread, and the client sees ECONNRESET.)
    CHECK(exit_of(other) != 0);
    CHECK(other.find("control socket") != std::string::npos);
    CHECK(other.find("\"method\"") == std::string::npos);
  }

  // rendr-fileserver (an unmodified embed server) on each host, on loopback: every VIP
  // connection reaches it through its agent.
  const std::string dir = stack.dir();
  constexpr std::uint64_t kMiB = 64;
  REQUIRE(lab::run_in(lab.ns("a"), "head -c " + std::to_string(kMiB << 20) +
                                       " /dev/urandom > " + dir + "/big").ok());
  auto sha = lab::output_in(lab.ns("a"), "sha256sum " + dir + "/big | cut -c1-64");
  REQUIRE(sha.ok());
  for (const char* h : {"a", "b"}) {
    const std::string lg = std::string("fs-") + h;
    REQUIRE(stack.spawn(h, {RENDR_FILESERVER_BIN, "--agent", stack.sock(h), "--service", "http",
                            "--root", dir, "--listen", "127.0.0.1:8080"},
                        lg).ok());
    REQUIRE(stack.wait_log(lg, "ready", 10000));
  }

  const std::string out = dir + "/got";
  const long long rst0 = test::peer_resets(test::Netns::open(lab.ns("peer")));
  std::string result;
  std::thread t([&] {
    result = sh_out(lab.ns("peer"), "curl -sS --fail --max-time 120 --limit-rate 24M -o " + out +
                                        " http://" + lab::GatewayLab::kVip4 + ":8080/big");
  });
  // Two moves between the unprivileged agents: a -> b at ~1/3, b -> a at ~2/3.
  std::vector<std::string> reports;
  std::string on = "a";
  for (std::uint64_t mark : {kMiB / 3, 2 * kMiB / 3}) {
    for (int i = 0; i < 2000 && static_cast<std::uint64_t>(file_size(out)) < (mark << 20); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const std::string to = on == "a" ? "b" : "a";
    auto r = stack.migrate(on, {}, to, true);
    reports.push_back(r ? *r : "error: " + r.error().message());
    if (r && json_scalar(*r, "result") == "committed") {
      on = to;
    }
  }
  t.join();
  INFO(result);
  for (const auto& r : reports) {
    INFO(r);
  }
  INFO("agent a:\n" << stack.log("a") << "\nagent b:\n" << stack.log("b"));
  REQUIRE(reports.size() == 2);
  CHECK(json_scalar(reports[0], "result") == "committed");
  CHECK(json_scalar(reports[1], "result") == "committed");
  CHECK(json_scalar(reports[0], "flows") != "0");
  REQUIRE(exit_of(result) == 0);
  auto got = lab::output_in(lab.ns("peer"), "sha256sum " + out + " | cut -c1-64");
  REQUIRE(got.ok());
  CHECK(got->substr(0, 64) == sha->substr(0, 64));
  CHECK(file_size(out) == static_cast<off_t>(kMiB << 20));
  CHECK(test::peer_resets(test::Netns::open(lab.ns("peer"))) == rst0);
}

namespace {

// Row: one probe run (`rendrctl status --json`) in the matrix namespace.
std::string probe_row(const test::Netns& ns, const std::string& prefix, const std::string& args) {
  std::string out;
  const int st = ns.sh(prefix + RENDRCTL_BIN + " status --json " + args + " 2>&1", &out);
  INFO(prefix << " rendrctl status --json " << args << " -> " << out);
  CHECK(st == 0);
  return out;
}

}  // namespace

TEST_CASE("the capability probe reports what each privilege level really can do and why",
          "[.userstack_agent][userstack_agent][netns]") {
  test::Netns ns = test::Netns::create("matrix");
  char tmpl[] = "/tmp/rendr-matrix-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  struct Cleanup {
    std::string d;
    ~Cleanup() { (void)lab::shell("rm -rf '" + d + "'"); }
  } cleanup{dir};
  // Root's one-time step: a device for uid 4242, one for root (`user 0`: without an owner
  // anyone may attach), and a clone node only uid 4242 can open (this host's /dev/net/tun is
  // 0600 root; see docs/userstack.md).
  ns.must("ip tuntap add dev mt0 mode tun user 4242 group 4242 && "
          "ip tuntap add dev mt1 mode tun user 0");
  const std::string node = dir + "/tun";
  REQUIRE(lab::shell("mknod -m 0600 " + node + " c 10 200 && chown 4242:4242 " + dir + " " +
                     node) == 0);
  const std::string clone = " --tun-clone " + node;

  SECTION("root: native") {
    const std::string r = probe_row(ns, "", "--tun-device mt0");
    INFO(r);
    CHECK(json_scalar(r, "method") == "native");
    CHECK(cap_field(r, "tcp_repair", "ok") == "true");
    CHECK(cap_field(r, "ebpf_sched_cls", "ok") == "true");
    CHECK(cap_field(r, "tun", "ok") == "true");
  }
  SECTION("uid 4242, no capabilities, its own device: userstack; TCP_REPAIR EPERM") {
    const std::string r = probe_row(ns, kSetpriv, "--tun-device mt0" + clone);
    INFO(r);
    CHECK(json_scalar(r, "euid") == "4242");
    CHECK(json_scalar(r, "method") == "userstack");
    CHECK(cap_field(r, "tcp_repair", "reason") == "EPERM");
    CHECK(cap_field(r, "ebpf_sched_cls", "ok") == "false");
    CHECK(cap_field(r, "netns", "reason") == "EPERM");
    CHECK(cap_field(r, "tun", "ok") == "true");
    CHECK(cap_field(r, "userstack", "ok") == "true");
  }
  SECTION("uid 4242, no capabilities, root's device: not_owner, engine only") {
    const std::string r = probe_row(ns, kSetpriv, "--tun-device mt1" + clone);
    INFO(r);
    CHECK(json_scalar(r, "method") == "engine");
    CHECK(cap_field(r, "tun", "reason") == "not_owner");
    CHECK(cap_field(r, "userstack", "reason") == "not_owner");
  }
  SECTION("uid 4242, no capabilities, the host's clone node") {
    struct stat sb {};
    REQUIRE(::stat("/dev/net/tun", &sb) == 0);
    const bool world = (sb.st_mode & 0006) == 0006;
    const std::string r = probe_row(ns, kSetpriv, "--tun-device mt0");
    INFO(r << " /dev/net/tun mode " << std::oct << (sb.st_mode & 07777));
    // 0666 (udev's default elsewhere): the owned device attaches; 0600 (here): node_denied.
    CHECK(cap_field(r, "tun", "ok") == (world ? "true" : "false"));
    CHECK(cap_field(r, "tun", "reason") == (world ? "" : "node_denied"));
    CHECK(json_scalar(r, "method") == (world ? "userstack" : "engine"));
  }
  SECTION("uid 4242, no capabilities, a missing device: no_device (never created)") {
    const std::string r = probe_row(ns, kSetpriv, "--tun-device nosuch0" + clone);
    INFO(r);
    CHECK(cap_field(r, "tun", "reason") == "no_device");
    CHECK(json_scalar(r, "method") == "engine");
    std::string links;
    ns.sh("ip -o link show nosuch0 2>&1", &links);
    CHECK(links.find("does not exist") != std::string::npos);
  }
  SECTION("uid 4242, no capabilities, a device another process holds: busy") {
    int fd = -1;
    {
      // The clone fd belongs to the netns it is opened in: open it inside.
      test::NetnsScope in(ns);
      fd = ::open(node.c_str(), O_RDWR | O_CLOEXEC);
      REQUIRE(fd >= 0);
      ifreq ifr{};
      ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
      std::strncpy(ifr.ifr_name, "mt0", IFNAMSIZ - 1);
      REQUIRE(::ioctl(fd, TUNSETIFF, &ifr) == 0);
    }
    const std::string r = probe_row(ns, kSetpriv, "--tun-device mt0" + clone);
    ::close(fd);
    INFO(r);
    CHECK(cap_field(r, "tun", "reason") == "busy");
    CHECK(json_scalar(r, "method") == "engine");
  }
  SECTION("uid 4242, no capabilities, no device named: cannot_create, userstack not_configured") {
    const std::string r = probe_row(ns, kSetpriv, clone.substr(1));
    INFO(r);
    CHECK(cap_field(r, "tun", "reason") == "cannot_create");
    CHECK(cap_field(r, "userstack", "reason") == "not_configured");
    CHECK(json_scalar(r, "method") == "engine");
  }
  SECTION("root without capabilities: TCP_REPAIR and BPF EPERM, root's device attaches") {
    const std::string r =
        probe_row(ns, "setpriv --inh-caps=-all --bounding-set=-all ", "--tun-device mt1");
    INFO(r);
    CHECK(json_scalar(r, "euid") == "0");
    CHECK(cap_field(r, "tcp_repair", "reason") == "EPERM");
    CHECK(cap_field(r, "ebpf_sched_cls", "reason") == "EPERM");
    CHECK(cap_field(r, "tun", "ok") == "true");
    CHECK(json_scalar(r, "method") == "userstack");
  }
  SECTION("uid 4242 in its own user and network namespace: TCP_REPAIR there, no BPF") {
    // CAP_NET_ADMIN over its own netns is enough for TCP_REPAIR and for creating a TUN there;
    // BPF programs need the initial namespace's CAP_BPF. Such a namespace reaches nothing
    // outside without a helper (slirp4netns), so it is not a host method.
    const std::string r = probe_row(ns, kSetpriv + "unshare -Urn ", clone.substr(1));
    INFO(r);
    CHECK(cap_field(r, "tcp_repair", "ok") == "true");
    CHECK(cap_field(r, "ebpf_sched_cls", "reason") == "EPERM");
    CHECK(cap_field(r, "tun", "ok") == "true");
    CHECK(json_scalar(r, "method") == "engine");
  }
}
