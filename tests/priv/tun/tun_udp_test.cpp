// SPDX-License-Identifier: Apache-2.0
// UDP through rendr-tun (docs/tun-ingress.md "UDP"), real kernel, stock programs, in the tun
// lab (tun_lab.hpp): a python3 UDP echo server on 198.18.0.10:5300 in the egress netns is the
// origin; python3 clients in the app netns send datagrams through the TUN. Each 5-tuple rides
// an engine packet flow with its L3 identity; the egress relays it through a UDP socket and
// the replies come back into the TUN from the original destination.
#include "tun_lab.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

using namespace rendr::test;

namespace {

// The origin: echoes every datagram to its sender, on argv[1] (an address), port 5300.
const char* const kEcho =
    "import socket, sys\n"
    "a = sys.argv[1]\n"
    "s = socket.socket(socket.AF_INET6 if ':' in a else socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)\n"
    "s.bind((a, 5300))\n"
    "print('listening', flush=True)\n"
    "while True:\n"
    "    d, a = s.recvfrom(65535)\n"
    "    s.sendto(d, a)\n";

// The app-side client: argv = dst flows count sizes pause_ms [timeout_s]. Each flow is its own
// connected socket (its own 5-tuple) on its own thread; each sends |count| datagrams one at a time
// (payload: flow, index and a pattern, sizes cycling through |sizes|) and checks that the echo
// is the same datagram, byte for byte. Prints "ok <i>" per echo of flow 0, then
// "done <echoed> <bad>" and exits 0 only when every echo came back intact.
const char* const kClient =
    "import socket, sys, threading, errno\n"
    "dst, flows, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\n"
    "sizes = [int(x) for x in sys.argv[4].split(':')]\n"
    "pause = float(sys.argv[5]) / 1000.0\n"
    "wait = float(sys.argv[6]) if len(sys.argv) > 6 else 20.0\n"
    "res = {'echoed': 0, 'bad': 0, 'err': ''}\n"
    "lock = threading.Lock()\n"
    "go = threading.Barrier(flows)\n"
    "def payload(f, i):\n"
    "    n = sizes[(i + f) % len(sizes)]\n"
    "    head = b'%04d:%05d:' % (f, i)\n"
    "    body = bytes((f * 7 + i + k) & 0xff for k in range(max(0, n - len(head))))\n"
    "    return (head + body)[:n]\n"
    "def run(f):\n"
    "    fam = socket.AF_INET6 if ':' in dst else socket.AF_INET\n"
    "    s = socket.socket(fam, socket.SOCK_DGRAM)\n"
    "    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)\n"
    "    s.connect((dst, 5300))\n"
    "    s.settimeout(wait)\n"
    "    go.wait()\n"
    "    for i in range(count):\n"
    "        p = payload(f, i)\n"
    "        try:\n"
    "            s.send(p)\n"
    "            got = s.recv(65535)\n"
    "        except OSError as e:\n"
    "            with lock:\n"
    "                res['bad'] += 1\n"
    "                res['err'] = '%s' % (errno.errorcode.get(e.errno, e),)\n"
    "            return\n"
    "        with lock:\n"
    "            if got == p:\n"
    "                res['echoed'] += 1\n"
    "            else:\n"
    "                res['bad'] += 1\n"
    "        if f == 0:\n"
    "            print('ok %d' % i, flush=True)\n"
    "        if pause:\n"
    "            threading.Event().wait(pause)\n"
    "ts = [threading.Thread(target=run, args=(f,)) for f in range(flows)]\n"
    "[t.start() for t in ts]\n"
    "[t.join() for t in ts]\n"
    "print('done %d %d %s' % (res['echoed'], res['bad'], res['err']), flush=True)\n"
    "sys.exit(0 if res['bad'] == 0 and res['echoed'] == flows * count else 1)\n";

struct UdpLab {
  TunLab lab;
  Child echo;
  explicit UdpLab(const TunLabOptions& o) : lab(o) {
    std::ofstream(lab.dir.path + "/echo.py") << kEcho;
    std::ofstream(lab.dir.path + "/client.py") << kClient;
    echo.pid = lab.start(lab.egress, "echo",
                         {"python3", "-u", lab.dir.path + "/echo.py", "198.18.0.10"}, "listening");
  }
  // client runs the client to its end; returns its exit status, |out| its last line.
  int client(const std::string& dst, int flows, int count, const std::string& sizes, int pause_ms,
             std::string& out, int timeout_s = 20) {
    const std::string log = lab.dir.path + "/client.log";
    return lab.app.sh("timeout 60 python3 -u " + lab.dir.path + "/client.py " + dst + " " +
                          std::to_string(flows) + " " + std::to_string(count) + " " + sizes + " " +
                          std::to_string(pause_ms) + " " + std::to_string(timeout_s) + " > " + log +
                          " 2>&1; rc=$?; tail -n 3 " + log + "; exit $rc",
                      &out);
  }
};

TunLabOptions default_lab() {
  return TunLab::blob_only(1024);
}

// status_when: the status document once counter |name| reached |want| (or after 5 s; the
// caller's checks then fail and show it). rendr-tun counts a datagram just after it moved it,
// so a client can finish a moment before its last count.
std::string status_when(const std::string& path, const std::string& name, std::uint64_t want) {
  std::string s;
  for (int i = 0; i < 100; ++i) {
    s = read_status(path);
    if (status_counter(s, name) >= want) {
      break;
    }
    ::poll(nullptr, 0, 50);
  }
  return s;
}

}  // namespace

