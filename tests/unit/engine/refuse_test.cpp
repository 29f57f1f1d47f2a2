// SPDX-License-Identifier: Apache-2.0
// Refusal (docs/wire.md "Refusal"): REFUSE (control 0x42, caps bit 15) on the I/O-free flow
// core through FakeNet (fake clock): the wire form and its strict decoder, a server refusing a
// flow (the client's flow ends with flow_refused and the code and detail, the server finishes
// on the terminal ACK instead of waiting out its close timeout), the refusal following data in
// SEQ order across a path death.
#include "fake_net.hpp"

#include <rendr/engine/core/flow.hpp>
#include <rendr/engine/core/wire.hpp>
#include <rendr/engine/errors.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace rendr;
using namespace rendr::engine;
using namespace rendr::engine::test;
using namespace std::chrono_literals;

namespace {

bool handshake_done(FakeNet& net) {
  return net.server.has_value() && net.client.state() == FlowState::active;
}

// drain reads whatever |c| has into |got|; returns the read error that stopped it, if any.
std::optional<Error> drain(FlowCore& c, TimePoint now, std::size_t& got) {
  std::vector<std::byte> buf(64 * 1024);
  while (true) {
    auto r = c.read(buf, now);
    if (!r) {
      return r.error();
    }
    if (r->bytes == 0) {
      return std::nullopt;
    }
    got += r->bytes;
  }
}

}  // namespace

TEST_CASE("engine refuse: REFUSE is control 0x42, sequenced, code u8 and an optional str8",
          "[engine][refuse][wire]") {
  std::vector<std::byte> w;
  REQUIRE(encode_frame(Refuse{3, 2, std::string("nothing listens")}, w).ok());
  REQUIRE(w.size() == kHeaderSize + 1 + 1 + 15);
  CHECK(static_cast<int>(w[0]) == 0x20);
  CHECK(static_cast<int>(w[1]) == 0x42);
  CHECK(static_cast<int>(w[3]) == 3);
  CHECK(static_cast<int>(w[8]) == 2);
  auto f = decode_frame(w);
  REQUIRE(f.ok());
  REQUIRE(std::holds_alternative<Refuse>(*f));
  CHECK(std::get<Refuse>(*f).code == 2);
  CHECK(std::get<Refuse>(*f).detail == std::string("nothing listens"));
  CHECK(std::string(frame_name(*f)) == "refuse");
  // Without the detail: one byte; unknown codes are carried.
  std::vector<std::byte> bare;
  REQUIRE(encode_frame(Refuse{1, 200, std::nullopt}, bare).ok());
  auto fb = decode_frame(bare);
  REQUIRE(fb.ok());
  CHECK(std::get<Refuse>(*fb).code == 200);
  CHECK_FALSE(std::get<Refuse>(*fb).detail.has_value());
  CHECK(to_string(static_cast<RefusalCode>(200)) == "code_200");
  CHECK(refusal_code_from_string("missing_egress") == RefusalCode::missing_egress);
  // Malformed: SEQ 0, empty payload, a str8 that does not end the payload.
  auto oob = w;
  oob[3] = std::byte{0};
  CHECK_FALSE(decode_frame(oob).ok());
  std::vector<std::byte> empty(w.begin(), w.begin() + kHeaderSize);
  CHECK_FALSE(decode_frame(empty).ok());
  auto longer = w;
  longer.push_back(std::byte{1});
  auto bad = decode_frame(longer);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == make_error_code(errc::malformed_frame));
}

TEST_CASE("engine refuse: the client's flow ends with flow_refused and the reason, at once",
          "[engine][refuse][flow]") {
  FakeNet net(fast_probe_config(), fast_probe_config());
  net.add_link({});
  REQUIRE(net.run_until([&] { return handshake_done(net); }, 1s));
  CHECK((net.client.stats().peer_caps & kCapsRefuse) != 0);
  const TimePoint start = net.now;
  REQUIRE(net.server->refuse(RefusalCode::missing_egress, "connect: refused", net.now).ok());
  REQUIRE(net.run_until(
      [&] {
        return net.client.state() == FlowState::dead && net.server->state() == FlowState::dead;
      },
      5s));
  // The server finished on the client's terminal ACK, well before its 2 s close timeout.
  CHECK(net.now - start < 1s);
  REQUIRE(net.client.close_error().has_value());
  CHECK(net.client.close_error()->code == make_error_code(errc::flow_refused));
  CHECK(net.client.close_error()->context.find("missing_egress") != std::string::npos);
  // The code as data: what a dial or read that ends with this error hands its caller.
  CHECK(refusal_code(*net.client.close_error()) == RefusalCode::missing_egress);
  CHECK(refusal_code(net.client.close_error()->with_context("dial")) ==
        RefusalCode::missing_egress);
  const auto r = net.client.stats().peer_refusal;
  REQUIRE(r.has_value());
  CHECK(r->code == RefusalCode::missing_egress);
  CHECK(r->detail == "connect: refused");
  std::size_t none = 0;
  auto rd = drain(net.client, net.now, none);
  REQUIRE(rd.has_value());
  CHECK(rd->code == make_error_code(errc::flow_refused));
  CHECK(refusal_code(*rd) == RefusalCode::missing_egress);
  CHECK_FALSE(refusal_code(make_error(errc::peer_closed, "x")).has_value());
  CHECK(none == 0);
  REQUIRE(net.server->close_error().has_value());
  CHECK(net.server->close_error()->code == make_error_code(errc::closed));
  CHECK_FALSE(net.server->stats().peer_refusal.has_value());
}

TEST_CASE("engine refuse: a refusal after data comes in SEQ order across a path death",
          "[engine][refuse][flow]") {
  FakeNet net(fast_probe_config(), fast_probe_config());
  const int first = net.add_link({});
  net.add_link({});
  REQUIRE(net.run_until([&] { return handshake_done(net); }, 1s));
  std::vector<std::byte> data(48 * 1024, std::byte{7});
  auto wr = net.server->write(data, net.now);
  REQUIRE(wr.ok());
  REQUIRE(*wr == data.size());
  REQUIRE(net.server->refuse(RefusalCode::flow_denied, "", net.now).ok());
  net.fail_link(first);
  std::size_t got = 0;
  std::optional<Error> end;
  net.app = [&](FakeNet& n) {
    if (end) {
      return;
    }
    end = drain(n.client, n.now, got);
  };
  REQUIRE(net.run_until([&] { return end.has_value(); }, 10s));
  CHECK(got == data.size());
  CHECK(end->code == make_error_code(errc::flow_refused));
  REQUIRE(net.client.stats().peer_refusal.has_value());
  CHECK(net.client.stats().peer_refusal->code == RefusalCode::flow_denied);
}
