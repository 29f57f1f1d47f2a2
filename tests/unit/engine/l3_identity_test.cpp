// SPDX-License-Identifier: Apache-2.0
// The L3 identity (docs/wire.md "L3 identity"): the value, its strict 40-byte record codec
// field by field, its control frame, and its journey on a flow through FakeNet (fake clock):
// negotiated by caps bits 1 + 14, sent once as SEQ 1, replayed across path deaths and delivered
// once, refused with bad_l3_identity (that flow only) when malformed or unexpected.
#include "fake_net.hpp"

#include <rendr/engine/errors.hpp>
#include <rendr/engine/core/flow.hpp>
#include <rendr/engine/core/wire.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

using namespace rendr;
using namespace rendr::engine;
using namespace rendr::engine::test;
using namespace std::chrono_literals;

namespace {

L3Identity v4_identity() {
  auto id = make_l3_identity(6, "10.1.2.3:40000", "192.0.2.80:443");
  INFO((id.ok() ? std::string("-") : id.error().message()));
  REQUIRE(id.ok());
  return *id;
}

L3Identity v6_identity() {
  auto id = make_l3_identity(17, "[2001:db8::1]:5353", "[2001:db8:1::53]:53");
  INFO((id.ok() ? std::string("-") : id.error().message()));
  REQUIRE(id.ok());
  return *id;
}

L3Record record_of(const L3Identity& id) {
  auto r = encode_l3_identity(id);
  INFO((r.ok() ? std::string("-") : r.error().message()));
  REQUIRE(r.ok());
  return *r;
}

void require_bad_record(std::span<const std::byte> rec, const std::string& says) {
  auto d = decode_l3_identity(rec);
  REQUIRE_FALSE(d.ok());
  INFO(d.error().message());
  CHECK(d.error().code == make_error_code(errc::bad_l3_identity));
  CHECK(d.error().message().find(says) != std::string::npos);
}

std::vector<std::byte> framed(const Frame& f) {
  std::vector<std::byte> frame;
  REQUIRE(encode_frame(f, frame).ok());
  std::vector<std::byte> out;
  append_stream_prefix(frame.size(), out);
  out.insert(out.end(), frame.begin(), frame.end());
  return out;
}

FlowConfig l3_server_config() {
  FlowConfig c = fast_probe_config();
  c.caps |= kCapsL3Identity | kCapsL3Record;
  return c;
}

FlowConfig l3_client_config(const L3Identity& id) {
  FlowConfig c = fast_probe_config();
  c.l3_identity = id;
  return c;
}

// A server core that negotiated the record with a hand-made HELLO (caps 1 + 14), for feeding
// it hostile frames directly.
FlowCore l3_server(const FlowConfig& cfg, std::uint32_t hello_caps, TimePoint now) {
  Hello h;
  h.flow_id = make_id(1);
  h.instance_id = make_id(2);
  h.caps = hello_caps;
  return server_from_hello(cfg, framed(h), now);
}

std::size_t read_all(FlowCore& c, std::string& into, TimePoint now) {
  std::vector<std::byte> buf(4096);
  std::size_t total = 0;
  while (true) {
    auto r = c.read(buf, now);
    if (!r.ok() || r->bytes == 0) {
      return total;
    }
    into.append(reinterpret_cast<const char*>(buf.data()), r->bytes);
    total += r->bytes;
  }
}

}  // namespace

