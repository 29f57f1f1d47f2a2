// SPDX-License-Identifier: Apache-2.0
#include <rendr/engine/errors.hpp>
#include <rendr/engine/core/wire.hpp>

#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

using namespace rendr;
using namespace rendr::engine;

namespace {

std::vector<std::byte> bytes(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int b : v) {
    out.push_back(static_cast<std::byte>(b));
  }
  return out;
}

std::vector<std::byte> enc(const Frame& f) {
  std::vector<std::byte> out;
  auto st = encode_frame(f, out);
  INFO((st.ok() ? std::string("-") : st.error().message()));
  REQUIRE(st.ok());
  return out;
}

Id128 id_of(std::uint8_t seed) {
  Id128 id{};
  for (std::size_t i = 0; i < id.size(); ++i) {
    id[i] = static_cast<std::uint8_t>(seed + i);
  }
  return id;
}

void require_code(const Error& e, errc code) {
  INFO(e.message());
  REQUIRE(e.code == make_error_code(code));
}

}  // namespace

TEST_CASE("engine wire: header bit layout matches the reference byte view", "[engine][wire]") {
  // DATA, SEQ = 0x0000_1234_5678_9ABC: low 16 bits first, then bits 47..16.
  const std::vector<std::byte> payload = bytes({0xde, 0xad});
  auto w = enc(Data{0x123456789ABCULL, payload, false});
  CHECK(w == bytes({0x00, 0x00, 0x9a, 0xbc, 0x12, 0x34, 0x56, 0x78, 0xde, 0xad}));
  // BYE (sequenced control 0x05), SEQ 7, reason app_request.
  CHECK(enc(Bye{7, ByeReason::app_request}) ==
        bytes({0x20, 0x05, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x04}));
  // PROBE is out-of-band: SEQ 0; control bit is b0 & 0x20.
  auto p = enc(Probe{0x0102030405060708ULL, 9});
  REQUIRE(p.size() == 8 + 16);
  CHECK(static_cast<int>(p[0]) == 0x20);
  CHECK(static_cast<int>(p[1]) == 0x06);
  // ACK = PATH_PROBE_REPLY carrying magic "RENDR_AC", a zero word and next_seq.
  auto a = enc(Ack{42});
  REQUIRE(a.size() == 8 + 24);
  CHECK(static_cast<int>(a[1]) == 0x07);
  CHECK(std::memcmp(a.data() + 8, "RENDR_AC", 8) == 0);
  CHECK(static_cast<int>(a.back()) == 42);
}

TEST_CASE("engine wire: every frame kind round-trips", "[engine][wire]") {
  const std::vector<std::byte> payload(kMaxPayload, std::byte{0x5a});
  Hello h{id_of(1), id_of(50), kCapsL3Identity, std::string("path-a"), false, std::nullopt};
  Hello legacy{id_of(2), {}, 0, std::nullopt, true, std::nullopt};
  BridgeTag t{id_of(3), id_of(4), id_of(5), std::nullopt, false, std::nullopt};
  BridgeTag tn{id_of(3), id_of(4), id_of(5), std::string(255, 'x'), false, std::nullopt};
  BridgeAck ba{id_of(6), id_of(7), BridgeAckCode::instance_mismatch, std::string("nope")};
  const std::vector<Frame> frames = {
      Data{1, payload, false},
      Data{kMaxSeq, {}, true},
      h,
      legacy,
      HelloAck{id_of(8), id_of(9), kCapsPacketMode},
      t,
      tn,
      BridgeTag{id_of(10), {}, {}, std::nullopt, true, std::nullopt},
      ba,
      Probe{1, 2},
      ProbeReply{3, 4},
      Ack{kMaxSeq + 1},
      Bye{5, ByeReason::zombie},
      MigrateNotify{6, 77},
      PathQualityReport{7, 1000, 200, 15},
      Heartbeat{8, 123456789},
  };
  for (const auto& f : frames) {
    INFO(frame_name(f));
    auto w = enc(f);
    auto d = decode_frame(w);
    INFO((d.ok() ? std::string("-") : d.error().message()));
    REQUIRE(d.ok());
    CHECK(d->index() == f.index());
    CHECK(frame_seq(*d) == frame_seq(f));
    CHECK(enc(*d) == w);
  }
  // Field values survive, not only the bytes.
  auto d = decode_frame(enc(h));
  REQUIRE(d.ok());
  const auto& hh = std::get<Hello>(*d);
  CHECK(hh.flow_id == h.flow_id);
  CHECK(hh.instance_id == h.instance_id);
  CHECK(hh.caps == kCapsL3Identity);
  CHECK(hh.path_name == std::optional<std::string>("path-a"));
}

