// SPDX-License-Identifier: Apache-2.0
// A host agent that dies while its server merely serves: the server (embed API) keeps every
// connection it holds, and when an agent is back on the control socket it registers again and
// tracks those connections, so they can be migrated as before.
#include "agent_lab.hpp"

#include <rendr/common/json.hpp>

#include <catch2/catch.hpp>

#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

using namespace rendr;
using namespace rendr::test;

namespace {

// moved_to_b: |c|'s connection, once streaming, migrated from a to b (committed there, adopted
// by b's server); returns its tuple.
std::string moved_to_b(AgentLab& al, PatternClient& c) {
  REQUIRE(c.wait_down(2 << 20, 10000));
  const std::string flow = c.tuple().to_string();
  int st = -1;
  std::string rep = al.migrate("a", {"--flow", flow}, "b", &st);
  INFO(rep);
  REQUIRE(st == 0);
  return flow;
}

}  // namespace

TEST_CASE("a serving agent killed with SIGKILL: the server keeps its connections and registers "
          "again with the restarted agent",
          "[.agents][agents][netns]") {
  AgentLab al;
  PatternClient c(al.lab, 8000);
  const long long rst0 = peer_resets(al.lab.peer);
  REQUIRE(c.wait_down(4 << 20, 10000));
  const std::string flow = c.tuple().to_string();
  REQUIRE(wait_tracked(al, "a", flow, 5000));

  al.kill_agent("a");  // SIGKILL: no goodbye on the control socket
  {
    INFO("client error: " << c.error() << "\nserver a log:\n" << al.log("srv-a"));
    CHECK(c.wait_down(8 << 20, 20000));
    CHECK_FALSE(c.failed());
    CHECK(peer_resets(al.lab.peer) == rst0);
    REQUIRE(al.server_alive("a"));
  }
  CHECK(wait_log(al, "srv-a", "agent lost (control socket closed by the other side)", 2000));

  al.start_agent("a");
  {
    INFO("agent a log:\n" << al.log("a") << "\nserver a log:\n" << al.log("srv-a"));
    REQUIRE(wait_tracked(al, "a", flow, 5000));
    CHECK(wait_log(al, "srv-a", "agent back", 2000));
  }
  // The client kept streaming while the agent was away and came back.
  CHECK(c.wait_down(2 << 20, 20000));

  int st = -1;
  std::string rep = al.migrate("a", {"--flow", flow}, "b", &st);
  INFO(rep << "\nagent a log:\n" << al.log("a") << "\nagent b log:\n" << al.log("b"));
  CHECK(st == 0);
  CHECK(json_scalar(rep, "result") == "committed");
  CHECK(json_scalar(rep, "flows") == "1");
  std::string out;
  REQUIRE(al.rendrctl("b", {"flows", "--json"}, out) == 0);
  CHECK(out.find(flow) != std::string::npos);
  expect_healthy(al, c, rst0);
}

TEST_CASE("a restarted agent gets the adopted connections of its server back and adopts more "
          "without reusing their ids",
          "[.agents][agents][netns]") {
  AgentLab al;
  PatternClient c(al.lab, 8000);
  const long long rst0 = peer_resets(al.lab.peer);
  const std::string flow = moved_to_b(al, c);  // adopted on B under the first adopt id of b
  int st = -1;
  std::string rep;

  al.kill_agent("b");
  al.start_agent("b");
  {
    INFO("agent b log:\n" << al.log("b") << "\nserver b log:\n" << al.log("srv-b"));
    REQUIRE(wait_tracked(al, "b", flow, 5000));
  }
  // The fresh agent b adopts another connection: its first adopt id is the one the server
  // still serves |c| under.
  PatternClient c2(al.lab, 8000);
  REQUIRE(c2.wait_down(2 << 20, 10000));
  const std::string flow2 = c2.tuple().to_string();
  rep = al.migrate("a", {"--flow", flow2}, "b", &st);
  INFO(rep << "\nagent b log:\n" << al.log("b"));
  CHECK(st == 0);
  CHECK(json_scalar(rep, "result") == "committed");
  std::string out;
  REQUIRE(al.rendrctl("b", {"flows", "--json"}, out) == 0);
  CHECK(out.find(flow) != std::string::npos);
  CHECK(out.find(flow2) != std::string::npos);
  // Both stream on B, and the re-tracked adopted one migrates back.
  INFO("client error: " << c.error() << " / " << c2.error());
  CHECK(c.wait_down(4 << 20, 20000));
  CHECK(c2.wait_down(4 << 20, 20000));
  rep = al.migrate("b", {"--flow", flow}, "a", &st);
  INFO(rep);
  CHECK(st == 0);
  CHECK(json_scalar(rep, "result") == "committed");
  CHECK(c.wait_down(8 << 20, 20000));
  CHECK(c2.wait_down(8 << 20, 20000));
  CHECK_FALSE(c.failed());
  CHECK_FALSE(c2.failed());
  CHECK(peer_resets(al.lab.peer) == rst0);
  CHECK(al.server_alive("a"));
  CHECK(al.server_alive("b"));
}

