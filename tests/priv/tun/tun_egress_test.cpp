// SPDX-License-Identifier: Apache-2.0
// rendr-tun decisions, refusals, status and load (docs/tun-ingress.md), real kernel, stock
// programs, in the tun lab (tun_lab.hpp): a destination the egress denies and one where
// nothing listens reach curl as a quick reset of that one flow (while another flow goes on)
// with the reason counted on both sides, and a redirect; the ingress config's deny with a
// listener key on both sides (and ICMP / fragments
// counted, not carried); a 32 MiB `curl -T` upload;
// 200 concurrent flows; the status socket's flow entries.
#include "tun_lab.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <fstream>
#include <string>

using namespace rendr::test;

namespace {

struct CurlRun {
  int rc = -1;
  std::string out;
  long long ms = 0;
};

CurlRun curl(const Netns& ns, const std::string& args) {
  CurlRun r;
  const auto t0 = std::chrono::steady_clock::now();
  r.rc = ns.sh("curl -sS --max-time 20 " + args + " 2>&1", &r.out);
  r.ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               t0)
             .count();
  return r;
}

// A reset as curl reports it: exit 56 (recv failure: connection reset), 55 (send failure: the
// reset came before curl wrote its request; one clean-clone CI run) or 7 (couldn't connect);
// never a timeout (28) or an empty reply (52, a FIN).
bool is_reset(const CurlRun& r) { return r.rc == 56 || r.rc == 55 || r.rc == 7; }

// wait_status polls a status socket until its document contains |what| (or |ms| passed).
std::string wait_status(const std::string& path, const std::string& what, int ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  std::string s;
  while ((s = read_status(path)).find(what) == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    ::poll(nullptr, 0, 20);
  }
  return s;
}

}  // namespace

TEST_CASE("tun refusals: a denied destination and a missing origin reset only that flow, fast",
          "[.netns][tun][netns]") {
  TunLabOptions o;
  o.blob = 8U << 20;
  o.origin_addrs = {"198.18.0.66"};
  o.egress_rules = {"--deny", "198.18.0.66/32", "--redirect",
                    "198.18.0.0/24:9999=198.18.0.10:8080", "--allow", "198.18.0.0/24"};
  TunLab lab(o);
  // A long download runs meanwhile (rate-limited to ~4 s): other flows keep running.
  Child slow;
  slow.pid = lab.app.spawn({"curl", "-sS", "--max-time", "60", "--limit-rate", "2M", "-o",
                            lab.dir.path + "/slow", "http://198.18.0.10:8080/blob"});
  const std::string before = wait_status(lab.ingress_status(), "\"state\":\"relaying\"", 10000);
  INFO("before: " << before);
  REQUIRE(before.find("\"state\":\"relaying\"") != std::string::npos);

  const auto denied = curl(lab.app, "-o /dev/null http://198.18.0.66:8080/blob");
  INFO("denied: rc " << denied.rc << " " << denied.ms << " ms: " << denied.out);
  CHECK(is_reset(denied));
  CHECK(denied.ms < 3000);

  const auto missing = curl(lab.app, "-o /dev/null http://198.18.0.10:8081/");
  INFO("missing: rc " << missing.rc << " " << missing.ms << " ms: " << missing.out);
  CHECK(is_reset(missing));
  CHECK(missing.ms < 3000);

  // A redirect: port 9999 lands at the origin's 8080.
  const auto redirected =
      curl(lab.app, "-o " + lab.dir.path + "/redir http://198.18.0.10:9999/blob");
  INFO("redirected: " << redirected.out);
  CHECK(redirected.rc == 0);
  CHECK(read_file(lab.dir.path + "/redir").size() == lab.blob.size());

  const std::string in = read_status(lab.ingress_status());
  const std::string eg = read_status(lab.egress_status());
  INFO("ingress: " << in);
  INFO("egress: " << eg);
  CHECK(status_counter(in, "reset_flow_denied") == 1);
  CHECK(status_counter(in, "reset_missing_egress") == 1);
  CHECK(status_counter(eg, "refused_flow_denied") == 1);
  CHECK(status_counter(eg, "refused_missing_egress") == 1);
  CHECK(status_counter(eg, "redirected") == 1);
  // The slow flow is still relayed (an entry with bytes moving) and ends intact.
  CHECK(in.find("\"dst\":\"198.18.0.10:8080\"") != std::string::npos);
  CHECK(in.find("\"state\":\"relaying\"") != std::string::npos);
  CHECK(in.find("\"flow_id\"") != std::string::npos);
  CHECK(wait_exit(slow.pid, 60000) == 0);
  slow.pid = -1;
  const std::string got = read_file(lab.dir.path + "/slow");
  REQUIRE(got.size() == lab.blob.size());
  CHECK(std::equal(got.begin(), got.end(), reinterpret_cast<const char*>(lab.blob.data())));
}

