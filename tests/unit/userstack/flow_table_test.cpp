// SPDX-License-Identifier: Apache-2.0
// FlowTable: per-flow random offsets and the bounded hold queue of a frozen flow.
#include <rendr/userstack/flow_table.hpp>

#include "support/packet.hpp"

#include <catch2/catch.hpp>

#include <set>

using namespace rendr;
using namespace rendr::userstack;

namespace {
FourTuple tuple(int i) {
  return FourTuple{test::endpoint("198.51.100.7:443"),
                   test::endpoint(("10.1.0.2:" + std::to_string(40000 + i)).c_str())};
}
std::vector<std::byte> bytes(std::size_t n, int v) {
  return std::vector<std::byte>(n, static_cast<std::byte>(v));
}
}  // namespace

TEST_CASE("userstack each flow gets its own offset and a retransmitted SYN keeps it",
          "[userstack][flows][offset]") {
  FlowTable t(42);
  std::set<std::uint32_t> seen;
  for (int i = 0; i < 100; ++i) {
    seen.insert(t.on_syn(tuple(i)).offset);
  }
  CHECK(seen.size() == 100);
  std::uint32_t first = t.find(tuple(7))->offset;
  CHECK(t.on_syn(tuple(7)).offset == first);
  // Seeded: the same seed gives the same offsets (deterministic tests), another seed not.
  FlowTable again(42);
  FlowTable other(43);
  CHECK(again.on_syn(tuple(0)).offset == FlowTable(42).on_syn(tuple(0)).offset);
  CHECK(other.on_syn(tuple(0)).offset != again.on_syn(tuple(1)).offset);
}

TEST_CASE("userstack a frozen flow holds its packets in order and thaw returns them",
          "[userstack][flows][freeze]") {
  FlowTable t(1);
  t.on_syn(tuple(1));
  CHECK(t.inbound(tuple(1), bytes(10, 1)) == InboundAction::deliver);
  t.freeze(tuple(1));
  CHECK(t.inbound(tuple(1), bytes(10, 2)) == InboundAction::held);
  CHECK(t.inbound(tuple(1), bytes(20, 3)) == InboundAction::held);
  // Other flows are unaffected.
  CHECK(t.inbound(tuple(2), bytes(10, 9)) == InboundAction::deliver);
  auto held = t.thaw(tuple(1));
  REQUIRE(held.size() == 2);
  CHECK(held[0] == bytes(10, 2));
  CHECK(held[1] == bytes(20, 3));
  CHECK(t.inbound(tuple(1), bytes(10, 4)) == InboundAction::deliver);
  CHECK(t.thaw(tuple(1)).empty());
}

TEST_CASE("userstack the hold queue is bounded by packets and bytes",
          "[userstack][flows][freeze]") {
  FlowTable t(1, HoldLimits{3, 100});
  t.freeze(tuple(1));
  CHECK(t.inbound(tuple(1), bytes(40, 1)) == InboundAction::held);
  CHECK(t.inbound(tuple(1), bytes(40, 2)) == InboundAction::held);
  CHECK(t.inbound(tuple(1), bytes(40, 3)) == InboundAction::dropped);  // 120 > 100 bytes
  CHECK(t.inbound(tuple(1), bytes(10, 4)) == InboundAction::held);
  CHECK(t.inbound(tuple(1), bytes(1, 5)) == InboundAction::dropped);  // 4 > 3 packets
  CHECK(t.find(tuple(1))->held_dropped == 2);
  CHECK(t.thaw(tuple(1)).size() == 3);
  // Freezing an unknown flow creates it (offset 0) so its packets are held from the start.
  t.freeze(tuple(5));
  CHECK(t.find(tuple(5))->offset == 0);
  CHECK(t.inbound(tuple(5), bytes(1, 1)) == InboundAction::held);
}

TEST_CASE("userstack a frozen flow also holds what lwIP emits, for thaw or discard",
          "[userstack][flows][freeze]") {
  FlowTable t(1, HoldLimits{2, 1000});
  t.on_syn(tuple(1));
  CHECK(t.outbound(tuple(1), bytes(10, 1)) == InboundAction::deliver);
  CHECK(t.outbound(tuple(9), bytes(10, 1)) == InboundAction::deliver);  // unknown flow
  t.freeze(tuple(1));
  CHECK(t.outbound(tuple(1), bytes(10, 2)) == InboundAction::held);
  CHECK(t.outbound(tuple(1), bytes(10, 3)) == InboundAction::held);
  CHECK(t.outbound(tuple(1), bytes(10, 4)) == InboundAction::dropped);  // limit: 2 packets
  auto out = t.take_outbound(tuple(1));
  REQUIRE(out.size() == 2);
  CHECK(out[0] == bytes(10, 2));
  CHECK(out[1] == bytes(10, 3));
  CHECK(t.take_outbound(tuple(1)).empty());
  // Still frozen until thaw: inbound keeps being held.
  CHECK(t.inbound(tuple(1), bytes(5, 5)) == InboundAction::held);
  CHECK(t.thaw(tuple(1)).size() == 1);
  CHECK(t.outbound(tuple(1), bytes(10, 6)) == InboundAction::deliver);
}