TEST_CASE("tun udp: datagrams of varied sizes come back intact and oversize ones are dropped",
          "[.netns][tun][netns]") {
  UdpLab u(default_lab());
  // Datagrams up to 30 000 bytes travel unfragmented: the TUN's MTU is raised for them.
  u.lab.app.must("ip link set rtun0 mtu 65000");
  std::string out;
  const int rc =
      u.client("198.18.0.10", 1, 200, "0:1:17:100:512:1200:1472:4000:9000:30000", 0, out);
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("done 200 0") != std::string::npos);
  // Over the engine flow's packet size (32 KiB): counted and dropped at the ingress, no echo.
  std::string big;
  const int brc = u.client("198.18.0.10", 1, 1, "40000", 0, big, 2);
  INFO(big);
  CHECK(brc != 0);
  CHECK(big.find("done 0 1 timed out") != std::string::npos);
  const std::string in = status_when(u.lab.ingress_status(), "udp_datagrams_down", 200);
  const std::string eg = status_when(u.lab.egress_status(), "udp_datagrams_up", 200);
  INFO("ingress: " << in << "\negress: " << eg);
  CHECK(status_counter(in, "udp_dropped_oversize") == 1);
  CHECK(status_counter(in, "udp_datagrams_up") == 200);
  CHECK(status_counter(in, "udp_datagrams_down") == 200);
  CHECK(status_counter(eg, "udp_datagrams_up") == 200);
  CHECK(status_counter(in, "udp_flows") == 2);
}

TEST_CASE("tun udp: a destination the egress or the ingress denies is refused with an ICMP error",
          "[.netns][tun][netns]") {
  TunLabOptions o = default_lab();
  o.origin_addrs = {"198.18.0.66"};
  o.egress_rules = {"--deny", "198.18.0.66/32", "--allow", "198.18.0.0/24"};
  // The ingress's own rule for .67: refused locally, no engine flow dialled.
  o.ingress_config =
      "deny dst 198.18.0.67/32\n"
      "match any -> peer 10.88.0.2:7000 peer 10.89.0.2:7000\n";
  UdpLab u(o);
  // The app's connected socket reads the refusal (ICMP admin-prohibited: EHOSTUNREACH).
  std::string denied;
  const int drc = u.client("198.18.0.66", 1, 1, "64", 0, denied);
  INFO("denied: " << denied);
  CHECK(drc != 0);
  CHECK(denied.find("done 0 1 EHOSTUNREACH") != std::string::npos);
  std::string local;
  CHECK(u.client("198.18.0.67", 1, 1, "64", 0, local) != 0);
  INFO("ingress-denied: " << local);
  CHECK(local.find("done 0 1 EHOSTUNREACH") != std::string::npos);
  // Another destination is carried meanwhile.
  std::string ok;
  CHECK(u.client("198.18.0.10", 1, 20, "64:1000", 0, ok) == 0);
  INFO("allowed: " << ok);
  CHECK(ok.find("done 20 0") != std::string::npos);
  const std::string in = status_when(u.lab.ingress_status(), "udp_icmp_sent", 2);
  const std::string eg = status_when(u.lab.egress_status(), "udp_datagrams_up", 20);
  INFO("ingress: " << in << "\negress: " << eg);
  CHECK(status_counter(in, "udp_refused_flow_denied") == 2);
  CHECK(status_counter(in, "udp_icmp_sent") >= 2);
  CHECK(status_counter(eg, "refused_flow_denied") == 1);  // .67 never reached the egress
  CHECK(status_counter(eg, "udp_flows") == 2);            // .66 and the allowed one
}