TEST_CASE("tun config: the ingress's deny rule resets the flow before any engine flow, keyed",
          "[.netns][tun][netns]") {
  TunLabOptions o;
  o.ingress_config =
      "deny dst 198.18.0.77/32\n"
      "match dst 198.18.0.0/24 port 8080 -> peer 10.88.0.2:7000 peer 10.89.0.2:7000\n";
  o.keyed = true;  // and a listener key on both sides
  TunLab lab(o);
  const auto denied = curl(lab.app, "-o /dev/null http://198.18.0.77:8080/blob");
  INFO("rc " << denied.rc << ": " << denied.out);
  CHECK(is_reset(denied));
  const auto other_port = curl(lab.app, "-o /dev/null http://198.18.0.10:9999/");
  INFO("other port: rc " << other_port.rc << ": " << other_port.out);
  CHECK(is_reset(other_port));  // no rule matches: denied
  const auto ok = curl(lab.app, "-o " + lab.dir.path + "/got http://198.18.0.10:8080/blob");
  INFO("ok: " << ok.out);
  CHECK(ok.rc == 0);
  CHECK(read_file(lab.dir.path + "/got").size() == lab.blob.size());
  // ICMP and fragments routed into the TUN are identified and counted, not carried (ping gets
  // no answer: exit 1).
  CHECK(lab.app.sh("ping -n -c 2 -i 0.2 -W 1 198.18.0.10 >/dev/null 2>&1") == 1);
  CHECK(lab.app.sh("ping -n -c 1 -W 1 -s 3000 198.18.0.10 >/dev/null 2>&1") == 1);
  const std::string in = read_status(lab.ingress_status());
  const std::string eg = read_status(lab.egress_status());
  INFO(in);
  CHECK(status_counter(in, "rx_icmp") >= 2);
  CHECK(status_counter(in, "rx_fragments") >= 2);
  CHECK(status_counter(in, "reset_flow_denied") == 2);
  CHECK(status_counter(in, "flows_done") == 1);
  CHECK(status_counter(eg, "flows") == 1);  // the denied flows never reached the egress
}

TEST_CASE("tun: a 32 MiB curl -T upload arrives byte for byte", "[.netns][tun][netns]") {
  TunLab lab(1024);
  // The origin: HTTP PUT, answers with the body's length and SHA-256.
  const std::string server =
      "import hashlib, http.server\n"
      "class H(http.server.BaseHTTPRequestHandler):\n"
      "    def do_PUT(self):\n"
      "        n = int(self.headers['Content-Length'])\n"
      "        h = hashlib.sha256()\n"
      "        left = n\n"
      "        while left > 0:\n"
      "            d = self.rfile.read(min(left, 1 << 20))\n"
      "            if not d:\n"
      "                break\n"
      "            h.update(d)\n"
      "            left -= len(d)\n"
      "        body = ('%d %s' % (n - left, h.hexdigest())).encode()\n"
      "        self.send_response(200)\n"
      "        self.send_header('Content-Length', str(len(body)))\n"
      "        self.end_headers()\n"
      "        self.wfile.write(body)\n"
      "s = http.server.ThreadingHTTPServer(('198.18.0.10', 9092), H)\n"
      "print('listening', flush=True)\n"
      "s.serve_forever()\n";
  std::ofstream(lab.dir.path + "/put.py") << server;
  Child put;
  put.pid = lab.start(lab.egress, "put", {"python3", "-u", lab.dir.path + "/put.py"}, "listening");
  const std::size_t size = 32U << 20;
  {
    std::vector<std::byte> up(size);
    Pattern(77).fill(0, up);
    std::ofstream f(lab.dir.path + "/up", std::ios::binary);
    f.write(reinterpret_cast<const char*>(up.data()), static_cast<std::streamsize>(up.size()));
  }
  std::string want;
  REQUIRE(lab.app.sh("sha256sum " + lab.dir.path + "/up | cut -d' ' -f1", &want) == 0);
  const auto r = curl(lab.app, "--max-time 120 -T " + lab.dir.path +
                                   "/up http://198.18.0.10:9092/up");
  INFO("curl: rc " << r.rc << ": " << r.out);
  CHECK(r.rc == 0);
  CHECK(r.out.find(std::to_string(size) + " " + want.substr(0, 64)) == 0);
}

