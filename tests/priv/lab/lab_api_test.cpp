// SPDX-License-Identifier: Apache-2.0
// The C++ lab API (tools/lab): GatewayLab create/attach/keep/describe/route_vip_to and
// MultipathLab create/attach/drop/loss/rate/clear/state, as engine tests and benches use them.
#include "lab_test_util.hpp"

#include "lab/gateway_lab.hpp"
#include "lab/multipath_lab.hpp"

#include "support/require_result.hpp"

#include <catch2/catch.hpp>

#include <sys/socket.h>

using namespace rendr;
using namespace rendr::test;
using rendr::lab::Dir;
using rendr::lab::GatewayLab;
using rendr::lab::MultipathLab;

TEST_CASE("lab: GatewayLab create, describe, move the VIP, keep and attach, teardown",
          "[.netns][lab][api][gateway]") {
  const std::string p = unique_prefix("ga");
  LabCleanup guard(p);
  {
    auto g = GatewayLab::create(p);
    REQUIRE_OK(g);
    auto& lab = **g;
    auto owner = lab.vip_owner();
    REQUIRE_OK(owner);
    CHECK(*owner == lab::Host::a);
    REQUIRE_OK(lab.route_vip_to(lab::Host::b));
    owner = lab.vip_owner();
    REQUIRE_OK(owner);
    CHECK(*owner == lab::Host::b);
    auto idx = lab.ifindex("gw", GatewayLab::gw_ifname(lab::Host::b));
    REQUIRE_OK(idx);
    CHECK(*idx > 0);
    REQUIRE_ERROR(lab.ifindex("gw", "nope0"), std::errc::no_such_device, "nope0");
    CHECK(json_get(lab.describe(), "d['vip']['owner'], d['gw']['b']['if'], d['gw']['b']['addr4']") ==
          "b vb 10.0.3.1");
    // NetnsEnter: a socket made inside host a binds the VIP.
    auto fd = lab.netns_fd("a");
    REQUIRE_OK(fd);
    {
      auto in = lab::NetnsEnter::enter(fd->get());
      REQUIRE_OK(in);
      auto s = UniqueFd::socket(AF_INET, SOCK_STREAM, 0);
      REQUIRE_OK(s);
      auto vip = Endpoint::parse_address(GatewayLab::kVip4, 0);
      REQUIRE_OK(vip);
      sockaddr_storage ss{};
      socklen_t len = vip->to_sockaddr(ss);
      CHECK(::bind(s->get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
    }
    lab.keep();
  }
  // keep(): the namespaces outlive the object; attach() finds them and teardown() removes them.
  CHECK(lab::existing_lab_namespaces(p).size() == 4);
  auto a = GatewayLab::attach(p);
  REQUIRE_OK(a);
  CHECK(pings((*a)->ns("peer"), GatewayLab::kVip6));
  (*a)->teardown();
  CHECK(lab::existing_lab_namespaces(p).empty());
  REQUIRE_ERROR(GatewayLab::attach(p), std::errc::no_such_file_or_directory, "no gateway lab");
  REQUIRE_ERROR(GatewayLab::create("bad prefix"), std::errc::invalid_argument, "prefix");
}

TEST_CASE("lab: MultipathLab impairments per path and direction, read back from the kernel",
          "[.netns][lab][api][multipath]") {
  const std::string p = unique_prefix("ma");
  LabCleanup guard(p);
  REQUIRE_ERROR(MultipathLab::create(p, {1, 0}), std::errc::invalid_argument, "2..8");
  REQUIRE_ERROR(MultipathLab::create(p, {9, 0}), std::errc::invalid_argument, "2..8");
  CHECK(lab::existing_lab_namespaces(p).empty());

  lab::MultipathOptions opt;
  opt.paths = 2;
  auto m = MultipathLab::create(p, opt);
  REQUIRE_OK(m);
  auto& lab = **m;
  const std::string c = lab.client_ns();
  const std::string s = lab.server_ns();
  CHECK(lab.paths() == 2);
  CHECK(MultipathLab::server_addr4(2) == "10.10.2.2");
  CHECK(MultipathLab::client_addr6(1) == "fd10:1::1");

  // client->server drop only: the server's own packets still leave, the client's do not.
  REQUIRE_OK(lab.drop(1, true, Dir::client_to_server));
  CHECK_FALSE(pings(c, MultipathLab::server_addr4(1)));
  CHECK(pings(c, MultipathLab::server_addr4(2)));
  auto st = lab.state(1);
  REQUIRE_OK(st);
  CHECK(st->client_to_server.drop);
  CHECK_FALSE(st->server_to_client.drop);
  CHECK(st->client_to_server.dropped_packets >= 1);
  auto d = lab.dropped(1);
  REQUIRE_OK(d);
  CHECK(*d >= 1);

  // loss 100 % server->client on path 2: requests arrive, every reply is dropped and counted.
  REQUIRE_OK(lab.loss(2, 100, Dir::server_to_client));
  CHECK(in_ns(c, "ping -c5 -i0.01 -W1 -q " + MultipathLab::server_addr4(2)) != 0);
  st = lab.state(2);
  REQUIRE_OK(st);
  CHECK(st->server_to_client.loss_percent == 100);
  CHECK(st->server_to_client.dropped_packets >= 5);
  CHECK(st->client_to_server.dropped_packets == 0);

  // rate: tbf read back in bits/s; removal.
  REQUIRE_OK(lab.rate(2, 5'000'000, Dir::both));
  st = lab.state(2);
  REQUIRE_OK(st);
  CHECK(st->client_to_server.rate_bps == 5'000'000);
  CHECK(st->server_to_client.rate_bps == 5'000'000);

  // A second handle (as rendr-lab impair uses) sees the same lab.
  auto other = MultipathLab::attach(p);
  REQUIRE_OK(other);
  CHECK((*other)->paths() == 2);
  REQUIRE_OK((*other)->clear(1));
  REQUIRE_OK(lab.clear(2));
  CHECK(pings(c, MultipathLab::server_addr4(1)));
  CHECK(pings(c, MultipathLab::server_addr6(2)));
  CHECK(pings(s, MultipathLab::client_addr4(2)));
  st = lab.state(2);
  REQUIRE_OK(st);
  CHECK(st->server_to_client.loss_percent == 0);
  CHECK(st->server_to_client.rate_bps == 0);
  CHECK(st->server_to_client.dropped_packets == 0);

  REQUIRE_ERROR(lab.drop(3, true), std::errc::invalid_argument, "out of range");
  REQUIRE_ERROR(lab.loss(1, 101), std::errc::invalid_argument, "0..100");
  other->reset();  // non-owning: the lab stays
  CHECK(lab::existing_lab_namespaces(p).size() == 2);
  m->reset();  // owning: the lab goes
  CHECK(lab::existing_lab_namespaces(p).empty());
}

TEST_CASE("lab: parse_rate and format_rate", "[.netns][lab][api][rate]") {
  CHECK(*lab::parse_rate("100mbit") == 100'000'000);
  CHECK(*lab::parse_rate("1Gbit") == 1'000'000'000);
  CHECK(*lab::parse_rate("1500Kbit") == 1'500'000);
  CHECK(*lab::parse_rate("2.5mbit") == 2'500'000);
  CHECK(*lab::parse_rate("1mbps") == 8'000'000);
  CHECK(*lab::parse_rate("64") == 64);
  CHECK_FALSE(lab::parse_rate("fast").ok());
  CHECK_FALSE(lab::parse_rate("0").ok());
  CHECK_FALSE(lab::parse_rate("mbit").ok());
  CHECK(lab::format_rate(100'000'000) == "100mbit");
  CHECK(lab::format_rate(1'500'000) == "1500kbit");
  CHECK(lab::format_rate(2'000'000'000) == "2gbit");
}
