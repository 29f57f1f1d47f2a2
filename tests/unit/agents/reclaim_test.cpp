// SPDX-License-Identifier: Apache-2.0
// Reclaim: the restarted source's decisions for a connection its earlier run froze, step by
// step on a fake clock (no I/O, no sleeps).
#include <rendr/agents/reclaim.hpp>

#include <catch2/catch.hpp>

#include <vector>

using namespace rendr::agents;
using namespace std::chrono_literals;
using S = ReclaimStep;
using V = PeerVerdict;

namespace {

const Reclaim::Clock::time_point t0{};

Reclaim make(std::size_t peers, bool gateway) { return Reclaim(peers, gateway, t0, 5s, 1s); }

}  // namespace

TEST_CASE("reclaim: a peer that committed the move wins: the frozen copy is released",
          "[agents][reclaim]") {
  Reclaim r = make(2, true);
  REQUIRE(r.next().step == S::query_peers);
  std::vector<V> a{V::unreachable, V::committed};  // committed wins over a silent peer
  r.on_answers(a, t0);
  REQUIRE(r.next().step == S::release);
  CHECK_FALSE(r.done());
  r.on_thaw(true, "");  // a result for another step changes nothing
  CHECK(r.next().step == S::release);
  r.on_released();
  CHECK(r.done());
  CHECK(r.next().step == S::finished);
  CHECK(r.outcome() == "released");
}

TEST_CASE("reclaim: no peer has it: steer back, then thaw and return", "[agents][reclaim]") {
  Reclaim r = make(2, true);
  std::vector<V> a{V::not_here, V::not_here};
  r.on_answers(a, t0);
  REQUIRE(r.next().step == S::steer_back);
  r.on_steer(true, "", t0);
  REQUIRE(r.next().step == S::thaw);
  r.on_thaw(true, "");
  CHECK(r.done());
  CHECK(r.outcome() == "returned");
  CHECK(r.queries() == 1);
}

TEST_CASE("reclaim: without a gateway there is nothing to steer back", "[agents][reclaim]") {
  Reclaim r = make(1, false);
  std::vector<V> a{V::not_here};
  r.on_answers(a, t0);
  CHECK(r.next().step == S::thaw);
}

TEST_CASE("reclaim: no host peers at all: nobody can have it", "[agents][reclaim]") {
  CHECK(make(0, true).next().step == S::steer_back);
  CHECK(make(0, false).next().step == S::thaw);
}

TEST_CASE("reclaim: a peer that does not answer is asked again - never thawed on a partial "
          "picture - and the connection is held when the budget ends",
          "[agents][reclaim]") {
  Reclaim r = make(2, true);
  std::vector<V> a{V::not_here, V::unreachable};
  r.on_answers(a, t0);
  REQUIRE(r.next().step == S::wait);
  CHECK(r.next().deadline == t0 + 1s);
  r.on_waited(t0 + 500ms);  // early: still waiting
  CHECK(r.next().step == S::wait);
  r.on_waited(t0 + 1s);
  REQUIRE(r.next().step == S::query_peers);
  // Fewer answers than peers counts the missing ones as unreachable.
  std::vector<V> partial{V::not_here};
  r.on_answers(partial, t0 + 1s);
  REQUIRE(r.next().step == S::wait);
  for (int i = 0; i < 10 && !r.done(); ++i) {
    r.on_waited(r.next().deadline);
    REQUIRE(r.next().step == S::query_peers);
    r.on_answers(a, t0 + std::chrono::seconds(2 + i));  // the budget ends at t0 + 5 s
  }
  CHECK(r.done());
  CHECK(r.next().step == S::hold);
  CHECK(r.outcome().rfind("held: ", 0) == 0);
  CHECK(r.outcome().find("did not answer") != std::string::npos);
}

TEST_CASE("reclaim: a silent peer that answers within the budget lets the move finish",
          "[agents][reclaim]") {
  Reclaim r = make(1, false);
  std::vector<V> silent{V::unreachable};
  r.on_answers(silent, t0);
  r.on_waited(t0 + 1s);
  std::vector<V> committed{V::committed};
  r.on_answers(committed, t0 + 1s);
  CHECK(r.next().step == S::release);
  CHECK(r.queries() == 2);
}

TEST_CASE("reclaim: a failing steer back is retried, then the connection thaws anyway",
          "[agents][reclaim]") {
  Reclaim r = make(1, true);
  std::vector<V> a{V::not_here};
  r.on_answers(a, t0);
  REQUIRE(r.next().step == S::steer_back);
  r.on_steer(false, "gateway down", t0);
  REQUIRE(r.next().step == S::wait);
  r.on_waited(r.next().deadline);
  REQUIRE(r.next().step == S::steer_back);  // after the wait: the steer again, not a query
  for (int i = 1; i < 10 && r.next().step != S::thaw; ++i) {
    r.on_steer(false, "gateway down", t0 + std::chrono::seconds(i));
    if (r.next().step == S::wait) {
      r.on_waited(r.next().deadline);
    }
  }
  REQUIRE(r.next().step == S::thaw);
  r.on_thaw(true, "");
  CHECK(r.outcome() == "returned (steer back: gateway down)");
}

TEST_CASE("reclaim: a thaw that fails is reported as lost", "[agents][reclaim]") {
  Reclaim r = make(0, false);
  r.on_thaw(false, "leave repair mode: Operation not permitted");
  CHECK(r.done());
  CHECK(r.outcome() == "lost: leave repair mode: Operation not permitted");
}
