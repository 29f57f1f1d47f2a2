// SPDX-License-Identifier: Apache-2.0
#include "fake_net.hpp"

#include <rendr/common/bytes.hpp>
#include <rendr/engine/core/bridge.hpp>
#include <rendr/engine/errors.hpp>

#include <catch2/catch.hpp>

using namespace rendr;
using namespace rendr::engine;
using namespace rendr::engine::test;
using namespace std::chrono_literals;

namespace {

const TimePoint t0 = TimePoint{} + 1h;

BridgeTable make_table(std::size_t capacity = 4096, bool packet = true) {
  BridgeConfig cfg;
  cfg.capacity = capacity;
  cfg.accept_packet = packet;
  cfg.instance_id = make_id(3);
  auto t = BridgeTable::create(cfg);
  REQUIRE(t.ok());
  return std::move(t).value();
}

std::vector<std::byte> enc(const Frame& f) {
  std::vector<std::byte> out;
  REQUIRE(encode_frame(f, out).ok());
  return out;
}

Hello hello_for(std::uint8_t flow, std::uint32_t caps = 0) {
  return Hello{make_id(flow), make_id(2), caps, std::nullopt, false, std::nullopt};
}

BridgeTag tag_for(std::uint8_t flow, std::uint8_t expected = 3) {
  return BridgeTag{make_id(flow), make_id(2), make_id(expected), std::nullopt, false,
                   std::nullopt};
}

// reply_frame strips the stream prefix and decodes the listener's answer.
Frame reply_frame(const std::vector<std::byte>& reply) {
  REQUIRE(reply.size() > 2);
  auto f = decode_frame(std::span(reply).subspan(2));
  REQUIRE(f.ok());
  return *f;
}

}  // namespace

TEST_CASE("engine bridge: HELLO creates a flow, BRIDGE_TAG attaches to it",
          "[engine][bridge]") {
  auto table = make_table();
  auto r = table.accept(enc(hello_for(1)), {}, t0);
  REQUIRE(std::holds_alternative<BridgeAttached>(r));
  const auto& a = std::get<BridgeAttached>(r);
  CHECK(a.new_flow);
  CHECK(a.flow_id == make_id(1));
  FlowCore* flow = table.find(make_id(1));
  REQUIRE(flow != nullptr);
  CHECK(flow->state() == FlowState::active);
  CHECK_FALSE(flow->packet_mode());
  auto r2 = table.accept(enc(tag_for(1)), {}, t0);
  REQUIRE(std::holds_alternative<BridgeAttached>(r2));
  CHECK_FALSE(std::get<BridgeAttached>(r2).new_flow);
  CHECK(flow->path_ids().size() == 2);
  // A packet HELLO makes a packet flow.
  auto r3 = table.accept(enc(hello_for(5, kCapsPacketMode)), {Framing::datagram, "u", 0}, t0);
  REQUIRE(std::holds_alternative<BridgeAttached>(r3));
  CHECK(table.find(make_id(5))->packet_mode());
  CHECK(table.size() == 2);
}

