// SPDX-License-Identifier: Apache-2.0
// Batches under ordinary churn: connections that end before or while their batch exports are
// dropped from it and reported, the rest of the batch commits, and the agent forgets flows
// whose socket is gone, so they never poison a later batch.
#include "agent_lab.hpp"

#include "support/netns.hpp"

#include <rendr/common/json.hpp>

#include <catch2/catch.hpp>

#include <unistd.h>

#include <string>

using namespace rendr;
using namespace rendr::test;

namespace {

// served_here: whether the agent's `flows --json` lists |tuple| as tracked (serving or
// migrating; flows in freeze grace have left).
bool tracked(const std::string& flows_json, const std::string& tuple) {
  auto p = flows_json.find("\"tuple\":\"" + tuple + "\"");
  if (p == std::string::npos) {
    return false;
  }
  auto end = flows_json.find('}', p);
  auto st = flows_json.substr(p, end - p);
  return st.find("\"serving\"") != std::string::npos ||
         st.find("\"migrating\"") != std::string::npos;
}

std::string flows_of(const AgentLab& al, const std::string& agent) {
  std::string out;
  if (al.rendrctl(agent, {"flows", "--json"}, out) != 0) {
    throw std::runtime_error("rendrctl flows failed on " + agent);
  }
  return out;
}

}  // namespace

TEST_CASE("a connection that ends while its batch exports leaves the batch; the rest commits",
          "[.agents][agents][netns]") {
  // The server closes every connection whose client sent nothing when the batch asks for it:
  // with an untrack (a well-behaved server), or without one (the agent finds the socket gone).
  for (bool untrack : {true, false}) {
    DYNAMIC_SECTION((untrack ? "the server untracks it" : "the server closes it silently")) {
      AgentLabOptions o;
      o.server_args = {"--end-quiet-on-export", "1"};
      if (!untrack) {
        o.server_args.insert(o.server_args.end(), {"--no-untrack", "1"});
      }
      AgentLab al(o);
      std::vector<std::unique_ptr<PatternClient>> live;
      std::vector<std::unique_ptr<PatternClient>> quiet;
      for (int i = 0; i < 3; ++i) {
        live.push_back(std::make_unique<PatternClient>(al.lab, 8000, 1 << 20));
        quiet.push_back(std::make_unique<PatternClient>(al.lab, 8000, 0));
      }
      for (auto& c : live) {
        REQUIRE(c->wait_down(256 << 10, 10000));
      }
      for (auto& c : quiet) {
        REQUIRE(c->wait_down(64 << 10, 10000));
      }
      const long long rst0 = peer_rsts(al.lab);
      int st = -1;
      std::string rep = al.migrate("a", {"--all"}, "b", &st);
      INFO(rep << "\nagent a log:\n" << al.log("a"));
      CHECK(st == 0);
      CHECK(json_scalar(rep, "result") == "committed");
      CHECK(json_scalar(rep, "flows") == "3");
      CHECK(json_scalar(rep, "ended") == "3");
      std::string fa = flows_of(al, "a");
      std::string fb = flows_of(al, "b");
      for (auto& c : quiet) {
        const std::string t = c->tuple().to_string();
        CHECK(rep.find(t) != std::string::npos);  // listed in ended_flows
        CHECK_FALSE(tracked(fa, t));
        CHECK_FALSE(tracked(fb, t));
      }
      for (auto& c : live) {
        CHECK(tracked(fb, c->tuple().to_string()));
        INFO(c->error());
        CHECK(c->wait_down(512 << 10, 20000));
      }
      // Nothing stale is left behind to poison the next batches.
      const char* hops[][2] = {{"b", "a"}, {"a", "b"}};
      for (const auto& hop : hops) {
        rep = al.migrate(hop[0], {"--all"}, hop[1], &st);
        INFO(rep);
        CHECK(st == 0);
        CHECK(json_scalar(rep, "result") == "committed");
        CHECK(json_scalar(rep, "flows") == "3");
        CHECK(json_scalar(rep, "ended") == "0");
      }
      for (auto& c : live) {
        INFO(c->error());
        CHECK(c->wait_down(512 << 10, 20000));
        CHECK_FALSE(c->failed());
      }
      CHECK(peer_rsts(al.lab) == rst0);
    }
  }
}

TEST_CASE("flows a server closed without untracking vanish and do not poison later batches",
          "[.agents][agents][netns]") {
  AgentLabOptions o;
  o.server_args = {"--no-untrack", "1"};
  AgentLab al(o);
  std::vector<std::unique_ptr<PatternClient>> live;
  std::vector<std::unique_ptr<PatternClient>> gone;
  for (int i = 0; i < 2; ++i) {
    live.push_back(std::make_unique<PatternClient>(al.lab, 8000, 1 << 20));
    gone.push_back(std::make_unique<PatternClient>(al.lab, 8000, 0));
  }
  for (auto& c : live) {
    REQUIRE(c->wait_down(256 << 10, 10000));
  }
  std::vector<std::string> gone_tuples;
  for (auto& c : gone) {
    REQUIRE(c->wait_down(64 << 10, 10000));
    gone_tuples.push_back(c->tuple().to_string());
  }
  REQUIRE(tracked(flows_of(al, "a"), gone_tuples[0]));
  gone.clear();  // the clients close; the server closes its ends without telling the agent
  bool vanished = false;
  for (int i = 0; i < 100 && !vanished; ++i) {
    std::string fa = flows_of(al, "a");
    vanished = !tracked(fa, gone_tuples[0]) && !tracked(fa, gone_tuples[1]);
    if (!vanished) {
      ::usleep(50000);
    }
  }
  INFO(flows_of(al, "a") << "\nagent a log:\n" << al.log("a"));
  CHECK(vanished);
  int st = -1;
  std::string rep = al.migrate("a", {"--all"}, "b", &st);
  INFO(rep);
  CHECK(st == 0);
  CHECK(json_scalar(rep, "result") == "committed");
  CHECK(json_scalar(rep, "flows") == "2");
  for (auto& c : live) {
    INFO(c->error());
    CHECK(c->wait_down(512 << 10, 20000));
    CHECK_FALSE(c->failed());
  }
}
