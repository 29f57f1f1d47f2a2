// SPDX-License-Identifier: Apache-2.0
// Steerer on a real datapath: the gateway lab in miniature (peer - gw - {hostA, hostB}, the VIP
// on both hosts' lo). The program on gw's peer-facing device sends new connections to the
// default backend with bpf_redirect_neigh and pins them; a new default only affects new flows.
#include "ebpf_util.hpp"
#include "support/netns.hpp"

#include <rendr/ebpf/steerer.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace rendr;
using namespace rendr::ebpf;

namespace {

struct Lab {
  test::Netns peer = test::Netns::create("ebpf-steer-peer");
  test::Netns gw = test::Netns::create("ebpf-steer-gw");
  test::Netns a = test::Netns::create("ebpf-steer-hostA");
  test::Netns b = test::Netns::create("ebpf-steer-hostB");

  Lab() {
    test::veth(peer, "p0", gw, "g0");
    test::veth(gw, "g1", a, "h0");
    test::veth(gw, "g2", b, "h0");
    peer.must("ip addr add 10.50.0.2/24 dev p0 && ip route add 10.60.0.100/32 via 10.50.0.1");
    gw.must("ip addr add 10.50.0.1/24 dev g0 && ip addr add 10.51.0.1/24 dev g1 && "
            "ip addr add 10.52.0.1/24 dev g2 && sysctl -qw net.ipv4.ip_forward=1");
    a.must("ip addr add 10.51.0.2/24 dev h0 && ip addr add 10.60.0.100/32 dev lo && "
           "ip route add default via 10.51.0.1");
    b.must("ip addr add 10.52.0.2/24 dev h0 && ip addr add 10.60.0.100/32 dev lo && "
           "ip route add default via 10.52.0.1");
  }
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
  Endpoint vip = *Endpoint::parse_address("10.60.0.100", 0);
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
    REQUIRE_OK(s->set_backend(0, Backend{test::ifindex_of("g1"),
                                              *Endpoint::parse_address("10.51.0.2", 0)}));
    REQUIRE_OK(s->set_backend(1, Backend{test::ifindex_of("g2"),
                                              *Endpoint::parse_address("10.52.0.2", 0)}));
    REQUIRE_OK(s->add_vip(vip));
    REQUIRE_OK(s->set_default_backend(0));
    REQUIRE_OK(s->attach(test::ifindex_of("g0")));
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
