// SPDX-License-Identifier: Apache-2.0
// Listener key: the key block of HELLO / BRIDGE_TAG on the wire, sealing and checking
// (KeyChecker: good, wrong key, tampered, truncated, stale, replayed, unkeyed), and what a
// keyed dialer's FlowCore sends (docs/wire.md "Listener key").
#include "fake_net.hpp"

#include <rendr/engine/core/bridge.hpp>
#include <rendr/engine/core/listener_key.hpp>
#include <rendr/engine/core/wire.hpp>
#include <rendr/engine/errors.hpp>

#include <catch2/catch.hpp>

using namespace rendr;
using namespace rendr::engine;
using namespace rendr::engine::test;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t kNow = 1'800'000'000;  // listener's clock, Unix seconds

std::vector<std::uint8_t> key_of(std::uint8_t seed, std::size_t n = 32) {
  std::vector<std::uint8_t> k(n);
  for (std::size_t i = 0; i < n; ++i) {
    k[i] = static_cast<std::uint8_t>(seed + 7 * i);
  }
  return k;
}

Hello hello(std::uint8_t flow, std::optional<std::string> name = std::nullopt) {
  Hello h;
  h.flow_id = make_id(flow);
  h.instance_id = make_id(2);
  h.path_name = std::move(name);
  return h;
}

BridgeTag bridge(std::uint8_t flow) {
  BridgeTag t;
  t.bridge_id = make_id(flow);
  t.instance_id = make_id(2);
  t.expected_peer_instance_id = make_id(3);
  t.path_name.emplace(1, 'b');  // not = "b": GCC 12 warns (-Wrestrict) on that
  return t;
}

std::array<std::uint8_t, 8> nonce(std::uint8_t n) { return {0, 0, 0, 0, 0, 0, 0, n}; }

std::vector<std::byte> seal(const FirstFrame& f, const std::vector<std::uint8_t>& key,
                            std::uint64_t time = kNow, std::uint8_t n = 1) {
  auto s = seal_first_frame(f, key, static_cast<std::uint32_t>(time), nonce(n));
  REQUIRE(s.ok());
  return std::move(s).value();
}

FirstFrame first(std::span<const std::byte> wire) {
  auto f = classify_first_frame(wire);
  REQUIRE(f.ok());
  return *f;
}

KeyChecker checker(const std::vector<std::uint8_t>& key, std::size_t capacity = 1024) {
  return KeyChecker(key, 60s, capacity);
}

KeyVerdict check(KeyChecker& c, std::span<const std::byte> wire, std::uint64_t now = kNow) {
  return c.check(wire, first(wire), now);
}

}  // namespace

TEST_CASE("engine listener key: keyed frames round-trip and keep their layout",
          "[engine][key][wire]") {
  const auto k = key_of(1);
  for (const FirstFrame& f : {FirstFrame{hello(1)}, FirstFrame{hello(1, "tcp/a")},
                              FirstFrame{bridge(1)}}) {
    const auto wire = seal(f, k);
    auto d = decode_frame(wire);
    REQUIRE(d.ok());
    std::vector<std::byte> again;
    REQUIRE(encode_frame(*d, again).ok());
    CHECK(again == wire);
  }
  // HELLO: 36 B + str8 (always present, here empty) + 32 B block; caps gets kCapsKeyed.
  const auto h = seal(hello(1), k);
  CHECK(h.size() == kHeaderSize + 36 + 1 + kKeyAuthSize);
  const auto hf = std::get<Hello>(first(h));
  CHECK((hf.caps & kCapsKeyed) != 0);
  REQUIRE(hf.auth.has_value());
  CHECK(hf.auth->version == 1);
  CHECK(hf.auth->time == kNow);
  CHECK(hf.path_name == std::string());
  CHECK(seal(bridge(1), k).size() == kHeaderSize + 48 + 2 + kKeyAuthSize);

  // Reserved bytes set, a block cut short or one byte too many: malformed.
  auto bad = h;
  bad[kHeaderSize + 37 + 2] = std::byte{1};
  CHECK_FALSE(decode_frame(bad).ok());
  auto cut = h;
  cut.pop_back();
  CHECK_FALSE(decode_frame(cut).ok());
  auto longer = h;
  longer.push_back(std::byte{0});
  CHECK_FALSE(decode_frame(longer).ok());
  // The legacy forms carry no block.
  Hello legacy = hello(1);
  legacy.legacy = true;
  legacy.auth = KeyAuth{};
  std::vector<std::byte> out;
  CHECK_FALSE(encode_frame(legacy, out).ok());
  // Keys outside 16..64 bytes are refused.
  CHECK_FALSE(seal_first_frame(hello(1), key_of(1, 15), 1, nonce(1)).ok());
  CHECK_FALSE(seal_first_frame(hello(1), key_of(1, 65), 1, nonce(1)).ok());
}