TEST_CASE("engine wire: encoder refuses out-of-range fields and leaves the output alone",
          "[engine][wire]") {
  std::vector<std::byte> out = bytes({1, 2, 3});
  const std::vector<std::byte> big(kMaxPayload + 1);
  auto r1 = encode_frame(Data{1, big, false}, out);
  REQUIRE_FALSE(r1.ok());
  require_code(r1.error(), errc::frame_too_large);
  auto r2 = encode_frame(Data{0, {}, false}, out);
  REQUIRE_FALSE(r2.ok());
  require_code(r2.error(), errc::malformed_frame);
  auto r3 = encode_frame(Bye{kMaxSeq + 1, ByeReason::normal}, out);
  REQUIRE_FALSE(r3.ok());
  Hello h;
  h.path_name = std::string(256, 'n');
  auto r4 = encode_frame(h, out);
  REQUIRE_FALSE(r4.ok());
  require_code(r4.error(), errc::frame_too_large);
  CHECK(out == bytes({1, 2, 3}));
}

TEST_CASE("engine wire: decoder rejects malformed and hostile frames with a reason",
          "[engine][wire]") {
  struct Case {
    const char* name;
    std::vector<std::byte> wire;
    errc code;
    const char* text;
  };
  const std::vector<Case> cases = {
      {"short", bytes({0x00, 0x00, 0x00}), errc::malformed_frame, "shorter than the header"},
      {"version 1", bytes({0x40, 0, 0, 1, 0, 0, 0, 0}), errc::unsupported_version, "VER 1"},
      {"data seq 0", bytes({0x00, 0, 0, 0, 0, 0, 0, 0, 0xff}), errc::malformed_frame, "SEQ 0"},
      {"data flags", bytes({0x01, 0, 0, 1, 0, 0, 0, 0}), errc::malformed_frame, "FLAGS"},
      {"ctrl reserved flags", bytes({0x21, 0x06, 0, 0, 0, 0, 0, 0}), errc::malformed_frame,
       "reserved"},
      {"ctrl fin bit", bytes({0x30, 0x05, 0, 1, 0, 0, 0, 0, 0}), errc::malformed_frame,
       "F bit"},
      {"unknown code", bytes({0x20, 0x08, 0, 0, 0, 0, 0, 0}), errc::unknown_control, "0x08"},
      {"probe with seq", bytes({0x20, 0x06, 0, 1, 0, 0, 0, 0}), errc::malformed_frame,
       "SEQ 0"},
      {"probe short", bytes({0x20, 0x06, 0, 0, 0, 0, 0, 0, 1, 2}), errc::malformed_frame,
       "expected 16"},
      {"bye seq 0", bytes({0x20, 0x05, 0, 0, 0, 0, 0, 0, 0}), errc::malformed_frame, "SEQ 0"},
      {"bye reason", bytes({0x20, 0x05, 0, 1, 0, 0, 0, 0, 9}), errc::malformed_frame,
       "reason 9"},
      {"hello 30 bytes", [] {
         auto w = bytes({0x20, 0x01, 0, 0, 0, 0, 0, 0});
         w.resize(8 + 30);
         return w;
       }(),
       errc::malformed_frame, "expected 20 or >= 36"},
      {"hello bad str8", [] {
         auto w = bytes({0x20, 0x01, 0, 0, 0, 0, 0, 0});
         w.resize(8 + 36);
         w.push_back(std::byte{200});  // claims 200 name bytes, has 1
         w.push_back(std::byte{'a'});
         return w;
       }(),
       errc::malformed_frame, "str8"},
      {"ack without magic", [] {
         auto w = bytes({0x20, 0x07, 0, 0, 0, 0, 0, 0});
         w.resize(8 + 24);
         return w;
       }(),
       errc::malformed_frame, "magic"},
      {"bridge_ack code", [] {
         auto w = bytes({0x20, 0x11, 0, 0, 0, 0, 0, 0});
         w.resize(8 + 32);
         w.push_back(std::byte{7});
         return w;
       }(),
       errc::malformed_frame, "code 7"},
      {"data too large", [] {
         auto w = bytes({0x00, 0x00, 0, 1, 0, 0, 0, 0});
         w.resize(8 + kMaxPayload + 1);
         return w;
       }(),
       errc::frame_too_large, "32768"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    auto r = decode_frame(c.wire);
    REQUIRE_FALSE(r.ok());
    require_code(r.error(), c.code);
    CHECK_THAT(r.error().message(), Catch::Contains(c.text));
  }
}

TEST_CASE("engine wire: stream deframer accepts any split and rejects bad prefixes",
          "[engine][wire]") {
  std::vector<std::byte> stream;
  std::vector<std::vector<std::byte>> frames;
  for (std::uint64_t seq = 1; seq <= 20; ++seq) {
    std::vector<std::byte> payload(static_cast<std::size_t>(seq * 37 % 300), std::byte{0x11});
    auto f = enc(Data{seq, payload, false});
    append_stream_prefix(f.size(), stream);
    stream.insert(stream.end(), f.begin(), f.end());
    frames.push_back(std::move(f));
  }
  for (std::size_t chunk : {std::size_t{1}, std::size_t{2}, std::size_t{7}, std::size_t{1000},
                            stream.size()}) {
    INFO("chunk " << chunk);
    StreamDeframer d;
    std::size_t got = 0;
    for (std::size_t off = 0; off < stream.size(); off += chunk) {
      const std::size_t n = std::min(chunk, stream.size() - off);
      d.feed(std::span(stream).subspan(off, n));
      while (true) {
        auto r = d.next();
        REQUIRE(r.ok());
        if (!r->has_value()) {
          break;
        }
        REQUIRE(got < frames.size());
        CHECK(std::equal((*r)->begin(), (*r)->end(), frames[got].begin(), frames[got].end()));
        ++got;
      }
    }
    CHECK(got == frames.size());
    CHECK(d.buffered() == 0);
  }
  StreamDeframer bad;
  bad.feed(bytes({0x00, 0x03, 1, 2, 3}));
  auto r = bad.next();
  REQUIRE_FALSE(r.ok());
  require_code(r.error(), errc::frame_too_large);
  CHECK(bad.failed());
  bad.feed(bytes({0x00, 0x08}));
  CHECK_FALSE(bad.next().ok());  // stays failed: the carrier is out of sync
}

TEST_CASE("engine wire: a listener accepts only HELLO or BRIDGE_TAG first", "[engine][wire]") {
  auto h = classify_first_frame(
      enc(Hello{id_of(1), id_of(2), 0, std::nullopt, false, std::nullopt}));
  REQUIRE(h.ok());
  CHECK(std::holds_alternative<Hello>(*h));
  auto t = classify_first_frame(
      enc(BridgeTag{id_of(1), id_of(2), id_of(3), std::nullopt, false, std::nullopt}));
  REQUIRE(t.ok());
  CHECK(std::holds_alternative<BridgeTag>(*t));
  auto d = classify_first_frame(enc(Probe{1, 1}));
  REQUIRE_FALSE(d.ok());
  require_code(d.error(), errc::peer_protocol);
  CHECK_THAT(d.error().message(), Catch::Contains("probe"));
}
