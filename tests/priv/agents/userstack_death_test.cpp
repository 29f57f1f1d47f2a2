// SPDX-License-Identifier: Apache-2.0
// A userstack host survives its agent (us_keeper.hpp): the TUN, lwIP and the Bridges live in
// the userstack keeper, a process of their own, so a host agent killed with SIGKILL - while it
// merely serves, or in the middle of a move it froze - loses no connection: the download goes on
// byte for byte with no RST, the restarted agent finds the keeper, tracks the connections again
// as their servers register, finishes the move its predecessor left (asking the peers), and the
// connection moves again afterwards. Before the keeper, each of these lost the connection.
#include "agent_lab.hpp"

#include <rendr/common/json.hpp>

#include <catch2/catch.hpp>

#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

using namespace rendr;
using namespace rendr::test;

TEST_CASE("a userstack agent killed with SIGKILL while serving: its keeper serves on and the "
          "restarted agent moves the connection",
          "[.userstack_agent][userstack_agent][netns]") {
  AgentLab al(userstack_options());
  PatternClient c(al.lab, 8000);
  const long long rst0 = peer_resets(al.lab.peer);
  REQUIRE(c.wait_down(4 << 20, 10000));
  const std::string flow = c.tuple().to_string();
  REQUIRE(wait_tracked(al, "a", flow, 5000));

  al.kill_agent("a");
  {
    INFO("client error: " << c.error() << "\nserver a log:\n" << al.log("srv-a"));
    CHECK(c.wait_down(8 << 20, 20000));
    CHECK_FALSE(c.failed());
    CHECK(peer_resets(al.lab.peer) == rst0);
    REQUIRE(al.server_alive("a"));
  }
  CHECK(wait_log(al, "srv-a", "agent lost", 2000));

  al.start_agent("a");
  {
    INFO("agent a log:\n" << al.log("a") << "\nserver a log:\n" << al.log("srv-a"));
    CHECK(wait_log(al, "a", "attached to the running userstack keeper", 2000));
    CHECK(wait_log(al, "a", "1 connection(s) served since before this run", 2000));
    REQUIRE(wait_tracked(al, "a", flow, 5000));
  }
  CHECK(c.wait_down(2 << 20, 20000));
  // New connections are handed to the server again.
  PatternClient c2(al.lab, 8000);
  CHECK(c2.wait_down(2 << 20, 10000));

  int st = -1;
  std::string rep = al.migrate("a", {"--flow", flow}, "b", &st);
  INFO(rep << "\nagent a log:\n" << al.log("a") << "\nagent b log:\n" << al.log("b"));
  CHECK(st == 0);
  CHECK(json_scalar(rep, "result") == "committed");
  std::string out;
  REQUIRE(al.rendrctl("b", {"flows", "--json"}, out) == 0);
  CHECK(out.find(flow) != std::string::npos);
  expect_healthy(al, c, rst0);
  CHECK(c2.wait_down(4 << 20, 20000));
  CHECK_FALSE(c2.failed());
}

TEST_CASE("a second userstack agent on a device whose agent is alive is refused",
          "[.userstack_agent][userstack_agent][netns]") {
  AgentLab al(userstack_options());
  // a's keeper holds rtun0 for a: another agent there must not take it over.
  std::string out;
  const int rc = al.lab.a.sh(std::string(RENDR_AGENT_BIN) + " --name a2 --cert " + al.dir +
                                 "/a.pem --key " + al.dir + "/a.key --ca " + al.dir +
                                 "/ca.pem --control " + al.dir +
                                 "/a2.sock --method userstack --tun rtun0 2>&1",
                             &out);
  INFO(out);
  CHECK(rc == 1);
  CHECK(out.find("served by a running agent") != std::string::npos);
}

namespace {

// killed_after_freeze: a dies (SIGKILL) inside the stall of |fault|, after the keeper captured
// the flow; the server gets its bridge fd back at once (AgentLost: it is no TCP socket in
// repair mode), the keeper keeps the capture frozen, the restarted agent asks b where the move
// got to and thaws it in the keeper (the bridge pumps what the server wrote meanwhile) or
// releases it (it lives on b).
void us_killed_after_freeze(const std::string& fault, const std::string& b_says) {
  const bool on_b = b_says == "committed";
  AgentLabOptions o = userstack_options();
  o.faults_a = {fault};
  AgentLab al(o);
  PatternClient c(al.lab, 8000);
  const long long rst0 = peer_resets(al.lab.peer);
  REQUIRE(c.wait_down(2 << 20, 10000));
  const std::string flow = c.tuple().to_string();
  REQUIRE(wait_tracked(al, "a", flow, 5000));

  std::string out;
  const int rc = migrate_killing_a(al, flow, out);
  CHECK(rc != 0);
  al.start_agent("a");
  INFO("agent a log:\n" << al.log("a") << "\nagent b log:\n" << al.log("b") << "\nserver a log:\n"
                        << al.log("srv-a") << "\nserver b log:\n" << al.log("srv-b"));
  CHECK(wait_log(al, "a", "left captured by an unfinished move", 3000));
  CHECK(wait_log(al, "a", "peer b says " + b_says, 8000));
  CHECK(wait_log(al, "a", on_b ? ": released after 1 query round(s)"
                                : ": returned after 1 query round(s)",
                 8000));
  {
    INFO("client error: " << c.error());
    CHECK(c.wait_down(8 << 20, 20000));
    CHECK_FALSE(c.failed());
    CHECK(peer_resets(al.lab.peer) == rst0);
  }
  std::string st;
  REQUIRE(al.rendrctl("a", {"status", "--json"}, st) == 0);
  CHECK(json_scalar(st, on_b ? "released" : "returned") == "1");
  const std::string here = on_b ? "b" : "a";
  REQUIRE(wait_tracked(al, here, flow, 5000));
  int s = -1;
  std::string rep = al.migrate(here, {"--flow", flow}, on_b ? "a" : "b", &s);
  INFO(rep);
  CHECK(s == 0);
  CHECK(json_scalar(rep, "result") == "committed");
  INFO("client error: " << c.error());
  CHECK(c.wait_down(8 << 20, 20000));
  CHECK_FALSE(c.failed());
  CHECK(peer_resets(al.lab.peer) == rst0);
  CHECK(al.server_alive("b"));
}

}  // namespace

TEST_CASE("a userstack source agent killed after the freeze, before the offer: the restarted "
          "agent thaws the connection in its keeper",
          "[.userstack_agent][userstack_agent][netns]") {
  us_killed_after_freeze("stall_before_ship", "unknown");
}

TEST_CASE("a userstack source agent killed after STEER, before COMMIT: the restarted agent has "
          "the target abort, steers back and thaws",
          "[.userstack_agent][userstack_agent][netns]") {
  us_killed_after_freeze("stall_before_commit", "aborted");
}

TEST_CASE("a userstack source agent killed after COMMIT, before it released its copy: the "
          "restarted agent releases the captured copy",
          "[.userstack_agent][userstack_agent][netns]") {
  us_killed_after_freeze("stall_before_release", "committed");
}
