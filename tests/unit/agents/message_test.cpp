// SPDX-License-Identifier: Apache-2.0
#include <rendr/agents/message.hpp>

#include <catch2/catch.hpp>

using namespace rendr;
using namespace rendr::agents;

namespace {
Message sample() {
  Message m(MsgType::offer);
  m.add_u64(Tag::mig, 0x1122334455667788ULL).add(Tag::service, "http");
  for (int i = 0; i < 3; ++i) {
    m.add_u64(Tag::conn_id, static_cast<std::uint64_t>(i));
    m.add(Tag::snapshot, std::string(static_cast<std::size_t>(10 + i), 'x'));
    m.add(Tag::state, std::string_view{});
  }
  return m;
}
}  // namespace

TEST_CASE("agent messages round-trip with repeated and empty fields", "[agents]") {
  Message m = sample();
  auto back = Message::decode(m.encode());
  REQUIRE(back.ok());
  CHECK(back->type() == MsgType::offer);
  CHECK(back->u64(Tag::mig).value() == 0x1122334455667788ULL);
  CHECK(back->str(Tag::service).value() == "http");
  auto ids = back->u64s(Tag::conn_id);
  REQUIRE(ids.ok());
  CHECK(*ids == std::vector<std::uint64_t>{0, 1, 2});
  REQUIRE(back->all(Tag::snapshot).size() == 3);
  CHECK(back->all(Tag::snapshot)[2]->size() == 12);
  CHECK(back->all(Tag::state)[0]->empty());
  CHECK_FALSE(back->str(Tag::peer).ok());
  CHECK(back->str_or(Tag::peer, "dflt") == "dflt");
}

TEST_CASE("agent message decoder rejects every truncation and trailing bytes", "[agents]") {
  auto bytes = sample().encode();
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    auto r = Message::decode(std::span(bytes.data(), n));
    INFO(n);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == std::errc::bad_message);
  }
  bytes.push_back(std::byte{0});
  auto r = Message::decode(bytes);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message(), Catch::Contains("trailing"));
}

TEST_CASE("agent message decoder rejects unknown types and absurd counts", "[agents]") {
  std::vector<std::byte> b = {std::byte{0x7f}, std::byte{0x7f}, std::byte{0}, std::byte{0},
                              std::byte{0},    std::byte{0}};
  auto r = Message::decode(b);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message(), Catch::Contains("unknown type"));
  std::vector<std::byte> c = {std::byte{0x04}, std::byte{0x02}, std::byte{0xff}, std::byte{0xff},
                              std::byte{0xff}, std::byte{0xff}};
  auto r2 = Message::decode(c);
  REQUIRE_FALSE(r2.ok());
  CHECK_THAT(r2.error().message(), Catch::Contains("fields"));
}

TEST_CASE("typed reads name the field when it has the wrong shape", "[agents]") {
  Message m(MsgType::commit);
  m.add(Tag::mig, "abc");
  auto v = m.u64(Tag::mig);
  REQUIRE_FALSE(v.ok());
  CHECK_THAT(v.error().message(), Catch::Contains("not a u64"));
  CHECK_FALSE(m.u64s(Tag::mig).ok());
}

TEST_CASE("frame reader reassembles messages split at every byte", "[agents]") {
  Message a = sample();
  Message b = Message(MsgType::commit).add_u64(Tag::mig, 7);
  auto fa = a.encode_framed();
  auto fb = b.encode_framed();
  std::vector<std::byte> all(fa);
  all.insert(all.end(), fb.begin(), fb.end());
  FrameReader fr;
  std::vector<Message> got;
  for (std::byte x : all) {
    fr.feed(std::span(&x, 1));
    for (;;) {
      auto n = fr.next();
      REQUIRE(n.ok());
      if (!*n) {
        break;
      }
      got.push_back(std::move(**n));
    }
  }
  REQUIRE(got.size() == 2);
  CHECK(got[0].encode() == a.encode());
  CHECK(got[1].u64(Tag::mig).value() == 7);
  CHECK(fr.buffered() == 0);
}

TEST_CASE("frame reader says how many bytes complete the current frame", "[agents]") {
  std::vector<std::byte> big(200000, std::byte{0x5a});
  Message m = Message(MsgType::offer).add(Tag::snapshot, big);
  auto f = m.encode_framed();
  FrameReader fr;
  CHECK(fr.need() == 4);
  fr.feed(std::span(f).first(2));
  CHECK(fr.need() == 2);
  fr.feed(std::span(f).subspan(2, 1000));
  CHECK(fr.need() == f.size() - 1002);
  // Reading exactly need() bytes completes the frame, with nothing left over.
  fr.feed(std::span(f).subspan(1002, fr.need()));
  CHECK(fr.need() == 0);
  auto n = fr.next();
  REQUIRE(n.ok());
  REQUIRE(n->has_value());
  CHECK((*n)->get(Tag::snapshot)->size() == big.size());
  CHECK(fr.need() == 4);
}

TEST_CASE("frame reader refuses an oversized length prefix", "[agents]") {
  FrameReader fr;
  std::vector<std::byte> huge = {std::byte{0xff}, std::byte{0xff}, std::byte{0xff},
                                 std::byte{0xff}};
  fr.feed(huge);
  auto n = fr.next();
  REQUIRE_FALSE(n.ok());
  CHECK_THAT(n.error().message(), Catch::Contains("exceeds"));
}

TEST_CASE("frame reader enforces its configured maximum from the length prefix alone",
          "[agents]") {
  FrameReader fr(1U << 20);
  Message ok_size = Message(MsgType::offer).add(Tag::snapshot, std::vector<std::byte>(1000));
  auto f = ok_size.encode_framed();
  fr.feed(f);
  auto n = fr.next();
  REQUIRE(n.ok());
  REQUIRE(n->has_value());
  // A prefix claiming 2 MiB: refused as soon as its 4 bytes are in, nothing else buffered.
  const std::uint32_t claim = 2U << 20;
  std::vector<std::byte> hdr = {std::byte(claim >> 24), std::byte((claim >> 16) & 0xff),
                                std::byte((claim >> 8) & 0xff), std::byte(claim & 0xff)};
  fr.feed(hdr);
  CHECK(fr.need() == (1U << 20));  // a reader never fetches more than the limit
  auto bad = fr.next();
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().code == std::errc::message_size);
  CHECK(bad.error().message() ==
        "agent frame of 2097152 bytes exceeds the limit of 1048576 bytes");
  // The maximum never exceeds what the decoder accepts.
  FrameReader capped(kMaxMessage * 2);
  std::vector<std::byte> huge(4, std::byte{0xff});
  capped.feed(huge);
  CHECK(capped.need() == kMaxMessage);
}

TEST_CASE("fail replies carry the error code and message", "[agents]") {
  Error e = errno_error("restore 1.2.3.4:5->6.7.8.9:10", EADDRNOTAVAIL);
  auto back = Message::decode(fail_msg(e).encode());
  REQUIRE(back.ok());
  Error e2 = error_of(*back, "offer");
  CHECK(e2.code == std::errc::address_not_available);
  CHECK_THAT(e2.message(), Catch::Contains("restore 1.2.3.4:5"));
  Error e3 = error_of(ok_msg(), "offer");
  CHECK(e3.code == std::errc::protocol_error);
  CHECK_THAT(e3.message(), Catch::Contains("unexpected reply ok"));
}
