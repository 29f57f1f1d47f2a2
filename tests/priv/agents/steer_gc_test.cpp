// SPDX-License-Identifier: Apache-2.0
// The gateway's flow table forgets flows that ended - closed with FINs both ways, or reset -
// and never a live one, however idle: a live connection keeps flowing through its entry while
// the sweep runs every 200 ms with short lingers.
#include "agent_lab.hpp"

#include "support/sockets.hpp"
#include "support/netns.hpp"

#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <thread>

using namespace rendr;
using namespace rendr::test;

namespace {

// wait_metric waits (bounded) until |pred| holds for the gateway's metric |name|.
template <typename Pred>
std::uint64_t wait_metric(AgentLab& al, const std::string& name, Pred pred, int timeout_ms) {
  std::uint64_t v = metric(al, "gw", name);
  for (int waited = 0; !pred(v) && waited < timeout_ms; waited += 100) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    v = metric(al, "gw", name);
  }
  return v;
}

}  // namespace

TEST_CASE("the gateway removes steering entries of ended flows and keeps live ones",
          "[.agents][agents][netns][steer]") {
  AgentLabOptions o;
  o.gw_args = {"--steer-gc-interval-ms", "200", "--steer-fin-linger-ms", "300",
               "--steer-rst-linger-ms", "300"};
  AgentLab al(o);
  PatternClient live(al.lab, 8000);
  REQUIRE(live.wait_down(1 << 20, 5000));
  // The live flow's entry is swept over and over and stays.
  CHECK(wait_metric(al, "rendr_steer_entries", [](std::uint64_t v) { return v == 1; }, 3000) == 1);

  auto ep = Endpoint::parse_address(GatewayFixture::kVip4, 8000);
  REQUIRE(ep.ok());
  SECTION("closed with FINs both ways") {
    for (int i = 0; i < 5; ++i) {
      UniqueFd fd = connect_from(al.lab.peer, *ep);
      char buf[4096];
      REQUIRE(::recv(fd.get(), buf, sizeof buf, 0) > 0);  // the server's pattern flows
      ::shutdown(fd.get(), SHUT_WR);                       // our FIN; the server answers with its own
      while (::recv(fd.get(), buf, sizeof buf, 0) > 0) {
      }
    }
  }
  SECTION("reset by the peer") {
    for (int i = 0; i < 5; ++i) {
      UniqueFd fd = connect_from(al.lab.peer, *ep);
      char buf[4096];
      REQUIRE(::recv(fd.get(), buf, sizeof buf, 0) > 0);
      linger lg{1, 0};  // close with unread data and linger 0: an RST
      ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
  }
  const auto removed = wait_metric(
      al, "rendr_steer_entries_removed_total", [](std::uint64_t v) { return v >= 5 && v != ~0ULL; },
      5000);
  CHECK(removed == 5);
  CHECK(wait_metric(al, "rendr_steer_entries", [](std::uint64_t v) { return v == 1; }, 3000) == 1);
  // The live flow never lost its entry: it still flows, exact, with no RST at the peer.
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  CHECK(metric(al, "gw", "rendr_steer_entries_removed_total") == 5);
  CHECK(live.wait_down(4 << 20, 5000));
  CHECK_FALSE(live.failed());
}