TEST_CASE("engine l3 identity: values from address strings, checks and names",
          "[engine][l3id]") {
  const auto v4 = v4_identity();
  CHECK(v4.family == 4);
  CHECK(v4.proto == 6);
  CHECK(v4.src[0] == 10);
  CHECK(v4.src[3] == 3);
  CHECK(v4.src_port == 40000);
  CHECK(v4.dst_port == 443);
  CHECK(to_string(v4) == "tcp 10.1.2.3:40000 -> 192.0.2.80:443");
  const auto v6 = v6_identity();
  CHECK(v6.family == 6);
  CHECK(to_string(v6) == "udp [2001:db8::1]:5353 -> [2001:db8:1::53]:53");

  for (const auto& [proto, src, dst] : std::vector<std::tuple<int, std::string, std::string>>{
           {6, "10.0.0.1:1", "[2001:db8::1]:2"},   // mixed families
           {6, "10.0.0.1", "10.0.0.2:80"},          // no port
           {6, "10.0.0.1:65536", "10.0.0.2:80"},    // port out of range
           {6, "10.0.0.300:1", "10.0.0.2:80"},      // not an address
           {6, "2001:db8::1:80", "10.0.0.2:80"},    // v6 without brackets
           {6, "[::ffff:10.0.0.1]:1", "[::1]:2"},   // v4-mapped
           {2, "10.0.0.1:1", "10.0.0.2:2"},         // unknown protocol
           {58, "10.0.0.1:1", "10.0.0.2:2"},        // ICMPv6 over IPv4
           {1, "[::1]:1", "[::2]:2"},               // ICMP over IPv6
       }) {
    INFO(proto << " " << src << " -> " << dst);
    auto id = make_l3_identity(static_cast<std::uint8_t>(proto), src, dst);
    REQUIRE_FALSE(id.ok());
    CHECK(id.error().code == std::make_error_code(std::errc::invalid_argument));
  }
  // A FlowConfig with an identity the record cannot carry is refused up front.
  FlowConfig c;
  L3Identity odd = v4;
  odd.family = 5;
  c.l3_identity = odd;
  auto st = validate_config(c);
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().code == make_error_code(errc::invalid_config));
}

TEST_CASE("engine l3 identity: the 40-byte record layout, v4 and v6", "[engine][l3id][wire]") {
  const auto r4 = record_of(v4_identity());
  const auto at = [](const L3Record& r, std::size_t i) { return static_cast<int>(r[i]); };
  CHECK(at(r4, 0) == 1);   // version
  CHECK(at(r4, 1) == 6);   // proto
  CHECK(at(r4, 2) == 4);   // family
  CHECK(at(r4, 3) == 0);   // reserved
  CHECK(at(r4, 4) == 0x9c);  // 40000 BE
  CHECK(at(r4, 5) == 0x40);
  CHECK(at(r4, 6) == 0x01);  // 443 BE
  CHECK(at(r4, 7) == 0xbb);
  CHECK((at(r4, 8) == 10 && at(r4, 9) == 1 && at(r4, 10) == 2 && at(r4, 11) == 3));
  CHECK(std::all_of(r4.begin() + 12, r4.begin() + 24, [](std::byte b) { return b == std::byte{0}; }));
  CHECK((at(r4, 24) == 192 && at(r4, 25) == 0 && at(r4, 26) == 2 && at(r4, 27) == 80));
  CHECK(std::all_of(r4.begin() + 28, r4.end(), [](std::byte b) { return b == std::byte{0}; }));
  auto d4 = decode_l3_identity(r4);
  REQUIRE(d4.ok());
  CHECK(*d4 == v4_identity());

  const auto r6 = record_of(v6_identity());
  CHECK(at(r6, 1) == 17);
  CHECK(at(r6, 2) == 6);
  CHECK((at(r6, 8) == 0x20 && at(r6, 9) == 0x01 && at(r6, 23) == 0x01));
  CHECK((at(r6, 24) == 0x20 && at(r6, 39) == 0x53));
  auto d6 = decode_l3_identity(r6);
  REQUIRE(d6.ok());
  CHECK(*d6 == v6_identity());
}