TEST_CASE("tun: 200 concurrent flows through one rendr-tun are all intact",
          "[.netns][tun][netns]") {
  TunLab lab(1024);
  // The origin: for each connection, read to EOF, answer with length and SHA-256, close.
  const std::string server =
      "import hashlib, socketserver\n"
      "class H(socketserver.BaseRequestHandler):\n"
      "    def handle(self):\n"
      "        h = hashlib.sha256(); n = 0\n"
      "        while True:\n"
      "            d = self.request.recv(65536)\n"
      "            if not d:\n"
      "                break\n"
      "            h.update(d); n += len(d)\n"
      "        self.request.sendall(('%d %s' % (n, h.hexdigest())).encode())\n"
      "class S(socketserver.ThreadingTCPServer):\n"
      "    request_queue_size = 512\n"
      "    daemon_threads = True\n"
      "    allow_reuse_address = True\n"
      "s = S(('198.18.0.10', 9093), H)\n"
      "print('listening', flush=True)\n"
      "s.serve_forever()\n";
  std::ofstream(lab.dir.path + "/many_server.py") << server;
  Child srv;
  srv.pid = lab.start(lab.egress, "many", {"python3", "-u", lab.dir.path + "/many_server.py"},
                      "listening");
  // The client: 200 sockets connected first (all open at once), then each sends its own
  // 64 KiB, half-closes and checks the answer.
  const std::string client =
      "import hashlib, socket, threading\n"
      "N = 200\n"
      "socks = [socket.create_connection(('198.18.0.10', 9093), timeout=30) for _ in range(N)]\n"
      "ok = [False] * N\n"
      "def run(i):\n"
      "    data = bytes([i % 251]) * (64 * 1024 + i)\n"
      "    s = socks[i]\n"
      "    s.sendall(data)\n"
      "    s.shutdown(socket.SHUT_WR)\n"
      "    got = b''\n"
      "    while True:\n"
      "        d = s.recv(4096)\n"
      "        if not d:\n"
      "            break\n"
      "        got += d\n"
      "    ok[i] = got == ('%d %s' % (len(data), hashlib.sha256(data).hexdigest())).encode()\n"
      "ts = [threading.Thread(target=run, args=(i,)) for i in range(N)]\n"
      "[t.start() for t in ts]\n"
      "[t.join() for t in ts]\n"
      "print('intact', sum(ok))\n";
  std::ofstream(lab.dir.path + "/many_client.py") << client;
  std::string out;
  const int rc = lab.app.sh("timeout 120 python3 " + lab.dir.path + "/many_client.py 2>&1", &out);
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("intact 200") != std::string::npos);
  // The client has its answers; the ingress's flow threads finish their closes meanwhile.
  const std::string in = wait_status(lab.ingress_status(), "\"flows_done\":200", 10000);
  const std::string eg = read_status(lab.egress_status());
  INFO(in);
  INFO(eg);
  CHECK(status_counter(in, "flows") == 200);
  CHECK(status_counter(in, "flows_done") == 200);
  // One ingress address carries 200 flows (400 carriers): the egress's listener must not push
  // any out (its per-source limits of 128 waiting carriers did, 1 run in ~8).
  CHECK(status_counter(eg, "carriers_dropped") == 0);
  CHECK(status_counter(eg, "flows_evicted") == 0);
}
