// SPDX-License-Identifier: Apache-2.0
// The userstack keeper's pure parts (us_keeper.hpp): blobs (a Message in a memfd, for
// snapshots and packet lists larger than a SEQPACKET datagram) and drop_peer_acked, which a
// userstack target applies to an offered snapshot before lwIP restores it.
#include "us_keeper.hpp"

#include <rendr/agents/packet.hpp>

#include <rendr/common/snapshot_codec.hpp>

#include <catch2/catch.hpp>

#include <cstddef>
#include <vector>

using namespace rendr;
using namespace rendr::agents;

namespace {

TcpSnapshot established(std::size_t unacked, std::size_t unsent) {
  TcpSnapshot s;
  s.tuple = *FourTuple::parse("10.0.0.1:80->10.0.0.2:40000");
  s.state = TcpState::established;
  s.send_seq = 1000;
  s.recv_seq = 5000;
  s.send_queue.assign(unacked + unsent, std::byte{7});
  s.send_unsent = static_cast<std::uint32_t>(unsent);
  s.opt_wscale = true;
  s.snd_wscale = 7;
  s.has_window = true;
  s.window.snd_wnd = 1000;
  s.window.max_window = 1000;
  return s;
}

}  // namespace

TEST_CASE("keeper blobs carry a message larger than a SEQPACKET datagram, and refuse none",
          "[unit][keeper]") {
  Message m(MsgType::ok);
  std::vector<std::byte> big(3U << 20, std::byte{0x5a});
  m.add(Tag::snapshot, big).add(Tag::replay, std::vector<std::byte>(100, std::byte{1}));
  auto fd = blob_fd(m);
  REQUIRE(fd.ok());
  auto back = read_blob(fd->get());
  REQUIRE(back.ok());
  REQUIRE(back->get(Tag::snapshot) != nullptr);
  CHECK(*back->get(Tag::snapshot) == big);
  CHECK(back->all(Tag::replay).size() == 1);
  // No blob attached where one is expected: a clear error, not a crash.
  auto none = read_blob(-1);
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().message().find("blob was expected") != std::string::npos);
}

TEST_CASE("drop_peer_acked drops what the peer acknowledged and takes that ACK's window",
          "[unit][keeper]") {
  TcpSnapshot s = established(3000, 500);
  REQUIRE(s.send_unacked() == 3000);
  // No ACK, an old ACK, and an ACK beyond what was sent change nothing.
  CHECK(drop_peer_acked(s, std::nullopt) == 0);
  CHECK(drop_peer_acked(s, repair::PeerAck{999, 10}) == 0);
  CHECK(drop_peer_acked(s, repair::PeerAck{1000 + 3001, 10}) == 0);
  CHECK(s.send_queue.size() == 3500);
  // 1200 of the 3000 sent bytes acknowledged, window 20 << 7.
  CHECK(drop_peer_acked(s, repair::PeerAck{2200, 20}) == 1200);
  CHECK(s.send_seq == 2200);
  CHECK(s.send_queue.size() == 2300);
  CHECK(s.send_unacked() == 1800);
  CHECK(s.window.snd_wnd == 20U << 7);
  CHECK(s.window.max_window == 20U << 7);
  // A snapshot whose FIN was sent is left alone (its FIN takes a sequence number).
  TcpSnapshot f = established(100, 0);
  f.fin_sent = true;
  CHECK(drop_peer_acked(f, repair::PeerAck{1050, 5}) == 0);
  CHECK(f.send_queue.size() == 100);
}

TEST_CASE("keeper bodies travel inline when small and as a blob when large", "[unit][keeper]") {
  // Small (a snapshot of an idle connection): the fields join the carrier, no fd.
  Message small_body(MsgType::ok);
  small_body.add(Tag::snapshot, std::vector<std::byte>(600, std::byte{3}))
      .add(Tag::replay, std::vector<std::byte>(60, std::byte{4}));
  Packet small;
  small.msg = Message(MsgType::keeper_activate);
  small.msg.add(Tag::tuple, "10.0.0.1:80->10.0.0.2:40000");
  REQUIRE(attach_body(small.msg, small_body, small.fd).ok());
  CHECK_FALSE(small.fd.valid());
  auto got = body_of(small);
  REQUIRE(got.ok());
  REQUIRE(got->get(Tag::snapshot) != nullptr);
  CHECK(got->get(Tag::snapshot)->size() == 600);
  CHECK(got->all(Tag::replay).size() == 1);
  CHECK(got->str_or(Tag::tuple, "") == "10.0.0.1:80->10.0.0.2:40000");  // the carrier's own
  // Large (a snapshot with full socket buffers): a blob; the carrier stays small.
  Message big_body(MsgType::ok);
  big_body.add(Tag::snapshot, std::vector<std::byte>(kInlineBody + 1, std::byte{5}));
  Packet big;
  big.msg = Message(MsgType::ok);
  REQUIRE(attach_body(big.msg, big_body, big.fd).ok());
  REQUIRE(big.fd.valid());
  CHECK(big.msg.get(Tag::snapshot) == nullptr);
  auto back = body_of(big);
  REQUIRE(back.ok());
  REQUIRE(back->get(Tag::snapshot) != nullptr);
  CHECK(back->get(Tag::snapshot)->size() == kInlineBody + 1);
}