TEST_CASE("engine l3 identity: the record decoder refuses every bad field and length",
          "[engine][l3id][wire]") {
  const auto good4 = record_of(v4_identity());
  const auto good6 = record_of(v6_identity());
  for (std::size_t len : {0UL, 1UL, 8UL, 39UL, 41UL, 80UL, 255UL}) {
    INFO("length " << len);
    std::vector<std::byte> rec(len, std::byte{0});
    std::copy_n(good4.begin(), std::min(len, good4.size()), rec.begin());
    require_bad_record(rec, "expected 40");
  }
  const auto mutate = [](L3Record r, std::size_t i, int v) {
    r[i] = static_cast<std::byte>(v);
    return r;
  };
  require_bad_record(mutate(good4, 0, 0), "version 0");
  require_bad_record(mutate(good4, 0, 2), "version 2");
  require_bad_record(mutate(good4, 1, 0), "protocol 0");
  require_bad_record(mutate(good4, 1, 2), "protocol 2");
  require_bad_record(mutate(good4, 1, 58), "ICMPv6");
  require_bad_record(mutate(good6, 1, 1), "ICMP) with family 6");
  require_bad_record(mutate(good4, 2, 0), "family 0");
  require_bad_record(mutate(good4, 2, 5), "family 5");
  require_bad_record(mutate(good4, 3, 1), "reserved byte 3");
  require_bad_record(mutate(good4, 12, 1), "IPv4 address with nonzero");
  require_bad_record(mutate(good4, 23, 1), "IPv4 address with nonzero");
  require_bad_record(mutate(good4, 28, 1), "IPv4 address with nonzero");
  require_bad_record(mutate(good4, 39, 1), "IPv4 address with nonzero");
  // IPv4-mapped IPv6 (::ffff:a.b.c.d) is an alias of family 4: refused on either side.
  for (std::size_t base : {8UL, 24UL}) {
    L3Record m = good6;
    std::fill(m.begin() + static_cast<std::ptrdiff_t>(base),
              m.begin() + static_cast<std::ptrdiff_t>(base + 16), std::byte{0});
    m[base + 10] = std::byte{0xff};
    m[base + 11] = std::byte{0xff};
    m[base + 15] = std::byte{1};
    require_bad_record(m, "IPv4-mapped");
  }
  // Ports and the addresses themselves are free: any value round-trips.
  L3Record ports = mutate(mutate(good4, 4, 0xff), 7, 0);
  auto d = decode_l3_identity(ports);
  REQUIRE(d.ok());
  auto again = encode_l3_identity(*d);
  REQUIRE(again.ok());
  CHECK(*again == ports);
}

TEST_CASE("engine l3 identity: control frame 0x40 is sequenced and opaque up to 255 bytes",
          "[engine][l3id][wire]") {
  const auto rec = record_of(v4_identity());
  std::vector<std::byte> w;
  REQUIRE(encode_frame(L3IdentityFrame{1, rec}, w).ok());
  REQUIRE(w.size() == kHeaderSize + kL3RecordSize);
  CHECK(static_cast<int>(w[0]) == 0x20);
  CHECK(static_cast<int>(w[1]) == 0x40);
  CHECK(static_cast<int>(w[3]) == 1);
  auto f = decode_frame(w);
  REQUIRE(f.ok());
  const auto* l = std::get_if<L3IdentityFrame>(&*f);
  REQUIRE(l != nullptr);
  CHECK(l->seq == 1);
  CHECK(std::equal(l->record.begin(), l->record.end(), rec.begin(), rec.end()));
  CHECK(std::string(frame_name(*f)) == "l3_identity");
  // SEQ 0 (out of band) is malformed; so is an encoder asked for it.
  std::vector<std::byte> oob = w;
  oob[3] = std::byte{0};
  auto bad = decode_frame(oob);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == make_error_code(errc::malformed_frame));
  std::vector<std::byte> sink;
  CHECK_FALSE(encode_frame(L3IdentityFrame{0, rec}, sink).ok());
  // A short record is a valid frame (its record check comes later, on the flow); over 255 not.
  std::vector<std::byte> small;
  REQUIRE(encode_frame(L3IdentityFrame{2, std::span(rec).first(3)}, small).ok());
  CHECK(decode_frame(small).ok());
  std::vector<std::byte> big(256, std::byte{1});
  CHECK_FALSE(encode_frame(L3IdentityFrame{2, big}, sink).ok());
  std::vector<std::byte> huge = w;
  huge.resize(kHeaderSize + 256, std::byte{0});
  auto too = decode_frame(huge);
  REQUIRE_FALSE(too.ok());
  CHECK(too.error().code == make_error_code(errc::frame_too_large));
}