TEST_CASE("engine listener key: a sealed frame passes once - a wrong key or a tampered or "
          "truncated frame does not",
          "[engine][key]") {
  const auto k = key_of(1);
  auto c = checker(k);
  const auto h = seal(hello(1, "p"), k);
  CHECK(check(c, h) == KeyVerdict::ok);
  CHECK(check(c, h) == KeyVerdict::replayed);
  CHECK(check(c, seal(bridge(1), k)) == KeyVerdict::ok);

  // Another key.
  CHECK(check(c, seal(hello(2), key_of(9))) == KeyVerdict::bad);
  CHECK(check(c, seal(hello(2), key_of(1, 16))) == KeyVerdict::bad);  // a prefix of the key
  // Every byte of the frame is covered: flip each one that still decodes.
  const auto fresh = seal(hello(3, "p"), k, kNow, 7);
  int flipped = 0;
  for (std::size_t i = 0; i < fresh.size(); ++i) {
    auto t = fresh;
    t[i] ^= std::byte{0x01};
    auto f = classify_first_frame(t);
    if (!f.ok()) {
      continue;
    }
    flipped += 1;
    const auto v = c.check(t, *f, kNow);
    INFO("byte " << i);
    CHECK((v == KeyVerdict::bad || v == KeyVerdict::missing));
  }
  CHECK(flipped > 60);
  CHECK(check(c, fresh) == KeyVerdict::ok);  // none of the tampered ones was remembered
  // Truncated: the block gone entirely is an unkeyed frame; a shorter tag does not decode.
  auto stripped = fresh;
  stripped.resize(stripped.size() - kKeyAuthSize);
  CHECK(check(c, stripped) == KeyVerdict::missing);
  auto short_tag = fresh;
  short_tag.resize(short_tag.size() - 8);
  CHECK_FALSE(classify_first_frame(short_tag).ok());
  // An unknown block version or key id is not this key.
  auto ver = seal(hello(4), k);
  ver[kHeaderSize + 37] = std::byte{2};
  CHECK(check(c, ver) == KeyVerdict::bad);
}

TEST_CASE("engine listener key: unkeyed peers are refused by a keyed listener",
          "[engine][key]") {
  auto c = checker(key_of(1));
  std::vector<std::byte> wire;
  REQUIRE(encode_frame(hello(1), wire).ok());
  CHECK(check(c, wire) == KeyVerdict::missing);
  Hello legacy = hello(1);
  legacy.legacy = true;
  wire.clear();
  REQUIRE(encode_frame(legacy, wire).ok());
  CHECK(check(c, wire) == KeyVerdict::missing);
  BridgeTag tag = bridge(1);
  wire.clear();
  REQUIRE(encode_frame(tag, wire).ok());
  CHECK(check(c, wire) == KeyVerdict::missing);
  tag.legacy = true;
  tag.path_name.reset();
  wire.clear();
  REQUIRE(encode_frame(tag, wire).ok());
  CHECK(check(c, wire) == KeyVerdict::missing);
}

