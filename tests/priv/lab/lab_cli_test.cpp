// SPDX-License-Identifier: Apache-2.0
// rendr-lab end to end: up/status/impair/down for the three topologies, and that a failed or
// interrupted `up` leaves no namespace behind.
#include "lab_test_util.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

using namespace rendr;
using namespace rendr::test;

namespace {

// FakeBin: a temp dir put first in PATH, holding scripts that shadow real tools.
struct FakeBin {
  FakeBin() {
    std::string tmpl = "/tmp/rendr-lab-fake-XXXXXX";
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
  }
  ~FakeBin() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  void script(const std::string& name, const std::string& body) const {
    const std::string p = dir + "/" + name;
    std::ofstream(p) << "#!/bin/sh\n" << body << "\n";
    REQUIRE(::chmod(p.c_str(), 0755) == 0);
  }
  [[nodiscard]] std::string env() const { return "env PATH=" + dir + ":\"$PATH\" "; }
  std::string dir;
};

}  // namespace

TEST_CASE("rendr-lab: gateway up, status, ping over the VIP, refuse a second up, down",
          "[.netns][lab][cli][gateway]") {
  const std::string p = unique_prefix("g");
  LabCleanup guard(p);

  auto up = rendr_lab("up gateway --json --prefix " + p);
  INFO(up.out);
  REQUIRE(up.rc == 0);
  CHECK(json_get(up.out, "d['lab'], d['up'], d['vip']['v4'], d['vip']['v6'], d['vip']['owner']") ==
        "gateway True 10.99.0.1 fd99::1 a");
  CHECK(json_get(up.out, "d['hosts']['a']['addr4'], d['hosts']['b']['addr6'], d['peer']['addr4']") ==
        "10.0.2.2 fd00:3::2 10.0.1.2");
  CHECK(json_get(up.out, "d['agents']['a']['addr4'], d['agents']['b']['addr4'], "
                         "d['agents']['gw']['addr4']") == "10.0.2.2 10.0.3.2 10.0.1.1");
  CHECK(json_get(up.out, "len(d['namespaces']), all(i['ifindex'] > 0 for n in d['namespaces'] "
                         "for i in n['interfaces'])") == "4 True");
  for (const char* r : {"peer", "gw", "a", "b"}) {
    CHECK(lab::netns_exists(p + "-" + r));
  }
  // Data plane: peer -> VIP (v4 + v6), host <-> host through gw (the agents' channel).
  CHECK(pings(p + "-peer", "10.99.0.1"));
  CHECK(pings(p + "-peer", "fd99::1"));
  CHECK(pings(p + "-a", "10.0.3.2"));
  CHECK(pings(p + "-b", "fd00:2::2"));
  CHECK(pings(p + "-a", "10.0.1.2"));

  auto st = rendr_lab("status --json --prefix " + p);
  INFO(st.out);
  REQUIRE(st.rc == 0);
  CHECK(json_get(st.out, "d['gateway']['vip']['owner'], d['multipath']") == "a None");

  auto again = rendr_lab("up gateway --prefix " + p);
  CHECK(again.rc == 1);
  CHECK_THAT(again.out, Catch::Contains("already exists"));

  auto down = rendr_lab("down --prefix " + p);
  INFO(down.out);
  REQUIRE(down.rc == 0);
  CHECK(lab::existing_lab_namespaces(p).empty());
  CHECK(rendr_lab("status --prefix " + p).rc == 1);
  CHECK(rendr_lab("down --prefix " + p).rc == 0);  // idempotent
}