TEST_CASE("a source agent killed with SIGKILL mid-migration before the freeze: the server "
          "serves the connection on at once",
          "[.agents][agents][netns]") {
  AgentLabOptions o;
  o.faults_a = {"stall_before_freeze"};  // the exports are in; 3 s before anything is frozen
  AgentLab al(o);
  PatternClient c(al.lab, 8000);
  const long long rst0 = peer_resets(al.lab.peer);
  REQUIRE(c.wait_down(2 << 20, 10000));
  const std::string flow = c.tuple().to_string();
  REQUIRE(wait_tracked(al, "a", flow, 5000));

  // Killed inside the stall: the server has handed its descriptor over.
  std::string out;
  const int rc = migrate_killing_a(al, flow, out);
  INFO(out << "\nserver a log:\n" << al.log("srv-a") << "\nagent b log:\n" << al.log("b"));
  CHECK(rc != 0);
  CHECK(wait_log(al, "srv-a", "exports returned 1, frozen 0, lost 0", 3000));
  {
    INFO("client error: " << c.error());
    CHECK(c.wait_down(8 << 20, 20000));
    CHECK_FALSE(c.failed());
    CHECK(peer_resets(al.lab.peer) == rst0);
  }
  // The agent is back: the returned connection is tracked again and moves.
  al.start_agent("a");
  REQUIRE(wait_tracked(al, "a", flow, 5000));
  int st = -1;
  std::string rep = al.migrate("a", {"--flow", flow}, "b", &st);
  INFO(rep << "\nagent a log:\n" << al.log("a"));
  CHECK(st == 0);
  CHECK(json_scalar(rep, "result") == "committed");
  expect_healthy(al, c, rst0);
}

TEST_CASE("a target agent killed with SIGKILL right after COMMIT: the connection lives on at the "
          "target's server and moves again once the agent is back",
          "[.agents][agents][netns]") {
  AgentLab al;
  PatternClient c(al.lab, 8000);
  const long long rst0 = peer_resets(al.lab.peer);
  REQUIRE(c.wait_down(4 << 20, 10000));
  const std::string flow = c.tuple().to_string();
  REQUIRE(wait_tracked(al, "a", flow, 5000));

  int st = -1;
  std::string rep = al.migrate("a", {"--flow", flow}, "b", &st);
  // The target answered COMMIT (that is what the report says): kill it at once, before it has
  // done anything more for the connection it activated and handed to its server.
  al.kill_agent("b");
  INFO(rep << "\nagent a log:\n" << al.log("a") << "\nagent b log:\n" << al.log("b")
           << "\nserver b log:\n" << al.log("srv-b"));
  REQUIRE(st == 0);
  REQUIRE(json_scalar(rep, "result") == "committed");
  {
    INFO("client error: " << c.error());
    CHECK(c.wait_down(8 << 20, 20000));
    CHECK_FALSE(c.failed());
    CHECK(peer_resets(al.lab.peer) == rst0);
    REQUIRE(al.server_alive("b"));
  }
  CHECK(wait_log(al, "srv-b", "agent lost", 2000));

  // Back: the server registers again, the connection is tracked on b and moves home.
  al.start_agent("b");
  REQUIRE(wait_tracked(al, "b", flow, 5000));
  rep = al.migrate("b", {"--flow", flow}, "a", &st);
  CHECK(st == 0);
  CHECK(json_scalar(rep, "result") == "committed");
  expect_healthy(al, c, rst0);
}

