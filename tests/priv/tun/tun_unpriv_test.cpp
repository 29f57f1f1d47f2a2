// SPDX-License-Identifier: Apache-2.0
// rendr-tun ingress with no privilege at all (docs/tun-ingress.md "Running unprivileged"), in
// the tun lab (tun_lab.hpp): root provisions once - the TUN device for uid 4242 (`ip tuntap
// add ... user 4242 group 4242`, the routes into it) and a private TUN clone node (char
// 10:200) only uid 4242 may open, because this host's /dev/net/tun is 0600 root - then the
// ingress runs as uid 4242 under `setpriv --reuid 4242 --regid 4242 --clear-groups
// --inh-caps=-all --bounding-set=-all` (as AgentStackOptions::unprivileged runs agents). A
// stock curl download and a UDP exchange go through it; the process has no capability.
#include "tun_lab.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <string>
#include <vector>

using namespace rendr::test;

namespace {

const std::vector<std::string> kSetpriv = {
    "/usr/bin/setpriv",   "--reuid", "4242", "--regid", "4242", "--clear-groups", "--inh-caps=-all",
    "--bounding-set=-all"};

// proc_field: "CapEff", "Uid", ... of /proc/<pid>/status, as written.
std::string proc_field(pid_t pid, const std::string& field) {
  const std::string s = "\n" + read_file("/proc/" + std::to_string(pid) + "/status");
  auto p = s.find("\n" + field + ":");
  if (p == std::string::npos) {
    return "missing";
  }
  p = s.find_first_not_of(" \t", p + field.size() + 2);
  return s.substr(p, s.find('\n', p) - p);
}

std::string sha256_of(const Netns& ns, const std::string& path) {
  std::string out;
  REQUIRE(ns.sh("sha256sum " + path, &out) == 0);
  return out.substr(0, 64);
}

}  // namespace

TEST_CASE("tun: rendr-tun ingress runs with no capabilities on a TUN provisioned for its uid",
          "[.netns][tun][netns]") {
  TunLab lab(4U << 20);
  // Root's one-time step: the lab's ingress (root) goes, rtun0 is provisioned for uid 4242.
  ::kill(lab.in.pid, SIGKILL);
  int st = 0;
  ::waitpid(lab.in.pid, &st, 0);
  lab.in.pid = -1;
  lab.app.must(
      "ip link del rtun0 && ip tuntap add dev rtun0 mode tun user 4242 group 4242 && "
      "ip link set rtun0 up && ip addr add 10.77.0.1/32 dev rtun0 && "
      "ip route add 198.18.0.0/24 dev rtun0 src 10.77.0.1");
  TempDir own;  // uid 4242's: its clone node and status socket
  const std::string node = own.path + "/tun";
  lab.app.must("chown 4242:4242 " + own.path + " && mknod -m 0600 " + node +
               " c 10 200 && chown 4242:4242 " + node);
  std::vector<std::string> argv = kSetpriv;
  argv.insert(argv.end(), {RENDR_TUN_BIN, "ingress", "--tun", "rtun0", "--peer", "10.88.0.2:7000",
                           "--peer", "10.89.0.2:7000", "--status-socket", own.path + "/in.sock",
                           "--udp-idle-timeout", "400"});

  // Without the private clone node the unprivileged ingress stops at once, saying why (where
  // /dev/net/tun is 0600 root, as on this project's hosts; udev's 0666 would let it attach).
  struct stat tun_st {};
  REQUIRE(::stat("/dev/net/tun", &tun_st) == 0);
  if ((tun_st.st_mode & (S_IROTH | S_IWOTH)) != (S_IROTH | S_IWOTH)) {
    std::string refused;
    std::string cmd;
    for (const auto& a : argv) {
      cmd += a + " ";
    }
    CHECK(lab.app.sh(cmd + "2>&1", &refused) == 1);
    INFO(refused);
    CHECK(refused.find("/dev/net/tun not accessible") != std::string::npos);
  } else {
    WARN("/dev/net/tun is world read-write here: the refusal without --tun-clone is not checked");
  }

  argv.insert(argv.end(), {"--tun-clone", node});
  Child in;
  in.pid = lab.start(lab.app, "ingress-unpriv", argv, "ready");
  // The running rendr-tun (setpriv exec'd it: same pid) is uid 4242 with no capability.
  CHECK(proc_field(in.pid, "Name") == "rendr-tun");
  CHECK(proc_field(in.pid, "Uid").rfind("4242\t4242\t4242\t4242", 0) == 0);
  CHECK(proc_field(in.pid, "CapEff") == "0000000000000000");
  CHECK(proc_field(in.pid, "CapPrm") == "0000000000000000");
  CHECK(proc_field(in.pid, "CapBnd") == "0000000000000000");

  // Stock curl through it: the SHA-256 of what arrived is the origin's.
  std::string out;
  const int rc = lab.app.sh(
      "curl -sS --max-time 60 -o " + lab.dir.path + "/got http://198.18.0.10:8080/blob 2>&1", &out);
  INFO("curl: " << out);
  REQUIRE(rc == 0);
  CHECK(sha256_of(lab.app, lab.dir.path + "/got") == sha256_of(lab.app, lab.dir.path + "/blob"));

  // UDP too: an echo origin, 20 datagrams each way; the flow is reaped once idle (400 ms).
  Child echo;
  echo.pid = lab.start(lab.egress, "echo",
                       {"python3", "-u", "-c",
                        "import socket\n"
                        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                        "s.bind(('198.18.0.10', 5300))\n"
                        "print('listening', flush=True)\n"
                        "while True:\n"
                        "    d, a = s.recvfrom(65535)\n"
                        "    s.sendto(d, a)\n"},
                       "listening");
  const auto exchange = [&lab] {
    std::string udp;
    lab.app.sh(
        "timeout 30 python3 -c \"\n"
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.bind(('10.77.0.1', 40123))\n"  // the same 5-tuple both times (own netns)
        "s.connect(('198.18.0.10', 5300))\n"
        "s.settimeout(10)\n"
        "ok = 0\n"
        "for i in range(20):\n"
        "    p = bytes([i]) * (i * 50)\n"
        "    s.send(p)\n"
        "    ok += s.recv(65535) == p\n"
        "print('echoed', ok)\n"
        "\" 2>&1",
        &udp);
    return udp;
  };
  const std::string udp = exchange();
  INFO(udp);
  CHECK(udp.find("echoed 20") != std::string::npos);
  std::string s;
  for (int i = 0; i < 100 && status_counter(s, "udp_idle_closed") == 0; ++i) {
    ::poll(nullptr, 0, 50);
    s = read_status(own.path + "/in.sock");
  }
  INFO(s);
  CHECK(status_counter(s, "udp_idle_closed") == 1);
  CHECK(status_counter(s, "udp_datagrams_down") == 20);
  // The same 5-tuple again after the reap: a new flow carries it.
  const std::string again = exchange();
  INFO(again);
  CHECK(again.find("echoed 20") != std::string::npos);
  for (int i = 0; i < 100 && status_counter(s, "udp_datagrams_down") < 40; ++i) {
    ::poll(nullptr, 0, 50);  // counted just after the reply went into the TUN
    s = read_status(own.path + "/in.sock");
  }
  CHECK(status_counter(s, "udp_flows") == 2);
  CHECK(status_counter(s, "udp_datagrams_down") == 40);
  CHECK(status_counter(s, "flows_done") >= 1);  // curl's
}