TEST_CASE("engine listener key: times outside the skew are stale and replays stay refused "
          "while they could pass",
          "[engine][key][replay]") {
  const auto k = key_of(1);
  auto c = checker(k);
  CHECK(check(c, seal(hello(1), k, kNow - 61)) == KeyVerdict::stale);
  CHECK(check(c, seal(hello(1), k, kNow + 61)) == KeyVerdict::stale);
  const auto early = seal(hello(1), k, kNow - 60);
  CHECK(check(c, early) == KeyVerdict::ok);
  // Remembered while its time is within the window...
  CHECK(check(c, early, kNow) == KeyVerdict::replayed);
  // ...and stale after: forgetting it then is safe.
  CHECK(check(c, seal(hello(2), k, kNow + 1), kNow + 1) == KeyVerdict::ok);
  CHECK(check(c, early, kNow + 1) == KeyVerdict::stale);
  CHECK(c.remembered() == 1);

  // A full cache forgets its oldest entry and refuses everything up to that time.
  auto small = checker(k, 2);
  const auto a = seal(hello(1), k, kNow - 10);
  const auto b = seal(hello(2), k, kNow - 5);
  CHECK(check(small, a) == KeyVerdict::ok);
  CHECK(check(small, b) == KeyVerdict::ok);
  CHECK(check(small, seal(hello(3), k, kNow)) == KeyVerdict::ok);
  CHECK(small.remembered() == 2);
  CHECK(check(small, a) == KeyVerdict::stale);  // forgotten, yet still refused
  CHECK(check(small, seal(hello(4), k, kNow - 10, 2)) == KeyVerdict::stale);
  CHECK(check(small, b) == KeyVerdict::replayed);
}

TEST_CASE("engine listener key: a keyed dialer's HELLO and BRIDGE_TAG pass and an unkeyed "
          "table ignores the block",
          "[engine][key][flow]") {
  FlowConfig cfg = fast_probe_config();
  cfg.listener_key = key_of(1);
  REQUIRE(validate_config(cfg).ok());
  auto cl = FlowCore::client(cfg, make_id(1), make_id(2));
  REQUIRE(cl.ok());
  FlowCore& client = *cl;
  const TimePoint t0 = TimePoint{} + 1h;
  PathOptions po;
  po.wall = std::chrono::system_clock::time_point{} + std::chrono::seconds(kNow);
  auto p1 = client.add_path(po, t0);
  REQUIRE(p1.ok());
  std::vector<std::byte> out;
  REQUIRE(client.poll_transmit(*p1, out, 1 << 16, t0 + 3s) > 0);
  const auto hello_wire = std::span<const std::byte>(out).subspan(kStreamPrefixSize);
  auto c = checker(cfg.listener_key);
  const auto ff = first(hello_wire);
  CHECK(std::get<Hello>(ff).auth->time == kNow);  // dated by add_path's wall clock
  CHECK(c.check(hello_wire, ff, kNow + 3) == KeyVerdict::ok);

  // An unkeyed listener (this version) takes it and does not echo kCapsKeyed.
  BridgeConfig bc;
  bc.instance_id = make_id(3);
  auto table = BridgeTable::create(bc);
  REQUIRE(table.ok());
  auto r = table->accept(hello_wire, {}, t0);
  REQUIRE(std::holds_alternative<BridgeAttached>(r));
  FlowCore* server = table->find(make_id(1));
  REQUIRE(server != nullptr);
  std::vector<std::byte> ack;
  REQUIRE(server->poll_transmit(1, ack, 1 << 16, t0) > 0);
  REQUIRE(client.on_receive(*p1, ack, t0 + 1ms).ok());
  CHECK(client.state() == FlowState::active);
  CHECK((client.stats().peer_caps & kCapsKeyed) == 0);

  // The next path's BRIDGE_TAG is sealed too, 10 s later by the wall clock.
  auto p2 = client.add_path(po, t0 + 10s);
  REQUIRE(p2.ok());
  out.clear();
  REQUIRE(client.poll_transmit(*p2, out, 1 << 16, t0 + 10s) > 0);
  const auto tag_wire = std::span<const std::byte>(out).subspan(kStreamPrefixSize);
  const auto tf = first(tag_wire);
  REQUIRE(std::holds_alternative<BridgeTag>(tf));
  CHECK(c.check(tag_wire, tf, kNow + 10) == KeyVerdict::ok);

  // Too short a key is a config error.
  cfg.listener_key = key_of(1, 8);
  CHECK_FALSE(validate_config(cfg).ok());
}