TEST_CASE("engine l3 identity: a stream flow carries the record as SEQ 1 ahead of its data",
          "[engine][l3id][flow]") {
  const auto id = v6_identity();
  FakeNet net(l3_client_config(id), l3_server_config());
  net.add_link({});
  // Written before the handshake: it queues behind the record.
  const std::string msg = "hello through the identity";
  REQUIRE(net.client.write(std::as_bytes(std::span(msg)), net.now).ok());
  std::string got;
  REQUIRE(net.run_until(
      [&] {
        if (net.server) {
          read_all(*net.server, got, net.now);
        }
        return got.size() == msg.size();
      },
      2s));
  CHECK(got == msg);
  REQUIRE(net.server->l3_identity().has_value());
  CHECK(*net.server->l3_identity() == id);
  CHECK_FALSE(net.server->l3_identity_pending());
  CHECK(*net.client.l3_identity() == id);
  const auto cs = net.client.stats();
  CHECK((cs.peer_caps & (kCapsL3Identity | kCapsL3Record)) == (kCapsL3Identity | kCapsL3Record));
  CHECK(cs.published_next == 3);  // SEQ 1 the record, SEQ 2 the message
  CHECK(net.server->stats().l3_identity == id);
}

TEST_CASE("engine l3 identity: the server holds the flow pending until the record is in",
          "[engine][l3id][flow]") {
  FakeNet net(l3_client_config(v4_identity()), l3_server_config());
  net.add_link({});
  REQUIRE(net.run_until([&] { return net.server.has_value(); }, 1s));
  // The HELLO made the server flow; the record follows one round trip later.
  CHECK(net.server->l3_identity_pending());
  CHECK_FALSE(net.server->l3_identity().has_value());
  REQUIRE(net.run_until([&] { return net.server->l3_identity().has_value(); }, 1s));
  CHECK_FALSE(net.server->l3_identity_pending());
}

TEST_CASE("engine l3 identity: the record lost with its path is replayed on the next, once",
          "[engine][l3id][flow]") {
  const auto id = v4_identity();
  FlowConfig cc = l3_client_config(id);
  FakeNet net(cc, l3_server_config());
  const int first = net.add_link({});
  // Step until the client's handshake is done: the record is now committed to path 1 only.
  REQUIRE(net.run_until(
      [&] {
        return std::any_of(net.client_events.begin(), net.client_events.end(), [](const auto& e) {
          return std::holds_alternative<EvHandshakeDone>(e);
        });
      },
      1s));
  // The path dies silently before the record arrived (it is one link delay away).
  net.blackhole(first);
  CHECK_FALSE(net.server->l3_identity().has_value());
  const std::string msg = "after the path death";
  REQUIRE(net.client.write(std::as_bytes(std::span(msg)), net.now).ok());
  net.add_link({});  // a re-dial: BRIDGE_TAG, then the ledger (record first) is replayed
  std::string got;
  REQUIRE(net.run_until(
      [&] {
        read_all(*net.server, got, net.now);
        return got.size() == msg.size();
      },
      5s));
  CHECK(got == msg);
  REQUIRE(net.server->l3_identity().has_value());
  CHECK(*net.server->l3_identity() == id);
  CHECK(net.server->state() != FlowState::dead);
  CHECK(net.client.stats().replayed_frames >= 1);
}

