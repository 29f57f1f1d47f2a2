// SPDX-License-Identifier: Apache-2.0
// rendr-impair inside the multipath lab: the relay listens in the client namespace and forwards
// from the server namespace (--listen-netns / --forward-netns), so a client on path 1 sees the
// configured delay while path 2 stays direct.
#include "impair_proc.hpp"
#include "lab_test_util.hpp"

#include "lab/multipath_lab.hpp"

#include "support/require_result.hpp"

#include <catch2/catch.hpp>

using namespace rendr;
using namespace rendr::test;
using rendr::lab::MultipathLab;

TEST_CASE("rendr-impair: a relay between two lab namespaces adds its delay to one path",
          "[.netns][lab][impair]") {
  const std::string p = unique_prefix("i");
  LabCleanup guard(p);
  auto m = MultipathLab::create(p, {2, 0});
  REQUIRE_OK(m);
  auto cfd = (*m)->netns_fd("client");
  auto sfd = (*m)->netns_fd("server");
  REQUIRE_OK(cfd);
  REQUIRE_OK(sfd);

  std::unique_ptr<UdpEcho> echo;
  {
    auto in = lab::NetnsEnter::enter(sfd->get());
    REQUIRE_OK(in);
    echo = std::make_unique<UdpEcho>(*Endpoint::parse_address(MultipathLab::server_addr4(1), 0));
  }
  ImpairProc relay({"udp", "--listen-netns", (*m)->client_ns(), "--listen", "127.0.0.1:0",
                    "--forward-netns", (*m)->client_ns(), "--forward", echo->addr.to_string(),
                    "--delay-ms", "25"});
  auto in = lab::NetnsEnter::enter(cfd->get());
  REQUIRE_OK(in);
  UniqueFd c = bound(*Endpoint::parse("0.0.0.0:0"), SOCK_DGRAM);
  double direct = udp_rtt_ms(c.get(), echo->addr, 2000);
  double relayed = udp_rtt_ms(c.get(), relay.listen, 2000);
  CHECK(direct >= 0);
  CHECK(relayed >= 50.0);
  CHECK(relayed < 2000.0);
  // The relay forwards over path 1, so a silent drop there makes the relayed echo vanish too.
  REQUIRE_OK((*m)->drop(1, true));
  CHECK(udp_rtt_ms(c.get(), relay.listen, 300) < 0);
  REQUIRE_OK((*m)->drop(1, false));
  CHECK(udp_rtt_ms(c.get(), relay.listen, 2000) >= 50.0);
  CHECK(relay.stop() == 0);
}