TEST_CASE("rendr-lab: multipath up, ping every path, drop/loss/rate/clear per path, down",
          "[.netns][lab][cli][multipath]") {
  const std::string p = unique_prefix("m");
  LabCleanup guard(p);
  const std::string client = p + "-client";

  auto up = rendr_lab("up multipath --paths 3 --json --prefix " + p);
  INFO(up.out);
  REQUIRE(up.rc == 0);
  CHECK(json_get(up.out, "d['lab'], d['path_count'], len(d['paths'])") == "multipath 3 3");
  CHECK(json_get(up.out, "d['paths'][1]['client']['addr4'], d['paths'][1]['server']['addr6'], "
                         "d['paths'][1]['client']['if'], d['paths'][1]['server']['ifindex'] > 0") ==
        "10.10.2.1 fd10:2::2 p2 True");
  for (int i = 1; i <= 3; ++i) {
    CHECK(pings(client, "10.10." + std::to_string(i) + ".2"));
    CHECK(pings(client, "fd10:" + std::to_string(i) + "::2"));
  }

  // One lab for every step below (each leaves the paths as it found them): a Catch SECTION
  // would build the lab again for each.
  {  // silent drop on one path; the others keep working; undrop and clear restore it
    auto r = rendr_lab("impair --prefix " + p + " --path 2 --drop --json");
    INFO(r.out);
    REQUIRE(r.rc == 0);
    CHECK(json_get(r.out, "d['paths'][1]['impair']['client_to_server']['drop'], "
                          "d['paths'][1]['impair']['server_to_client']['drop'], "
                          "d['paths'][0]['impair']['client_to_server']['drop']") ==
          "True True False");
    CHECK_FALSE(pings(client, "10.10.2.2"));
    CHECK_FALSE(pings(client, "fd10:2::2"));
    CHECK_FALSE(pings(p + "-server", "10.10.2.1"));
    CHECK(pings(client, "10.10.1.2"));
    CHECK(pings(client, "10.10.3.2"));
    auto st = rendr_lab("status --json --prefix " + p);
    CHECK(std::stoll(json_get(st.out, "d['multipath']['paths'][1]['impair']['client_to_server']"
                                      "['dropped_packets']")) >= 2);
    REQUIRE(rendr_lab("impair --prefix " + p + " --path 2 --undrop").rc == 0);
    CHECK(pings(client, "10.10.2.2"));
    REQUIRE(rendr_lab("impair --prefix " + p + " --path 2 --dir s2c --drop").rc == 0);
    CHECK_FALSE(pings(client, "10.10.2.2"));  // requests arrive, replies vanish
    REQUIRE(rendr_lab("impair --prefix " + p + " --path 2 --clear").rc == 0);
    CHECK(pings(client, "10.10.2.2"));
  }

  {  // random loss is counted by the nft rule (a cheap check, not a statistical one)
    REQUIRE(rendr_lab("impair --prefix " + p + " --path 1 --dir c2s --loss 50").rc == 0);
    // 100 echo requests 2 ms apart; about half are dropped before they leave the client.
    (void)in_ns(client, "ping -c100 -i0.002 -W1 -q 10.10.1.2");
    auto st = rendr_lab("status --json --prefix " + p);
    INFO(st.out);
    const std::string c2s = "d['multipath']['paths'][0]['impair']['client_to_server']";
    CHECK(json_get(st.out, c2s + "['loss_percent']") == "50");
    long long dropped = std::stoll(json_get(st.out, c2s + "['dropped_packets']"));
    CHECK(dropped > 0);
    CHECK(dropped < 100);
    CHECK(json_get(st.out, "d['multipath']['paths'][0]['impair']['server_to_client']"
                           "['dropped_packets']") == "0");
    REQUIRE(rendr_lab("impair --prefix " + p + " --path 1 --loss 0").rc == 0);
    CHECK(in_ns(client, "ping -c20 -i0.002 -W1 -q 10.10.1.2") == 0);
  }

  {  // rate via tbf, on every path or one
    auto r = rendr_lab("impair --prefix " + p + " --path all --rate 20mbit --json");
    INFO(r.out);
    REQUIRE(r.rc == 0);
    CHECK(json_get(r.out, "[x['impair']['client_to_server']['rate_bps'] for x in d['paths']]") ==
          "[20000000, 20000000, 20000000]");
    CHECK(pings(client, "10.10.3.2"));
    REQUIRE(rendr_lab("impair --prefix " + p + " --path 3 --dir s2c --rate 0").rc == 0);
    auto st = rendr_lab("status --json --prefix " + p);
    CHECK(json_get(st.out, "[(x['impair']['client_to_server']['rate_bps'], "
                           "x['impair']['server_to_client']['rate_bps']) for x in "
                           "d['multipath']['paths']][2]") == "(20000000, 0)");
  }

  {  // usage errors: bad path, bad loss, no lab
    CHECK(rendr_lab("impair --prefix " + p + " --path 4 --drop").rc == 2);
    CHECK(rendr_lab("impair --prefix " + p + " --path 1 --loss 101").rc == 2);
    CHECK(rendr_lab("impair --prefix " + p + " --path 1 --rate fast").rc == 2);
    CHECK(rendr_lab("impair --prefix " + p + " --path 1").rc == 2);
    CHECK(rendr_lab("impair --prefix " + p + "x --path 1 --drop").rc == 1);
    CHECK(rendr_lab("up multipath --paths 9 --prefix " + p + "x").rc == 2);
    CHECK(lab::existing_lab_namespaces(p + "x").empty());
  }

  REQUIRE(rendr_lab("down --prefix " + p).rc == 0);
  CHECK(lab::existing_lab_namespaces(p).empty());
}