TEST_CASE("engine l3 identity: the record arriving twice (two paths) is applied once",
          "[engine][l3id][flow]") {
  const TimePoint t0 = TimePoint{} + 1h;
  FlowCore s = l3_server(l3_server_config(), kCapsL3Identity | kCapsL3Record, t0);
  const PathId p1 = s.path_ids().front();
  BridgeTag tag;
  tag.bridge_id = make_id(1);
  tag.instance_id = make_id(2);
  tag.expected_peer_instance_id = make_id(3);
  auto p2 = s.accept_bridge(tag, PathOptions{}, t0);
  REQUIRE(p2.ok());
  const auto rec = record_of(v4_identity());
  REQUIRE(s.on_receive(p1, framed(L3IdentityFrame{1, rec}), t0).ok());
  REQUIRE(s.l3_identity().has_value());
  // The replay on the second path (race mode, or a switch before the ACK): a duplicate by SEQ,
  // even with other bytes in it - the first admitted record stands.
  const auto other = record_of(v6_identity());
  REQUIRE(s.on_receive(*p2, framed(L3IdentityFrame{1, other}), t0).ok());
  REQUIRE(s.on_receive(*p2, framed(L3IdentityFrame{1, rec}), t0).ok());
  CHECK(s.stats().recv_dups == 2);
  CHECK(s.state() == FlowState::active);
  CHECK(*s.l3_identity() == v4_identity());
}

TEST_CASE("engine l3 identity: a packet flow carries it too", "[engine][l3id][flow]") {
  const auto id = v4_identity();
  FlowConfig cc = l3_client_config(id);
  cc.caps |= kCapsPacketMode;
  cc.max_payload = 1200;  // datagram carriers take small frames
  FlowConfig sc = l3_server_config();
  sc.caps |= kCapsPacketMode;
  sc.max_payload = 1200;
  FakeNet net(cc, sc);
  net.add_link({.framing = Framing::datagram});
  const std::string pkt = "one datagram";
  REQUIRE(net.client.write_packet(std::as_bytes(std::span(pkt)), net.now).ok());
  std::vector<std::byte> got;
  REQUIRE(net.run_until(
      [&] {
        if (got.empty() && net.server && net.server->packet_ready()) {
          REQUIRE(net.server->read_packet(got, net.now).ok());
        }
        return !got.empty();
      },
      2s));
  CHECK(std::string(reinterpret_cast<const char*>(got.data()), got.size()) == pkt);
  REQUIRE(net.server->l3_identity().has_value());
  CHECK(*net.server->l3_identity() == id);
}

TEST_CASE("engine l3 identity: a peer that does not echo caps 1 + 14 ends the dial clearly",
          "[engine][l3id][flow]") {
  FlowConfig sc = fast_probe_config();  // a server that does not read records
  sc.caps |= kCapsL3Identity;           // (like a v0.3 peer: echoes bit 1 only)
  FakeNet net(l3_client_config(v4_identity()), sc);
  net.add_link({});
  REQUIRE(net.run_until(
      [&] {
        return net.client.state() == FlowState::dead && net.server &&
               net.server->state() == FlowState::dead;
      },
      2s));
  REQUIRE(net.client.close_error());
  CHECK(net.client.close_error()->code == make_error_code(errc::peer_unsupported));
  // The server flow heard BYE(proto_version) at SEQ 1 and ended at once, without a record.
  REQUIRE(net.server->close_error());
  CHECK(net.server->close_error()->code == make_error_code(errc::peer_proto_version));
  CHECK_FALSE(net.server->l3_identity().has_value());
}

