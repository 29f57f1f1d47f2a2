// SPDX-License-Identifier: Apache-2.0
// The ingress's UDP flow table (tools/rendr-tun/tun_udp_table.hpp): one flow per 5-tuple,
// bounded, reaped when idle in both directions; fake times.
#include "rendr-tun/tun_udp_table.hpp"

#include "support/packet.hpp"

#include <catch2/catch.hpp>

using namespace rendr;
using namespace rendr::tun;
using namespace std::chrono_literals;

namespace {

UdpKey key(int app_port) {
  return UdpKey{test::endpoint(("10.77.0.1:" + std::to_string(app_port)).c_str()),
                test::endpoint("198.18.0.10:5300")};
}

}  // namespace

TEST_CASE("tun udp table: one flow per 5-tuple and new ones refused when full", "[tun][udp]") {
  UdpTable<int> t(2, 1000ms);
  const auto t0 = std::chrono::steady_clock::time_point{} + 1h;
  int made = 0;
  const auto make = [&made] { return ++made; };
  auto a = t.lookup(key(1), t0, make);
  CHECK(a.outcome == UdpTable<int>::Outcome::created);
  CHECK(*a.value == 1);
  auto a2 = t.lookup(key(1), t0, make);
  CHECK(a2.outcome == UdpTable<int>::Outcome::found);
  CHECK(*a2.value == 1);
  // Another destination port is another flow.
  UdpKey other = key(1);
  other.dst.port = 5301;
  CHECK(t.lookup(other, t0, make).outcome == UdpTable<int>::Outcome::created);
  auto full = t.lookup(key(2), t0, make);
  CHECK(full.outcome == UdpTable<int>::Outcome::full);
  CHECK(full.value == nullptr);
  CHECK(made == 2);
  CHECK(t.size() == 2);
  REQUIRE(t.find(key(1)) != nullptr);
  CHECK(*t.find(key(1)) == 1);
  CHECK(t.find(key(2)) == nullptr);
  CHECK(t.erase(key(1)));
  CHECK(t.find(key(1)) == nullptr);
  CHECK(t.lookup(key(2), t0, make).outcome == UdpTable<int>::Outcome::created);
}

TEST_CASE("tun udp table: a flow is reaped after the idle timeout with no datagram either way",
          "[tun][udp]") {
  UdpTable<int> t(16, 1000ms);
  const auto t0 = std::chrono::steady_clock::time_point{} + 1h;
  const auto make = [] { return 7; };
  (void)t.lookup(key(1), t0, make);
  (void)t.lookup(key(2), t0, make);
  (void)t.lookup(key(3), t0, make);
  (void)t.lookup(key(1), t0 + 600ms, make);  // a datagram from the app
  CHECK(t.touch(key(2), t0 + 700ms));        // a reply to the app
  CHECK_FALSE(t.touch(key(9), t0 + 700ms));
  CHECK(t.expire(t0 + 999ms).empty());
  auto gone = t.expire(t0 + 1000ms);
  REQUIRE(gone.size() == 1);
  CHECK(gone[0].first == key(3));
  CHECK(gone[0].second == 7);
  CHECK(t.size() == 2);
  CHECK(t.expire(t0 + 1599ms).empty());
  CHECK(t.expire(t0 + 1600ms).size() == 1);  // key 1
  CHECK(t.expire(t0 + 1700ms).size() == 1);  // key 2
  CHECK(t.size() == 0);
  // A reaped 5-tuple that sends again is a new flow.
  CHECK(t.lookup(key(3), t0 + 2s, make).outcome == UdpTable<int>::Outcome::created);
}