TEST_CASE("engine bridge: rejections carry the right answer", "[engine][bridge]") {
  auto table = make_table(2, false);
  REQUIRE(std::holds_alternative<BridgeAttached>(table.accept(enc(hello_for(1)), {}, t0)));

  // The same client repeating its HELLO (lost HELLO_ACK): one more path, no new flow.
  auto again = table.accept(enc(hello_for(1)), {}, t0);
  REQUIRE(std::holds_alternative<BridgeAttached>(again));
  CHECK_FALSE(std::get<BridgeAttached>(again).new_flow);
  CHECK(table.find(make_id(1))->path_ids().size() == 2);

  // HELLO for the live flow_id from another instance: duplicate, BYE(proto_version).
  Hello other = hello_for(1);
  other.instance_id = make_id(8);
  auto dup = table.accept(enc(other), {}, t0);
  REQUIRE(std::holds_alternative<BridgeRejected>(dup));
  const auto& d = std::get<BridgeRejected>(dup);
  CHECK(d.error.code == make_error_code(errc::flow_mismatch));
  const auto bye = reply_frame(d.reply);
  REQUIRE(std::holds_alternative<Bye>(bye));
  CHECK(std::get<Bye>(bye).reason == ByeReason::proto_version);

  // BRIDGE_TAG expecting another instance: BRIDGE_ACK(instance_mismatch).
  auto inst = table.accept(enc(tag_for(1, 9)), {}, t0);
  REQUIRE(std::holds_alternative<BridgeRejected>(inst));
  const auto ack = reply_frame(std::get<BridgeRejected>(inst).reply);
  REQUIRE(std::holds_alternative<BridgeAck>(ack));
  CHECK(std::get<BridgeAck>(ack).code == BridgeAckCode::instance_mismatch);

  // Unknown flow: Retry (a HELLO may be racing), then unknown_flow on the final attempt.
  CHECK(std::holds_alternative<BridgeRetry>(table.accept(enc(tag_for(7)), {}, t0)));
  auto unknown = table.accept(enc(tag_for(7)), {}, t0 + 500ms, true);
  REQUIRE(std::holds_alternative<BridgeRejected>(unknown));
  CHECK(std::get<BridgeRejected>(unknown).error.code == make_error_code(errc::unknown_flow));
  const auto uack = reply_frame(std::get<BridgeRejected>(unknown).reply);
  CHECK(std::get<BridgeAck>(uack).code == BridgeAckCode::unknown_flow);

  // Not a rendr first frame: closed without an answer.
  auto junk = table.accept(enc(Probe{1, 1}), {}, t0);
  REQUIRE(std::holds_alternative<BridgeRejected>(junk));
  CHECK(std::get<BridgeRejected>(junk).error.code == make_error_code(errc::peer_protocol));
  CHECK(std::get<BridgeRejected>(junk).reply.empty());
  const std::vector<std::byte> garbage(3, std::byte{0xee});
  CHECK(std::holds_alternative<BridgeRejected>(table.accept(garbage, {}, t0)));

  // A packet HELLO on a stream-only listener.
  auto pk = table.accept(enc(hello_for(4, kCapsPacketMode)), {}, t0);
  REQUIRE(std::holds_alternative<BridgeRejected>(pk));
  CHECK(std::get<BridgeRejected>(pk).error.code == make_error_code(errc::wrong_mode));

  // Capacity 2.
  REQUIRE(std::holds_alternative<BridgeAttached>(table.accept(enc(hello_for(2)), {}, t0)));
  auto full = table.accept(enc(hello_for(3)), {}, t0);
  REQUIRE(std::holds_alternative<BridgeRejected>(full));
  CHECK(std::get<BridgeRejected>(full).error.code == make_error_code(errc::table_full));
  CHECK(table.size() == 2);
}

TEST_CASE("engine bridge: dead flows are reaped and their flow_id can come back",
          "[engine][bridge]") {
  auto table = make_table();
  REQUIRE(std::holds_alternative<BridgeAttached>(table.accept(enc(hello_for(1)), {}, t0)));
  FlowCore* flow = table.find(make_id(1));
  REQUIRE(flow != nullptr);
  CHECK(table.reap().empty());
  // The peer sends "unread" (SEQ 1) and BYE(normal) (SEQ 2): the flow ends cleanly.
  std::vector<std::byte> in;
  for (const Frame& f : {Frame{Data{1, as_bytes_of("unread"), false}},
                         Frame{Bye{2, ByeReason::normal}}}) {
    const auto frame = enc(f);
    append_stream_prefix(frame.size(), in);
    in.insert(in.end(), frame.begin(), frame.end());
  }
  REQUIRE(flow->on_receive(flow->path_ids().front(), in, t0).ok());
  REQUIRE(flow->state() == FlowState::dead);
  // Dead, but the final ACK is not flushed and "unread" is not read yet: kept.
  CHECK(table.reap().empty());
  std::vector<std::byte> out;
  for (PathId p : flow->path_ids()) {
    while (flow->poll_transmit(p, out, 1 << 16, t0) > 0) {
    }
  }
  CHECK(table.reap().empty());
  std::vector<std::byte> buf(64);
  auto rd = flow->read(buf, t0);
  REQUIRE(rd.ok());
  CHECK(rd->bytes == 6);
  const auto gone = table.reap();
  REQUIRE(gone.size() == 1);
  CHECK(gone[0] == make_id(1));
  CHECK(table.find(make_id(1)) == nullptr);
  CHECK(std::holds_alternative<BridgeAttached>(table.accept(enc(hello_for(1)), {}, t0)));
}
