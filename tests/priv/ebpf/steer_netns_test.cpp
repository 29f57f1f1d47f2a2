// SPDX-License-Identifier: Apache-2.0
// Steerer on a real datapath: the gateway lab (peer - gw - {a, b}, the VIP on both hosts' lo)
// with gw's VIP routes removed. The program on gw's peer-facing device sends new connections to
// the default backend with bpf_redirect_neigh and pins them; a new default only affects new
// flows.
#include "ebpf_util.hpp"
#include "support/gateway_fixture.hpp"
#include "support/netns.hpp"

#include <rendr/ebpf/steerer.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace rendr;
using namespace rendr::ebpf;

namespace {

// The gateway lab (tools/lab) without gw's VIP routes: only the steering program can bring a
// connection to a host.
struct Lab : test::GatewayFixture {
  Lab() { gw.must("ip route del 10.99.0.1/32 && ip -6 route del fd99::1/128"); }
};

void ping(int from, int to, std::byte tag) {
  const std::vector<std::byte> msg(16, tag);
  test::write_all(from, msg);
  CHECK(test::read_exact(to, msg.size()) == msg);
}

}  // namespace

TEST_CASE("ebpf: steer pins live flows to their backend while new flows follow the default",
          "[.bpf][ebpf][steer][netns]") {
  Lab lab;
  Endpoint vip = *Endpoint::parse_address(test::GatewayFixture::kVip4, 0);
  UniqueFd la;
  UniqueFd lb;
  {
    test::NetnsScope in(lab.a);
    la = test::listen_tcp(vip);
  }
  vip.port = test::local_of(la.get()).port;
  {
    test::NetnsScope in(lab.b);
    lb = test::listen_tcp(vip);  // same VIP port on host B
  }

  auto s = Steerer::create();
  REQUIRE_OK(s);
  {
    test::NetnsScope in(lab.gw);
    REQUIRE_OK(s->set_backend(0, Backend{test::ifindex_of("va"),
                                              *Endpoint::parse_address("10.0.2.2", 0)}));
    REQUIRE_OK(s->set_backend(1, Backend{test::ifindex_of("vb"),
                                              *Endpoint::parse_address("10.0.3.2", 0)}));
    REQUIRE_OK(s->add_vip(vip));
    REQUIRE_OK(s->set_default_backend(0));
    REQUIRE_OK(s->attach(test::ifindex_of("vpeer")));
  }

  // Without steering gw has no route to the VIP: any connection reaching a host proves the
  // redirect. The first connection lands on host A (default 0).
  UniqueFd c1 = connect_from(lab.peer, vip);
  UniqueFd s1 = test::accept_one(la.get());
  ping(c1.get(), s1.get(), std::byte{1});
  ping(s1.get(), c1.get(), std::byte{2});
  CHECK_FALSE(test::readable(lb.get(), 0));

  // New default: c1 stays on A; a new connection goes to B.
  REQUIRE_OK(s->set_default_backend(1));
  UniqueFd c2 = connect_from(lab.peer, vip);
  UniqueFd s2 = test::accept_one(lb.get());
  ping(c2.get(), s2.get(), std::byte{3});
  ping(c1.get(), s1.get(), std::byte{4});
  CHECK_FALSE(test::readable(la.get(), 0));

  FourTuple f1{test::peer_of(c1.get()), test::local_of(c1.get())};
  FourTuple f2{test::peer_of(c2.get()), test::local_of(c2.get())};
  auto e1 = s->lookup(f1);
  auto e2 = s->lookup(f2);
  REQUIRE_OK(e1);
  REQUIRE_OK(e2);
  REQUIRE(e1->has_value());
  REQUIRE(e2->has_value());
  CHECK((*e1)->backend == 0);
  CHECK((*e2)->backend == 1);
  CHECK((*e1)->pinned);
  auto flows = s->flows();
  REQUIRE_OK(flows);
  CHECK(flows->size() == 2);

  auto ca = s->backend_counters(0);
  auto cb = s->backend_counters(1);
  REQUIRE_OK(ca);
  REQUIRE_OK(cb);
  CHECK(ca->packets >= 4);  // SYN, ACK, data, ACKs of c1
  CHECK(cb->packets >= 3);
  CHECK(test::socket_error(c1.get()) == 0);
  CHECK(test::socket_error(c2.get()) == 0);
}
