// SPDX-License-Identifier: Apache-2.0
// The L3 identity over the public API and real loopback sockets (port 0, 127.0.0.1 only): a
// dialed flow's identity reaches Conn::l3_identity() on the accepting side, survives a path
// killed right after the dial, and a hostile record never yields an accepted flow. Waits are on
// the API's own blocking calls and poll() deadlines, never sleeps.
#include <rendr/engine/conn.hpp>
#include <rendr/engine/dialer.hpp>
#include <rendr/engine/errors.hpp>
#include <rendr/engine/listener.hpp>
#include <rendr/engine/core/wire.hpp>

#include "support/require_result.hpp"
#include "support/sockets.hpp"

#include "api_helpers.hpp"
#include "raw_peer.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <string>

using namespace rendr;
using namespace std::chrono_literals;

namespace {

using rendr::test::api::fast_cfg;
using rendr::test::api::tcp_path;

engine::L3Identity identity() {
  auto id = engine::make_l3_identity(6, "10.9.8.7:51000", "203.0.113.9:80");
  REQUIRE_OK(id);
  return *id;
}

}  // namespace

TEST_CASE("engine net l3 identity: accepted flows expose the dialer's identity, across a path kill",
          "[engine][l3id][net]") {
  ListenOptions lo;
  lo.flow = fast_cfg();
  auto l = listen_tcp("127.0.0.1:0", lo);
  REQUIRE_OK(l);
  DialOptions o;
  static_cast<engine::FlowConfig&>(o) = fast_cfg();
  o.paths = {tcp_path(**l, "a"), tcp_path(**l, "b")};
  auto d = Dialer::create(o);
  REQUIRE_OK(d);
  auto v4 = engine::make_l3_identity(6, "10.0.0.2:40001", "198.51.100.7:8080");
  REQUIRE_OK(v4);
  auto c = (*d)->dial(*v4);
  REQUIRE_OK(c);
  // The record is SEQ 1: kill the path it went out on at once, before anything was read.
  (*c)->kill_path_for_test((*c)->active_path());
  auto s = (*l)->accept(deadline_in(5s));
  REQUIRE_OK(s);
  REQUIRE((*s)->l3_identity().has_value());
  CHECK(*(*s)->l3_identity() == *v4);
  CHECK(*(*c)->l3_identity() == *v4);
  const std::string ask = "GET / HTTP/1.0\r\n\r\n";
  REQUIRE_OK((*c)->write(std::as_bytes(std::span(ask)), deadline_in(5s)));
  std::string got(ask.size(), '\0');
  auto n = (*s)->read(std::as_writable_bytes(std::span(got)), deadline_in(5s));
  REQUIRE_OK(n);
  CHECK(*n == ask.size());
  CHECK(got == ask);
  // A flow without an identity next to it has none; a v6 identity travels the same way.
  auto plain = (*d)->dial();
  REQUIRE_OK(plain);
  auto ps = (*l)->accept(deadline_in(5s));
  REQUIRE_OK(ps);
  CHECK_FALSE((*ps)->l3_identity().has_value());
  auto v6 = engine::make_l3_identity(17, "[fd00::2]:5000", "[fd00::53]:53");
  REQUIRE_OK(v6);
  auto pc = (*d)->dial_packet(*v6);
  REQUIRE_OK(pc);
  auto pss = (*l)->accept_packet(deadline_in(5s));
  REQUIRE_OK(pss);
  REQUIRE((*pss)->l3_identity().has_value());
  CHECK(*(*pss)->l3_identity() == *v6);
  CHECK((*s)->stats().l3_identity == *v4);
}

