// SPDX-License-Identifier: Apache-2.0
// SkLookup in a real netns: connections to a VIP port nobody bound are handed to a listener on
// another address; address-wide port ranges; removal and detach restore the refusal.
#include "ebpf_util.hpp"
#include "support/netns.hpp"
#include "support/packet.hpp"

#include <rendr/ebpf/sk_lookup.hpp>

#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <string>

using namespace rendr;
using namespace rendr::ebpf;
using test::endpoint;

namespace {

// free_port returns a port of |addr| that nothing is bound to now (bind port 0, read it back).
std::uint16_t free_port(const char* addr) {
  auto ep = *Endpoint::parse_address(addr, 0);
  UniqueFd s = test::listen_tcp(ep);
  return test::local_of(s.get()).port;
}

// connect_and_check connects to |vip|, expects |listener| to accept it with |vip| as the
// accepted socket's local address, and exchanges a few bytes.
void connect_and_check(const Endpoint& vip, int listener) {
  INFO("connect " << vip.to_string());
  auto c = test::connect_tcp(vip);
  REQUIRE_OK(c);
  UniqueFd srv = test::accept_one(listener);
  CHECK(test::local_of(srv.get()) == vip);
  CHECK(test::peer_of(srv.get()) == test::local_of(c->get()));
  const std::vector<std::byte> ping(3, std::byte{0x42});
  test::write_all(c->get(), ping);
  CHECK(test::read_exact(srv.get(), ping.size()) == ping);
}

void require_refused(const Endpoint& vip) {
  INFO("connect " << vip.to_string());
  REQUIRE_ERROR(test::connect_tcp(vip), std::errc::connection_refused, "connect");
}

}  // namespace

TEST_CASE("ebpf: sk_lookup hands VIP connections to a listener bound elsewhere",
          "[.bpf][ebpf][sk_lookup][netns]") {
  auto ns = test::Netns::create("ebpf-sk-lookup");
  test::NetnsScope in(ns);
  // The VIPs are addresses of this netns only: 127.0.0.2/127.0.0.3 (lo's 127/8) and fd00::100.
  ns.must("ip addr add fd00::100/128 dev lo nodad");

  UniqueFd listener = test::listen_tcp(endpoint("127.0.0.1:0"));
  Endpoint vip = *Endpoint::parse_address("127.0.0.2", free_port("127.0.0.2"));
  require_refused(vip);  // baseline: nothing serves the VIP port

  auto sl = SkLookup::create();
  REQUIRE_OK(sl);
  REQUIRE_OK(sl->attach());
  REQUIRE_ERROR(sl->attach(), std::errc::file_exists, "already attached");
  REQUIRE_OK(sl->add_listener(vip, listener.get()));
  connect_and_check(vip, listener.get());
  connect_and_check(vip, listener.get());

  // Only the registered port is served.
  Endpoint other = vip;
  other.port = free_port("127.0.0.2");
  require_refused(other);

  // Address-wide range: every port of 127.0.0.3 (exact entries would still win).
  REQUIRE_OK(sl->add_listener_range(endpoint("127.0.0.3:0"), 1, 65535, listener.get()));
  connect_and_check(*Endpoint::parse_address("127.0.0.3", free_port("127.0.0.3")),
                    listener.get());
  connect_and_check(*Endpoint::parse_address("127.0.0.3", free_port("127.0.0.3")),
                    listener.get());

  // A narrow range leaves the ports outside it alone.
  std::uint16_t p6 = free_port("::1");
  UniqueFd listener6 = test::listen_tcp(endpoint("[::1]:0"));
  REQUIRE_OK(sl->add_listener_range(endpoint("[fd00::100]:0"), p6, p6, listener6.get()));
  connect_and_check(*Endpoint::parse_address("fd00::100", p6), listener6.get());
  require_refused(*Endpoint::parse_address("fd00::100", p6 == 65535 ? 65534 : p6 + 1));

  auto cnt = sl->counters();
  REQUIRE_OK(cnt);
  CHECK(cnt->assigned == 5);
  CHECK(cnt->assign_failed == 0);

  // Removal: the VIP port is refused again; the range stays.
  REQUIRE_OK(sl->remove(vip));
  REQUIRE_ERROR(sl->remove(vip), std::errc::no_such_file_or_directory, "sk_lookup: remove");
  require_refused(vip);
  connect_and_check(*Endpoint::parse_address("127.0.0.3", free_port("127.0.0.3")),
                    listener.get());

  // Destroying the SkLookup releases the netns link.
  sl = SkLookup::create();
  REQUIRE_OK(sl);
  require_refused(*Endpoint::parse_address("127.0.0.3", free_port("127.0.0.3")));
}

TEST_CASE("ebpf: sk_lookup rejects bad registrations", "[.bpf][ebpf][sk_lookup]") {
  auto ns = test::Netns::create("ebpf-sk-lookup-args");
  test::NetnsScope in(ns);
  SkLookupOptions o;
  o.max_sockets = 1;
  auto sl = SkLookup::create(o);
  REQUIRE_OK(sl);
  UniqueFd listener = test::listen_tcp(endpoint("127.0.0.1:0"));
  REQUIRE_ERROR(sl->add_listener(endpoint("127.0.0.2:0"), listener.get()),
                     std::errc::invalid_argument, "port 0");
  REQUIRE_ERROR(sl->add_listener_range(endpoint("127.0.0.2:0"), 10, 9, listener.get()),
                     std::errc::invalid_argument, "empty range");
  REQUIRE_OK(sl->add_listener(endpoint("127.0.0.2:1000"), listener.get()));
  REQUIRE_ERROR(sl->add_listener(endpoint("127.0.0.2:1001"), listener.get()),
                     std::errc::no_space_on_device, "slots");
  // Re-registering the same VIP port reuses its slot.
  REQUIRE_OK(sl->add_listener(endpoint("127.0.0.2:1000"), listener.get()));
  // A TCP socket that is not listening cannot go into the SOCKMAP.
  REQUIRE_OK(sl->remove(endpoint("127.0.0.2:1000")));
  auto raw = UniqueFd::socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  REQUIRE_OK(raw);
  auto bad = sl->add_listener(endpoint("127.0.0.2:1000"), raw->get());
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(bad.error().message(), Catch::Contains("sk_lookup_socks"));
}