TEST_CASE("engine l3 identity: hostile records end that flow with bad_l3_identity",
          "[engine][l3id][hostile]") {
  const TimePoint t0 = TimePoint{} + 1h;
  const auto good = record_of(v4_identity());
  const std::uint32_t both = kCapsL3Identity | kCapsL3Record;
  struct Case {
    std::string name;
    std::uint32_t hello_caps;
    FlowConfig cfg;
    std::vector<std::vector<std::byte>> frames;
    std::string says;
  };
  L3Record bad_family = good;
  bad_family[2] = std::byte{9};
  const std::string data = "data";
  const auto payload = std::as_bytes(std::span(data));
  std::vector<Case> cases = {
      {"bad family", both, l3_server_config(), {framed(L3IdentityFrame{1, bad_family})},
       "family 9"},
      {"short record", both, l3_server_config(),
       {framed(L3IdentityFrame{1, std::span(good).first(39)})}, "39 bytes"},
      {"data instead of the record", both, l3_server_config(), {framed(Data{1, payload, false})},
       "is not the L3 identity record"},
      {"record twice", both, l3_server_config(),
       {framed(L3IdentityFrame{1, good}), framed(L3IdentityFrame{2, good})}, "at SEQ 2"},
      {"record not negotiated", 0, l3_server_config(), {framed(L3IdentityFrame{1, good})},
       "did not negotiate"},
      {"record to a server without support", both, fast_probe_config(),
       {framed(L3IdentityFrame{1, good})}, "did not negotiate"},
  };
  for (auto& c : cases) {
    INFO(c.name);
    FlowCore s = l3_server(c.cfg, c.hello_caps, t0);
    const PathId p = s.path_ids().front();
    for (const auto& f : c.frames) {
      REQUIRE(s.on_receive(p, f, t0).ok());
    }
    CHECK(s.state() == FlowState::dead);
    REQUIRE(s.close_error());
    INFO(s.close_error()->message());
    CHECK(s.close_error()->code == make_error_code(errc::bad_l3_identity));
    CHECK(s.close_error()->message().find(c.says) != std::string::npos);
    CHECK_FALSE(s.l3_identity_pending());
    // The peer is told: a BYE(proto_version) goes out on the path.
    std::vector<std::byte> out;
    while (s.poll_transmit(p, out, 1 << 20, t0) > 0) {
    }
    StreamDeframer d;
    d.feed(out);
    bool bye = false;
    while (auto fr = d.next()) {
      if (!fr->has_value()) {
        break;
      }
      auto dec = decode_frame(**fr);
      REQUIRE(dec.ok());
      if (const auto* b = std::get_if<Bye>(&*dec)) {
        bye = b->reason == ByeReason::proto_version;
      }
    }
    CHECK(bye);
  }
  // A record at SEQ 1 ahead of data that arrived first (reordered) is fine.
  FlowCore s = l3_server(l3_server_config(), both, t0);
  const PathId p = s.path_ids().front();
  REQUIRE(s.on_receive(p, framed(Data{2, payload, false}), t0).ok());
  CHECK(s.l3_identity_pending());
  REQUIRE(s.on_receive(p, framed(L3IdentityFrame{1, good}), t0).ok());
  CHECK(s.state() == FlowState::active);
  CHECK(*s.l3_identity() == v4_identity());
  std::string got;
  read_all(s, got, t0);
  CHECK(got == data);
}

TEST_CASE("engine l3 identity: a client flow refuses a record from the server",
          "[engine][l3id][hostile]") {
  FakeNet net(l3_client_config(v4_identity()), l3_server_config());
  net.add_link({});
  REQUIRE(net.run_until([&] { return net.server && net.server->l3_identity().has_value(); }, 1s));
  // The server has nothing to say with 0x40: feed the client one as if it had (its SEQ 1).
  const auto good = record_of(v4_identity());
  REQUIRE(net.client.on_receive(net.client_path(0), framed(L3IdentityFrame{1, good}), net.now)
              .ok());
  CHECK(net.client.state() == FlowState::dead);
  REQUIRE(net.client.close_error());
  CHECK(net.client.close_error()->code == make_error_code(errc::bad_l3_identity));
}