TEST_CASE("rendr-lab: a failed up removes everything it built", "[.netns][lab][cli][failure]") {
  FakeBin fake;
  fake.script("nft", "echo 'fake nft: injected failure' >&2; exit 1");
  fake.script("ping", "echo 'fake ping: injected failure' >&2; exit 1");

  const std::string p = unique_prefix("f");
  LabCleanup guard(p);
  // multipath fails at the nftables step (namespaces, veths and addresses already exist).
  auto m = sh(fake.env() + RENDR_LAB_BIN + " up multipath --paths 4 --prefix " + p);
  INFO(m.out);
  CHECK(m.rc == 1);
  CHECK_THAT(m.out, Catch::Contains("fake nft: injected failure"));
  CHECK(lab::existing_lab_namespaces(p).empty());
  // gateway fails at the hosts' ping check (after every namespace and veth exists).
  auto g = sh(fake.env() + RENDR_LAB_BIN + " up gateway --prefix " + p);
  INFO(g.out);
  CHECK(g.rc == 1);
  CHECK_THAT(g.out, Catch::Contains("fake ping: injected failure"));
  CHECK(lab::existing_lab_namespaces(p).empty());
}

TEST_CASE("rendr-lab: SIGTERM during up removes the half-built lab", "[.netns][lab][cli][failure]") {
  FakeBin fake;
  const std::string marker = fake.dir + "/ping-started";
  // A slow ping: up is surely in progress when the marker appears.
  fake.script("ping", "touch " + marker + "; sleep 0.5; exec /usr/bin/ping \"$@\"");
  const std::string p = unique_prefix("s");
  LabCleanup guard(p);

  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::string path = fake.dir + ":" + (std::getenv("PATH") != nullptr ? std::getenv("PATH") : "");
    ::setenv("PATH", path.c_str(), 1);
    ::execl(RENDR_LAB_BIN, RENDR_LAB_BIN, "up", "gateway", "--prefix", p.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!std::filesystem::exists(marker) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // bounded poll for the marker
  }
  REQUIRE(std::filesystem::exists(marker));
  CHECK_FALSE(lab::existing_lab_namespaces(p).empty());  // half built right now
  REQUIRE(::kill(pid, SIGTERM) == 0);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  CHECK(lab::existing_lab_namespaces(p).empty());
}

TEST_CASE("rendr-lab: --help, usage errors, and not-root is reported as such",
          "[.netns][lab][cli][usage]") {
  auto h = rendr_lab("--help");
  CHECK(h.rc == 0);
  CHECK_THAT(h.out, Catch::Contains("up multipath"));
  CHECK(rendr_lab("").rc == 2);
  CHECK(rendr_lab("frob").rc == 2);
  CHECK(rendr_lab("up").rc == 2);
  CHECK(rendr_lab("up gateway --prefix 'bad/prefix'").rc == 2);
  CHECK(rendr_lab("up gateway --rate 1mbit --prefix x").rc == 2);
  // Not root: run as nobody through setpriv (util-linux), if available.
  if (sh("command -v setpriv").rc == 0) {
    auto r = sh("setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all " +
                std::string(RENDR_LAB_BIN) + " up gateway --prefix " + unique_prefix("n"));
    INFO(r.out);
    CHECK(r.rc == 3);
    CHECK_THAT(r.out, Catch::Contains("must run as root"));
    CHECK(lab::existing_lab_namespaces(unique_prefix("n")).empty());
  }
}

