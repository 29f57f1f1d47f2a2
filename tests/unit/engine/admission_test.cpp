// SPDX-License-Identifier: Apache-2.0
// The listener's admission decisions (engine/src/admission.hpp), step by step with a fake
// clock: which waiting carriers are closed, which half-open flows are evicted first, per-source
// limits, and that live flows are never evicted.
#include "admission.hpp"

#include <catch2/catch.hpp>

#include <array>

using namespace rendr;
using namespace rendr::detail;
using namespace std::chrono_literals;
using engine::Id128;
using engine::TimePoint;

namespace {

const TimePoint t0 = TimePoint{} + 1h;

SourceKey v4(std::uint8_t last) {
  const std::array<std::uint8_t, 4> a{10, 0, 0, last};
  return source_key(a);
}

Id128 id(std::uint8_t n) {
  Id128 i{};
  i[0] = n;
  return i;
}

AdmissionLimits small() {
  AdmissionLimits l;
  l.flows = 4;
  l.unaccepted = 3;
  l.half_open_per_source = 3;
  l.pending_carriers = 4;
  l.pending_per_source = 2;
  l.first_frame_timeout = 5s;
  return l;
}

// add: make room as the listener does (evicting what make_room names), then add the flow.
// Returns the evicted flows, or nullopt when the HELLO was refused.
std::optional<std::vector<Id128>> add(Admission& a, std::uint8_t n, const SourceKey& src,
                                      std::size_t carriers = 1) {
  std::vector<Id128> out;
  for (int i = 0; i < 16; ++i) {
    auto r = a.make_room(src);
    if (r.fits) {
      a.flow_added(id(n), src, carriers);
      return out;
    }
    if (!r.evict) {
      return std::nullopt;
    }
    out.push_back(*r.evict);
    a.evicted(*r.evict);
  }
  FAIL("make_room never settles");
  return std::nullopt;
}

}  // namespace

TEST_CASE("engine admission: source keys group IPv4, mapped IPv4 and IPv6 /64",
          "[engine][admission]") {
  const std::array<std::uint8_t, 4> a4{192, 0, 2, 7};
  const std::array<std::uint8_t, 16> mapped{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7};
  std::array<std::uint8_t, 16> v6a{0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1};
  auto v6b = v6a;
  v6b[15] = 0x99;  // same /64, other host
  auto v6c = v6a;
  v6c[7] = 3;  // another /64
  CHECK(source_key(a4) == source_key(mapped));
  CHECK(source_key(v6a) == source_key(v6b));
  CHECK(source_key(v6a) != source_key(v6c));
  CHECK(source_key(v6a) != source_key(a4));
}

TEST_CASE("engine admission: waiting carriers are bounded per source and in total, oldest "
          "first, and time out",
          "[engine][admission][carriers]") {
  Admission a(small());
  auto c1 = a.carrier_opened(v4(1), t0);
  auto c2 = a.carrier_opened(v4(1), t0 + 1s);
  CHECK(c1.close.empty());
  CHECK(c2.close.empty());
  // A third from the same source pushes out that source's oldest.
  auto c3 = a.carrier_opened(v4(1), t0 + 2s);
  REQUIRE(c3.close.size() == 1);
  CHECK(c3.close[0] == c1.id);
  // Other sources fill the listener's total (4); then the oldest overall goes.
  auto c4 = a.carrier_opened(v4(2), t0 + 2s);
  auto c5 = a.carrier_opened(v4(3), t0 + 2s);
  CHECK(c4.close.empty());
  CHECK(c5.close.empty());
  CHECK(a.stats().pending_carriers == 4);
  auto c6 = a.carrier_opened(v4(4), t0 + 3s);
  REQUIRE(c6.close.size() == 1);
  CHECK(c6.close[0] == c2.id);
  CHECK(a.stats().carriers_dropped == 2);
  // A carrier that delivered its first frame no longer counts.
  a.carrier_done(c3.id);
  a.carrier_done(c3.id);  // twice: ignored
  CHECK(a.stats().pending_carriers == 3);
  // First-frame timeout: 5 s after each one started.
  REQUIRE(a.next_deadline().has_value());
  CHECK(*a.next_deadline() == t0 + 7s);  // c4 and c5 started at t0 + 2 s
  CHECK(a.expire(t0 + 6s).empty());
  auto gone = a.expire(t0 + 7s);
  CHECK(gone == std::vector<Admission::CarrierId>{c4.id, c5.id});
  CHECK(*a.next_deadline() == t0 + 8s);
  CHECK(a.expire(t0 + 8s) == std::vector<Admission::CarrierId>{c6.id});
  CHECK_FALSE(a.next_deadline().has_value());
  CHECK(a.stats().first_frame_timeouts == 3);
  CHECK(a.stats().pending_carriers == 0);
}