TEST_CASE("engine net l3 identity: a hostile record is refused and its flow never accepted",
          "[engine][l3id][net]") {
  ListenOptions lo;
  lo.flow = fast_cfg();
  auto l = listen_tcp("127.0.0.1:0", lo);
  REQUIRE_OK(l);
  auto ep = Endpoint::parse((*l)->local_address());
  REQUIRE_OK(ep);
  auto raw = test::connect_tcp(*ep);
  REQUIRE_OK(raw);
  engine::Hello h;
  h.flow_id = {7, 7, 7};
  h.instance_id = {9, 9, 9};
  h.caps = engine::kCapsL3Identity | engine::kCapsL3Record;
  auto rec = engine::encode_l3_identity(identity());
  REQUIRE_OK(rec);
  (*rec)[2] = std::byte{7};  // family 7
  auto bytes = test::framed(h);
  const auto r = test::framed(engine::L3IdentityFrame{1, *rec});
  bytes.insert(bytes.end(), r.begin(), r.end());
  test::write_all(raw->get(), bytes);
  // The listener answers HELLO_ACK, then BYE(proto_version) for the record, then closes.
  bool acked = false;
  bool bye = false;
  test::read_frames(raw->get(), 5000, [&](const engine::Frame& f) {
    if (const auto* a = std::get_if<engine::HelloAck>(&f)) {
      acked = (a->caps & h.caps) == h.caps;
    } else if (const auto* b = std::get_if<engine::Bye>(&f)) {
      bye = b->reason == engine::ByeReason::proto_version;
    }
    return !bye;
  });
  CHECK(acked);
  CHECK(bye);
  // Meanwhile an honest flow is accepted; the hostile one never is.
  DialOptions o;
  static_cast<engine::FlowConfig&>(o) = fast_cfg();
  o.paths = {tcp_path(**l, "honest")};
  auto d = Dialer::create(o);
  REQUIRE_OK(d);
  auto c = (*d)->dial(identity());
  REQUIRE_OK(c);
  auto s = (*l)->accept(deadline_in(5s));
  REQUIRE_OK(s);
  CHECK(*(*s)->l3_identity() == identity());
  CHECK((*s)->flow_id() == (*c)->flow_id());
  REQUIRE_ERROR((*l)->accept(deadline_in(300ms)), std::errc::timed_out, "accept");
}

TEST_CASE("engine net l3 identity: a packet flow over udpflow carries it, and half-closes",
          "[engine][l3id][net]") {
  ListenOptions lo;
  lo.flow = fast_cfg();
  auto l = listen_udpflow("127.0.0.1:0", lo);
  REQUIRE_OK(l);
  DialOptions o;
  static_cast<engine::FlowConfig&>(o) = fast_cfg();
  PathSpec p;
  p.transport = "udpflow";
  p.address = (*l)->local_address();
  o.paths = {p};
  auto d = Dialer::create(o);
  REQUIRE_OK(d);
  auto id = engine::make_l3_identity(17, "10.0.0.2:5353", "10.0.0.53:53");
  REQUIRE_OK(id);
  auto c = (*d)->dial_packet(*id);
  REQUIRE_OK(c);
  auto s = (*l)->accept_packet(deadline_in(5s));
  REQUIRE_OK(s);
  REQUIRE((*s)->l3_identity().has_value());
  CHECK(*(*s)->l3_identity() == *id);
  const std::string q = "query";
  REQUIRE_OK((*c)->write(std::as_bytes(std::span(q)), deadline_in(5s)));
  REQUIRE_OK((*c)->shutdown_write());
  std::vector<std::byte> pkt;
  auto r = (*s)->read(pkt, deadline_in(5s));
  REQUIRE_OK(r);
  CHECK(*r);
  CHECK(pkt.size() == q.size());
  r = (*s)->read(pkt, deadline_in(5s));
  REQUIRE_OK(r);
  CHECK_FALSE(*r);  // EOF: the dialer half-closed
  // The answer still flows the other way.
  const std::string a = "answer";
  REQUIRE_OK((*s)->write(std::as_bytes(std::span(a)), deadline_in(5s)));
  r = (*c)->read(pkt, deadline_in(5s));
  REQUIRE_OK(r);
  CHECK(*r);
  CHECK(std::string(reinterpret_cast<const char*>(pkt.data()), pkt.size()) == a);
}