TEST_CASE(
    "rendr-lab: up gateway --userstack provisions a TUN device for a user with the VIP routed in",
    "[.netns][lab][cli][gateway]") {
  const std::string p = unique_prefix("u");
  LabCleanup guard(p);
  CHECK(rendr_lab("up multipath --userstack a --prefix " + p).rc == 2);
  CHECK(rendr_lab("up gateway --tun-user 4242 --prefix " + p).rc == 2);
  CHECK(rendr_lab("up gateway --userstack c --prefix " + p).rc == 2);
  CHECK(rendr_lab("up gateway --userstack b --tun-user x --prefix " + p).rc == 2);
  CHECK(lab::existing_lab_namespaces(p).empty());

  auto up = rendr_lab("up gateway --userstack b --tun-user 4242:4343 --prefix " + p);
  INFO(up.out);
  REQUIRE(up.rc == 0);
  CHECK_THAT(up.out,
             Catch::Contains("userstack: VIP routed into TUN rtun0 (not on lo), owner uid 4242"));
  // b: the device belongs to uid 4242 / gid 4343 and carries the VIP's routes; a is untouched.
  auto link = sh("ip netns exec " + p + "-b ip -d link show rtun0");
  INFO(link.out);
  CHECK(link.rc == 0);
  CHECK_THAT(link.out, Catch::Contains("user 4242") && Catch::Contains("group 4343"));
  CHECK_THAT(link.out, Catch::Contains("state UP") || Catch::Contains(",UP"));
  auto routes = sh("ip netns exec " + p + "-b sh -c 'ip route show 10.99.0.1; ip -6 route show "
                   "fd99::1; ip addr show dev lo'");
  INFO(routes.out);
  CHECK_THAT(routes.out, Catch::Contains("10.99.0.1 dev rtun0") &&
                             Catch::Contains("fd99::1 dev rtun0"));
  CHECK_THAT(routes.out, !Catch::Contains("inet 10.99.0.1"));
  CHECK(in_ns(p + "-a", "ip link show rtun0") != 0);
  CHECK(in_ns(p + "-a", "ip addr show dev lo | grep -q 'inet 10.99.0.1'") == 0);
  REQUIRE(rendr_lab("down --prefix " + p).rc == 0);
  CHECK(lab::existing_lab_namespaces(p).empty());
}

TEST_CASE("rendr-lab: ingress up with its TUN and raw routes then a path dropped and undropped",
          "[.netns][lab][cli][ingress]") {
  const std::string p = unique_prefix("i");
  LabCleanup guard(p);
  const std::string app = p + "-app";

  auto up = rendr_lab("up ingress --json --tun-user 4242:4242 --prefix " + p);
  INFO(up.out);
  REQUIRE(up.rc == 0);
  CHECK(json_get(up.out, "d['lab'], d['up'], d['app']['tun'], d['origin']['addr4'], "
                         "d['origin']['raw_addr4'], len(d['paths'])") ==
        "ingress True rtun0 198.18.0.10 198.19.0.10 2");
  CHECK(json_get(up.out, "d['paths'][1]['app_addr4'], d['paths'][1]['egress_addr4'], "
                         "d['paths'][0]['drop']") == "10.89.0.1 10.89.0.2 False");
  CHECK_THAT(json_get(up.out, "d['commands']['ingress']"),
             Catch::Contains("--peer 10.88.0.2:7000 --peer 10.89.0.2:7000"));
  for (const char* r : {"app", "egress", "origin"}) {
    CHECK(lab::netns_exists(p + "-" + r));
  }
  // The TUN is the user's (rendr-tun ingress may run as 4242) and carries the rendr subnet;
  // the raw subnet reaches the origin over p1 and the egress's forwarding; both paths answer.
  auto tun = sh("ip netns exec " + app + " ip -d link show rtun0; ip netns exec " + app +
                " ip route get 198.18.0.10");
  INFO(tun.out);
  CHECK_THAT(tun.out, Catch::Contains("user 4242") && Catch::Contains("dev rtun0"));
  CHECK(pings(app, "198.19.0.10"));
  CHECK(pings(app, "10.88.0.2"));
  CHECK(pings(app, "10.89.0.2"));
  CHECK(pings(p + "-egress", "198.18.0.10"));

  auto drop = rendr_lab("impair --prefix " + p + " --path 1 --drop --json");
  INFO(drop.out);
  REQUIRE(drop.rc == 0);
  CHECK(json_get(drop.out, "d['paths'][0]['drop'], d['paths'][1]['drop']") == "True False");
  CHECK_FALSE(pings(app, "10.88.0.2"));
  CHECK(pings(app, "10.89.0.2"));
  auto st = rendr_lab("status --json --prefix " + p);
  INFO(st.out);
  REQUIRE(st.rc == 0);
  CHECK(json_get(st.out, "d['ingress']['paths'][0]['dropped_out'] > 0, d['gateway']") ==
        "True None");
  CHECK(rendr_lab("impair --prefix " + p + " --path 1 --loss 5").rc == 2);  // drop only
  REQUIRE(rendr_lab("impair --prefix " + p + " --path 1 --undrop").rc == 0);
  CHECK(pings(app, "10.88.0.2"));

  CHECK(rendr_lab("up ingress --prefix " + p).rc == 1);  // refuses to rebuild a lab in use
  auto down = rendr_lab("down --json --prefix " + p);
  INFO(down.out);
  REQUIRE(down.rc == 0);
  CHECK(json_get(down.out, "len(d['removed']), len(d['left'])") == "3 0");
  CHECK(lab::existing_lab_namespaces(p).empty());
}