TEST_CASE("engine admission: half-open flows go first - unaccepted without carriers, then "
          "accepted without carriers, then unaccepted - live flows never",
          "[engine][admission][flows]") {
  auto lim = small();
  lim.half_open_per_source = 100;  // only the table and the backlog bind here
  lim.unaccepted = 100;
  Admission a(lim);
  const auto src = v4(1);
  REQUIRE(add(a, 1, src));
  REQUIRE(add(a, 2, src));
  REQUIRE(add(a, 3, src));
  REQUIRE(add(a, 4, src));
  a.accepted(id(1));  // live: accepted with a carrier
  a.accepted(id(2));
  a.carriers(id(2), 0);  // accepted, carrier gone (rank 1)
  a.carriers(id(3), 0);  // never accepted, carrier gone (rank 0)
  // flow 4: not accepted, carrier (rank 2)
  CHECK(a.stats().half_open == 3);
  CHECK(a.stats().unaccepted == 2);

  auto e = add(a, 5, src);
  REQUIRE(e);
  CHECK(*e == std::vector<Id128>{id(3)});
  e = add(a, 6, src);
  REQUIRE(e);
  CHECK(*e == std::vector<Id128>{id(2)});
  e = add(a, 7, src);
  REQUIRE(e);
  CHECK(*e == std::vector<Id128>{id(4)});  // the oldest unaccepted with a carrier
  // A path coming back makes an accepted flow live again.
  a.accepted(id(5));
  a.accepted(id(6));
  a.accepted(id(7));
  a.carriers(id(7), 0);
  a.carriers(id(7), 1);
  CHECK(a.stats().half_open == 0);
  // Only live flows: refused, nobody evicted.
  CHECK_FALSE(add(a, 8, src));
  CHECK(a.stats().flows_refused == 1);
  CHECK(a.stats().flows == 4);
  // A live flow that ends frees its place.
  a.gone(id(1));
  CHECK(add(a, 8, src));
  CHECK(a.stats().flows_evicted == 3);
}

TEST_CASE("engine admission: flows not accepted yet are bounded (backlog), orphans first",
          "[engine][admission][flows]") {
  auto lim = small();
  lim.flows = 100;
  lim.half_open_per_source = 100;
  Admission a(lim);  // unaccepted: 3
  REQUIRE(add(a, 1, v4(1)));
  REQUIRE(add(a, 2, v4(2)));
  REQUIRE(add(a, 3, v4(3)));
  a.carriers(id(2), 0);
  auto e = add(a, 4, v4(4));
  REQUIRE(e);
  CHECK(*e == std::vector<Id128>{id(2)});
  e = add(a, 5, v4(5));
  REQUIRE(e);
  CHECK(*e == std::vector<Id128>{id(1)});
  // Accepted flows do not count against the backlog, even without carriers.
  a.accepted(id(3));
  a.carriers(id(3), 0);
  e = add(a, 6, v4(6));
  REQUIRE(e);
  CHECK(e->empty());
  CHECK(a.stats().unaccepted == 3);
}

TEST_CASE("engine admission: one source's half-open flows are bounded, others untouched",
          "[engine][admission][flows]") {
  auto lim = small();
  lim.flows = 100;
  lim.unaccepted = 100;
  Admission a(lim);  // 3 half-open per source
  REQUIRE(add(a, 1, v4(9)));  // another source, half-open
  for (std::uint8_t n = 10; n < 20; ++n) {
    auto e = add(a, n, v4(1), 0);
    REQUIRE(e);
    if (n >= 13) {
      CHECK(*e == std::vector<Id128>{id(static_cast<std::uint8_t>(n - 3))});
    }
  }
  CHECK(a.stats().flows == 4);  // flow 1 and the source's last three
  // A live flow from the source does not count against it.
  a.accepted(id(19));
  a.carriers(id(19), 1);
  auto e = add(a, 20, v4(1), 0);
  REQUIRE(e);
  CHECK(e->empty());
  // The evicted and the unknown are ignored by later reports.
  a.accepted(id(10));
  a.carriers(id(10), 3);
  a.gone(id(10));
  CHECK(a.stats().flows == 5);
}
