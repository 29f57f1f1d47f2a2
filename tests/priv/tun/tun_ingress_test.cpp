// SPDX-License-Identifier: Apache-2.0
// rendr-tun end to end (docs/tun-ingress.md), real kernel, stock programs, in the tun lab
// (tun_lab.hpp): netns "app" has a TUN rtun0 (198.18.0.0/24 routed into it) with `rendr-tun
// ingress` on it and runs curl; netns "egress" runs `rendr-tun egress` and the origin,
// python3's http.server on 198.18.0.10 (a local address there). curl's TCP flow is
// terminated in lwIP, carried over an engine flow (tcp over a veth) with its L3 identity, and
// landed at the origin by the egress.
#include "tun_lab.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

using namespace rendr::test;

TEST_CASE("tun: stock curl downloads through rendr-tun ingress and egress, byte for byte",
          "[.netns][tun][netns]") {
  TunLab lab(8U << 20);
  // Stock curl in the app netns: its connection to 198.18.0.10:8080 enters the TUN.
  std::string out;
  const int rc = lab.app.sh("curl -sS --max-time 60 -o " + lab.dir.path +
                                "/got http://198.18.0.10:8080/blob 2>&1",
                            &out);
  INFO("curl: " << out);
  REQUIRE(rc == 0);
  std::ifstream g(lab.dir.path + "/got", std::ios::binary);
  std::vector<char> got((std::istreambuf_iterator<char>(g)), std::istreambuf_iterator<char>());
  REQUIRE(got.size() == lab.blob.size());
  CHECK(std::equal(got.begin(), got.end(), reinterpret_cast<const char*>(lab.blob.data())));
}

TEST_CASE("tun: a curl download survives its active engine path dropped mid-transfer",
          "[.netns][tun][netns]") {
  TunLab lab(64U << 20);
  // curl writes the body into a FIFO this test reads: the transfer runs at the test's pace, so
  // the drop lands mid-transfer (the rest must cross the other path).
  const int body = open_fifo(lab.dir.path + "/body");
  lab.fifos.push_back(body);
  Child curl;
  curl.pid = lab.app.spawn({"curl", "-sS", "--max-time", "120", "-o", lab.dir.path + "/body",
                            "http://198.18.0.10:8080/blob"});
  int dropped = 0;
  const std::vector<char> got = read_dropping_path(lab, body, 4U << 20, dropped);
  CHECK(dropped > 0);
  check_drop_counted(lab, dropped);
  CHECK(wait_exit(curl.pid, 60000) == 0);
  curl.pid = -1;
  REQUIRE(got.size() == lab.blob.size());
  CHECK(std::equal(got.begin(), got.end(), reinterpret_cast<const char*>(lab.blob.data())));
}

TEST_CASE("tun: a half-closed request gets its whole response through rendr-tun",
          "[.netns][tun][netns]") {
  TunLab lab(1024);
  // The origin reads the request to EOF (the client's FIN, carried as shutdown_write), then
  // answers with its length and SHA-256 and closes.
  const std::string origin =
      "import socket, hashlib\n"
      "s = socket.socket()\n"
      "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
      "s.bind(('198.18.0.10', 9090))\n"
      "s.listen()\n"
      "print('listening', flush=True)\n"
      "c, _ = s.accept()\n"
      "h = hashlib.sha256()\n"
      "n = 0\n"
      "while True:\n"
      "    d = c.recv(65536)\n"
      "    if not d:\n"
      "        break\n"
      "    h.update(d)\n"
      "    n += len(d)\n"
      "c.sendall(('%d %s\\n' % (n, h.hexdigest())).encode() * 1000)\n"
      "c.close()\n";
  Child server;
  server.pid = lab.start(lab.egress, "halfclose", {"python3", "-u", "-c", origin}, "listening");
  // The client in the app netns: 16 MiB up, shutdown(SHUT_WR), then the answer to EOF.
  const std::string client =
      "import socket, hashlib\n"
      "data = bytes(range(256)) * (64 * 1024)\n"
      "c = socket.create_connection(('198.18.0.10', 9090))\n"
      "c.sendall(data)\n"
      "c.shutdown(socket.SHUT_WR)\n"
      "got = b''\n"
      "while True:\n"
      "    d = c.recv(65536)\n"
      "    if not d:\n"
      "        break\n"
      "    got += d\n"
      "want = ('%d %s\\n' % (len(data), hashlib.sha256(data).hexdigest())).encode() * 1000\n"
      "print('match' if got == want else 'mismatch %d' % len(got))\n";
  std::ofstream(lab.dir.path + "/client.py") << client;
  std::string out;
  const int rc = lab.app.sh("timeout 60 python3 " + lab.dir.path + "/client.py 2>&1", &out);
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("match") == 0);
}