TEST_CASE("tun udp: 50 concurrent flows each get every echo back intact", "[.netns][tun][netns]") {
  UdpLab u(default_lab());
  std::string out;
  const int rc = u.client("198.18.0.10", 50, 20, "1:300:1472:64:900", 0, out);
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("done 1000 0") != std::string::npos);
  const std::string in = status_when(u.lab.ingress_status(), "udp_datagrams_down", 1000);
  INFO(in);
  CHECK(status_counter(in, "udp_flows") == 50);
  CHECK(status_counter(in, "udp_datagrams_down") == 1000);
  CHECK(status_counter(in, "udp_dropped_table_full") == 0);
}

TEST_CASE("tun udp: the exchange goes on when its active engine path is dropped mid-stream",
          "[.netns][tun][netns]") {
  UdpLab u(default_lab());
  // The client prints a line per echo into a FIFO this test reads; after ~40 echoes the active
  // path is silently dropped (nftables, both ways): the engine replays on the other path.
  const int fifo = open_fifo(u.lab.dir.path + "/echoes");
  u.lab.fifos.push_back(fifo);
  Child client;
  client.pid = u.lab.app.spawn({"python3", "-u", u.lab.dir.path + "/client.py", "198.18.0.10", "1",
                                "300", "32:700:1400", "5"},
                               u.lab.dir.path + "/echoes");
  int dropped = 0;
  const std::vector<char> got = read_dropping_path(u.lab, fifo, 240, dropped);
  const std::string text(got.begin(), got.end());
  INFO(text.substr(text.size() > 400 ? text.size() - 400 : 0));
  CHECK(dropped > 0);
  check_drop_counted(u.lab, dropped);
  CHECK(wait_exit(client.pid, 30000) == 0);
  client.pid = -1;
  CHECK(text.find("done 300 0") != std::string::npos);
}

TEST_CASE("tun udp: IPv6 datagrams echo and a denied IPv6 destination reads EACCES",
          "[.netns][tun][netns]") {
  TunLabOptions o = default_lab();
  o.egress_rules = {"--deny",      "[fd98::66/128]", "--allow",
                    "[fd98::/64]", "--allow",        "198.18.0.0/24"};
  UdpLab u(o);
  // IPv6 inside the lab (the engine paths stay IPv4): fd98::/64 routed into the TUN, the
  // origin on fd98::10 in the egress netns.
  u.lab.app.must(
      "ip -6 addr add fd97::1/128 dev rtun0 nodad && "
      "ip -6 route add fd98::/64 dev rtun0 src fd97::1");
  u.lab.egress.must(
      "ip -6 addr add fd98::10/128 dev lo nodad && "
      "ip -6 addr add fd98::66/128 dev lo nodad");
  Child echo6;
  echo6.pid = u.lab.start(u.lab.egress, "echo6",
                          {"python3", "-u", u.lab.dir.path + "/echo.py", "fd98::10"}, "listening");
  std::string out;
  CHECK(u.client("fd98::10", 4, 25, "0:1:700:1452", 0, out) == 0);
  INFO(out);
  CHECK(out.find("done 100 0") != std::string::npos);
  // The ICMPv6 admin-prohibited the ingress injects reaches the connected socket as EACCES.
  std::string denied;
  CHECK(u.client("fd98::66", 1, 1, "64", 0, denied) != 0);
  INFO(denied);
  CHECK(denied.find("done 0 1 EACCES") != std::string::npos);
  const std::string in = status_when(u.lab.ingress_status(), "udp_datagrams_down", 100);
  INFO(in);
  CHECK(status_counter(in, "udp_datagrams_down") == 100);
  CHECK(status_counter(in, "udp_refused_flow_denied") == 1);
}