namespace {

// killed_after_freeze: the source agent a dies (SIGKILL) inside the 3 s stall of |fault|,
// after it froze the flow; the server keeps the frozen connection, hands it to the restarted
// agent, and that agent finishes the move (reclaim): thawed and returned, or released when b
// says it committed. The download goes on byte for byte with no RST, and the connection moves
// again afterwards from where it lives.
void killed_after_freeze(const std::string& fault, const std::string& b_says) {
  const bool on_b = b_says == "committed";
  AgentLabOptions o;
  o.faults_a = {fault};
  AgentLab al(o);
  PatternClient c(al.lab, 8000);
  const long long rst0 = peer_resets(al.lab.peer);
  REQUIRE(c.wait_down(2 << 20, 10000));
  const std::string flow = c.tuple().to_string();
  REQUIRE(wait_tracked(al, "a", flow, 5000));

  // Killed inside the stall: frozen (and, before COMMIT, staged on b).
  std::string out;
  const int rc = migrate_killing_a(al, flow, out);
  CHECK(rc != 0);
  CHECK(wait_log(al, "srv-a", "exports returned 0, frozen 1, lost 0", 3000));
  al.start_agent("a");
  INFO("agent a log:\n" << al.log("a") << "\nagent b log:\n" << al.log("b") << "\nserver a log:\n"
                        << al.log("srv-a"));
  CHECK(wait_log(al, "srv-a", "1 frozen exports reclaimed", 8000));
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
  // The connection is tracked where it lives and moves as any other.
  const std::string here = on_b ? "b" : "a";
  REQUIRE(wait_tracked(al, here, flow, 5000));
  int s = -1;
  std::string rep = al.migrate(here, {"--flow", flow}, on_b ? "a" : "b", &s);
  INFO(rep);
  CHECK(s == 0);
  CHECK(json_scalar(rep, "result") == "committed");
  expect_healthy(al, c, rst0);
}

}  // namespace

TEST_CASE("a source agent killed with SIGKILL after the freeze, before the offer: the restarted "
          "agent finds no peer has the move, thaws the connection and the server serves on",
          "[.agents][agents][netns]") {
  killed_after_freeze("stall_before_ship", "unknown");
}

TEST_CASE("a source agent killed with SIGKILL after STEER, before COMMIT: the restarted agent "
          "has the target abort its staged move, steers back and thaws",
          "[.agents][agents][netns]") {
  killed_after_freeze("stall_before_commit", "aborted");
}

TEST_CASE("a source agent killed with SIGKILL after COMMIT, before it released its copy: the "
          "restarted agent learns the target committed and closes the frozen copy silently",
          "[.agents][agents][netns]") {
  killed_after_freeze("stall_before_release", "committed");
}

TEST_CASE("a gateway agent killed with SIGKILL and restarted keeps steering a migrated "
          "connection to the host it lives on",
          "[.agents][agents][netns]") {
  AgentLab al;
  PatternClient c(al.lab, 8000);
  const long long rst0 = peer_resets(al.lab.peer);
  // On b, the non-default backend: only the gateway's table says so.
  const std::string flow = moved_to_b(al, c);
  int st = -1;
  std::string rep;

  al.kill_agent("gw");
  {
    INFO("client error: " << c.error());
    CHECK(c.wait_down(2 << 20, 20000));  // the filter the dead agent left keeps steering
  }
  al.start_agent("gw");
  {
    INFO("gateway log:\n" << al.log("gw") << "\nclient error: " << c.error());
    // It took the table over from the filter its previous run left (at least this flow).
    CHECK(wait_log(al, "gw", "took over ", 5000));
    CHECK(c.wait_down(4 << 20, 20000));
    CHECK_FALSE(c.failed());
    CHECK(peer_resets(al.lab.peer) == rst0);
  }
  // The restarted gateway steers the flow home when it moves back.
  rep = al.migrate("b", {"--flow", flow}, "a", &st);
  INFO(rep << "\ngateway log:\n" << al.log("gw"));
  CHECK(st == 0);
  CHECK(json_scalar(rep, "result") == "committed");
  expect_healthy(al, c, rst0);
}
