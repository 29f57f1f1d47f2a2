// SPDX-License-Identifier: Apache-2.0
// userstack -> userstack migrations between host agents (the gateway stays native: eBPF
// steering). The pattern server on each host is unmodified: it gets bridge fds through the
// embed API and exports/adopts them like kernel sockets. The client is a plain kernel socket
// in the peer namespace; every byte is checked both ways.
#include "agent_lab.hpp"

#include <rendr/common/json.hpp>

#include <catch2/catch.hpp>

#include <string>

using namespace rendr;
using namespace rendr::test;

namespace {

AgentLabOptions us_options() {
  AgentLabOptions o;
  o.userstack_hosts = {"a", "b"};
  return o;
}

}  // namespace

TEST_CASE("userstack agents move a live pattern stream back and forth with nothing lost",
          "[.userstack_agent][userstack_agent][netns]") {
  AgentLab al(us_options());
  PatternClient c(al.lab, 8000, 256ULL << 20);
  const long long rst0 = peer_resets(al.lab.peer);
  REQUIRE(c.wait_down(4 << 20, 10000));
  const std::string flow = c.tuple().to_string();
  std::string on = "a";
  for (int k = 0; k < 6; ++k) {
    const std::string to = on == "a" ? "b" : "a";
    INFO("migration " << k << ": " << on << " -> " << to);
    int st = -1;
    const std::string rep = al.migrate(on, {"--flow", flow}, to, &st);
    INFO(rep);
    INFO("agent " << on << " log:\n" << al.log(on) << "\nagent " << to << " log:\n" << al.log(to));
    REQUIRE(st == 0);
    CHECK(json_scalar(rep, "result") == "committed");
    std::string out;
    REQUIRE(al.rendrctl(to, {"flows", "--json"}, out) == 0);
    CHECK(out.find(flow) != std::string::npos);
    CHECK(out.find("\"method\":\"userstack\"") != std::string::npos);
    INFO("client: " << c.error());
    REQUIRE(c.wait_down(42 << 20, 60000));
    on = to;
  }
  expect_healthy(al, c, rst0);
  // Both directions flowed (the server checks every upstream byte; a wrong one kills it).
  CHECK(c.down() >= 256ULL << 20);
  CHECK(c.up() > (1ULL << 20));
}

TEST_CASE("a userstack migration aborted after the freeze leaves the connection serving on A",
          "[.userstack_agent][userstack_agent][netns]") {
  AgentLabOptions o = us_options();
  o.faults_a = {"cut_during_ship"};
  AgentLab al(o);
  PatternClient c(al.lab, 8000);
  const long long rst0 = peer_resets(al.lab.peer);
  REQUIRE(c.wait_down(2 << 20, 10000));
  int st = -1;
  const std::string rep = al.migrate("a", {"--flow", c.tuple().to_string()}, "b", &st);
  INFO(rep);
  INFO("agent a log:\n" << al.log("a"));
  CHECK(st == 1);
  CHECK(json_scalar(rep, "result") == "aborted");
  CHECK(json_scalar(rep, "failed_in") == "frozen");
  std::string out;
  REQUIRE(al.rendrctl("a", {"flows", "--json"}, out) == 0);
  CHECK(out.find(c.tuple().to_string()) != std::string::npos);
  INFO("client error: " << c.error());
  CHECK(c.wait_down(8 << 20, 20000));
  CHECK_FALSE(c.failed());
  CHECK(peer_resets(al.lab.peer) == rst0);
}

TEST_CASE("a pattern stream moves between a native and a userstack agent both ways",
          "[.userstack_agent][userstack_agent][netns]") {
  AgentLabOptions o;
  o.userstack_hosts = {"b"};  // a native (eBPF freeze, TCP_REPAIR), b userstack
  AgentLab al(o);
  PatternClient c(al.lab, 8000);
  const long long rst0 = peer_resets(al.lab.peer);
  REQUIRE(c.wait_down(4 << 20, 10000));
  const std::string flow = c.tuple().to_string();
  std::string on = "a";
  for (int k = 0; k < 4; ++k) {
    const std::string to = on == "a" ? "b" : "a";
    INFO("migration " << k << ": " << on << " -> " << to);
    int st = -1;
    const std::string rep = al.migrate(on, {"--flow", flow}, to, &st);
    INFO(rep);
    INFO("agent " << on << " log:\n" << al.log(on) << "\nagent " << to << " log:\n" << al.log(to));
    REQUIRE(st == 0);
    CHECK(json_scalar(rep, "result") == "committed");
    std::string out;
    REQUIRE(al.rendrctl(to, {"flows", "--json"}, out) == 0);
    CHECK(out.find(flow) != std::string::npos);
    // b terminates the connection in its lwIP, a in a kernel socket.
    CHECK(out.find(to == "b" ? "\"method\":\"userstack\"" : "\"method\":\"native\"") !=
          std::string::npos);
    INFO("client: " << c.error());
    REQUIRE(c.wait_down(8 << 20, 30000));
    on = to;
  }
  expect_healthy(al, c, rst0);
}