TEST_CASE("tun udp: a full flow table drops new 5-tuples and counts them", "[.netns][tun][netns]") {
  UdpLab u(default_lab());
  // The lab's ingress makes way for one with room for 2 UDP flows.
  ::kill(u.lab.in.pid, SIGKILL);
  int st = 0;
  ::waitpid(u.lab.in.pid, &st, 0);
  u.lab.in.pid = -1;
  const std::string sock = u.lab.dir.path + "/small.sock";
  Child in;
  in.pid = u.lab.start(u.lab.app, "ingress-small",
                       {RENDR_TUN_BIN, "ingress", "--tun", "rtun0", "--peer", "10.88.0.2:7000",
                        "--status-socket", sock, "--status-dir", u.lab.dir.path,
                        "--udp-max-flows", "2"},
                       "ready");
  // 3 flows at once, one datagram each: two are carried, the third finds the table full.
  std::string out;
  CHECK(u.client("198.18.0.10", 3, 1, "100", 0, out, 2) != 0);
  INFO(out);
  CHECK(out.find("done 2 1 timed out") != std::string::npos);
  const std::string s = status_when(sock, "udp_datagrams_down", 2);
  INFO(s);
  CHECK(status_counter(s, "udp_flows") == 2);
  CHECK(status_counter(s, "udp_dropped_table_full") >= 1);
  CHECK(status_counter(s, "udp_datagrams_down") == 2);
}

TEST_CASE("tun udp: rules that carry TCP to a destination refuse UDP to it",
          "[.netns][tun][netns]") {
  TunLabOptions o = default_lab();
  o.origin_addrs = {"198.18.0.66"};
  // Ingress: TCP to .10 carried, UDP to .10 denied locally; everything else to the egress,
  // which allows TCP only (so UDP to .66 is refused there).
  o.ingress_config =
      "match dst 198.18.0.10 proto tcp -> peer 10.88.0.2:7000 peer 10.89.0.2:7000\n"
      "deny  dst 198.18.0.10 proto udp\n"
      "match any -> peer 10.88.0.2:7000 peer 10.89.0.2:7000\n";
  o.egress_rules = {"--allow", "tcp:198.18.0.0/24"};
  UdpLab u(o);
  std::string out;
  const int rc = u.lab.app.sh("curl -sS --max-time 30 -o " + u.lab.dir.path +
                                  "/got http://198.18.0.10:8080/blob 2>&1",
                              &out);
  INFO("curl: " << out);
  CHECK(rc == 0);
  std::ifstream g(u.lab.dir.path + "/got", std::ios::binary);
  const std::vector<char> got((std::istreambuf_iterator<char>(g)),
                              std::istreambuf_iterator<char>());
  REQUIRE(got.size() == u.lab.blob.size());
  CHECK(std::equal(got.begin(), got.end(), reinterpret_cast<const char*>(u.lab.blob.data())));
  // UDP to the same destination: the ingress's 'proto udp' deny, an ICMP admin-prohibited.
  std::string local;
  CHECK(u.client("198.18.0.10", 1, 1, "64", 0, local) != 0);
  INFO("ingress-denied: " << local);
  CHECK(local.find("done 0 1 EHOSTUNREACH") != std::string::npos);
  // UDP to .66 reaches the egress, whose only rule is tcp:...: refused there.
  std::string remote;
  CHECK(u.client("198.18.0.66", 1, 1, "64", 0, remote) != 0);
  INFO("egress-denied: " << remote);
  CHECK(remote.find("done 0 1 EHOSTUNREACH") != std::string::npos);
  const std::string in = status_when(u.lab.ingress_status(), "udp_icmp_sent", 2);
  const std::string eg = read_status(u.lab.egress_status());
  INFO("ingress: " << in << "\negress: " << eg);
  CHECK(status_counter(in, "udp_refused_flow_denied") == 2);
  CHECK(status_counter(in, "flows_done") == 1);           // curl's TCP flow
  CHECK(status_counter(eg, "refused_flow_denied") == 1);  // .66; UDP to .10 never left
  CHECK(status_counter(eg, "udp_flows") == 1);
  CHECK(status_counter(eg, "flows_done") == 1);
}
