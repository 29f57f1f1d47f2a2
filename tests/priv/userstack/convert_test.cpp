// SPDX-License-Identifier: Apache-2.0
// Cross-method moves in one netns: an lwIP connection restored as a kernel socket with
// TCP_REPAIR (userstack -> native), and a kernel socket checkpointed and rebuilt in lwIP
// (native -> userstack). "Steering" is an address: while 198.18.0.x is a local address (on lo)
// the client's packets reach the kernel socket, without it the route sends them into the TUN.
#include "conn_io.hpp"
#include "tun_lab.hpp"

#include "support/sockets.hpp"
#include "support/require_result.hpp"

#include <rendr/repair/repair.hpp>
#include <rendr/userstack/stack.hpp>

#include <catch2/catch.hpp>

#include <cstdio>
#include <future>

using namespace rendr;
using namespace rendr::test;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kBulk = 1U << 20;
constexpr std::size_t kUnread = 40000;  // fits lwIP's 64 KiB window

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST_CASE("userstack lwIP connection restored as a kernel socket keeps every byte",
          "[.netns][userstack][netns]") {
  StackLab lab;
  userstack::Stack& st = lab.stack();
  const long long resets0 = lab.resets();
  const Endpoint vip = Endpoint::parse("198.18.0.9:8081").value();
  Pattern up(21);
  Pattern down(22);

  UniqueFd client = connect_from(lab.ns(), vip);
  auto acc = st.accept(5s);
  REQUIRE_OK(acc);
  userstack::ConnectionPtr conn = std::move(acc).value();
  // Bulk both ways through lwIP.
  auto cw =
      std::async(std::launch::async, [&] { write_all(client.get(), pattern_bytes(up, 0, kBulk)); });
  CHECK(up.mismatch(0, conn_read_exact(*conn, kBulk)) == -1);
  cw.get();
  auto cr = std::async(std::launch::async, [&] { return read_exact(client.get(), kBulk); });
  conn_write_all(*conn, pattern_bytes(down, 0, kBulk));
  CHECK(down.mismatch(0, cr.get()) == -1);
  // Unread data in lwIP's receive queue at the moment of the move.
  write_all(client.get(), pattern_bytes(up, kBulk, kUnread));
  wait_recv_queue(*conn, kUnread);

  auto t0 = std::chrono::steady_clock::now();
  st.freeze(conn->tuple());
  auto snap = st.snapshot(*conn);
  REQUIRE_OK(snap);
  const double snapshot_ms = ms_since(t0);
  CHECK(snap->recv_queue.size() == kUnread);
  CHECK(snap->state == TcpState::established);
  lab.ns().must("ip addr add 198.18.0.9/32 dev lo");
  repair::Repairer rep;
  auto tr = std::chrono::steady_clock::now();
  auto staged = rep.restore_staged(*snap);
  REQUIRE_OK(staged);
  auto held = st.take_held(conn->tuple());
  auto kfd = rep.activate(std::move(*staged), std::nullopt, held);
  REQUIRE_OK(kfd);
  const double restore_ms = ms_since(tr);
  const double move_ms = ms_since(t0);

  // The kernel socket continues the stream: unread bytes first, then fresh traffic both ways.
  CHECK(up.mismatch(kBulk, read_exact(kfd->get(), kUnread)) == -1);
  auto t1 = std::chrono::steady_clock::now();
  write_all(kfd->get(), pattern_bytes(down, kBulk, 4096));
  CHECK(down.mismatch(kBulk, read_exact(client.get(), 4096)) == -1);
  const double first_byte_ms = ms_since(t1);
  auto cw2 = std::async(std::launch::async, [&] {
    write_all(client.get(), pattern_bytes(up, kBulk + kUnread, kBulk));
  });
  CHECK(up.mismatch(kBulk + kUnread, read_exact(kfd->get(), kBulk)) == -1);
  cw2.get();
  ::shutdown(client.get(), SHUT_WR);
  expect_eof(kfd->get());
  kfd->reset();
  expect_eof(client.get());
  CHECK(lab.resets() == resets0);
  std::printf(
      "userstack u2n: lwIP snapshot %.3f ms, kernel restore+activate %.3f ms, whole move "
      "incl. 'ip addr add' %.2f ms, first byte after %.2f ms, %zu held packets "
      "replayed\n",
      snapshot_ms, restore_ms, move_ms, first_byte_ms, held.size());
}

TEST_CASE("userstack kernel socket checkpointed and rebuilt in lwIP keeps every byte",
          "[.netns][userstack][netns]") {
  StackLab lab;
  userstack::Stack& st = lab.stack();
  const long long resets0 = lab.resets();
  const Endpoint vip = Endpoint::parse("198.18.0.10:8082").value();
  Pattern up(31);
  Pattern down(32);
  lab.ns().must("ip addr add 198.18.0.10/32 dev lo");
  UniqueFd listener = listen_on(lab.ns(), vip);
  // The client's own address must survive the move: not the VIP (which stops being local).
  UniqueFd client = connect_bound(Endpoint::parse("10.77.0.1:0").value(), vip);
  UniqueFd server = accept_one(listener.get());
  auto cw =
      std::async(std::launch::async, [&] { write_all(client.get(), pattern_bytes(up, 0, kBulk)); });
  CHECK(up.mismatch(0, read_exact(server.get(), kBulk)) == -1);
  cw.get();
  auto cr = std::async(std::launch::async, [&] { return read_exact(client.get(), kBulk); });
  write_all(server.get(), pattern_bytes(down, 0, kBulk));
  CHECK(down.mismatch(0, cr.get()) == -1);
  write_all(client.get(), pattern_bytes(up, kBulk, kUnread));
  wait_inq(server.get(), static_cast<int>(kUnread));
  const FourTuple tuple = tuple_of(server.get());

  auto t0 = std::chrono::steady_clock::now();
  st.freeze(tuple);
  repair::Repairer rep;
  auto cp = rep.checkpoint(server.get());
  REQUIRE_OK(cp);
  const double checkpoint_ms = ms_since(t0);
  CHECK(cp->snapshot.recv_queue.size() == kUnread);
  CHECK(cp->snapshot.opt_timestamps);  // the client negotiated timestamps; lwIP has none
  lab.ns().must("ip addr del 198.18.0.10/32 dev lo");
  listener.reset();
  auto tr = std::chrono::steady_clock::now();
  auto conn = st.restore(cp->snapshot);
  REQUIRE_OK(conn);
  const double restore_ms = ms_since(tr);
  rep.release(std::move(cp->socket));
  server.reset();
  st.thaw(tuple);
  const double move_ms = ms_since(t0);

  userstack::Connection& c = **conn;
  CHECK(up.mismatch(kBulk, conn_read_exact(c, kUnread)) == -1);
  auto t1 = std::chrono::steady_clock::now();
  conn_write_all(c, pattern_bytes(down, kBulk, 4096));
  CHECK(down.mismatch(kBulk, read_exact(client.get(), 4096)) == -1);
  const double first_byte_ms = ms_since(t1);
  auto cw2 = std::async(std::launch::async, [&] {
    write_all(client.get(), pattern_bytes(up, kBulk + kUnread, kBulk));
  });
  CHECK(up.mismatch(kBulk + kUnread, conn_read_exact(c, kBulk)) == -1);
  cw2.get();
  auto cr2 = std::async(std::launch::async, [&] { return read_exact(client.get(), kBulk); });
  conn_write_all(c, pattern_bytes(down, kBulk + 4096, kBulk));
  CHECK(down.mismatch(kBulk + 4096, cr2.get()) == -1);
  ::shutdown(client.get(), SHUT_WR);
  conn_expect_eof(c);
  REQUIRE_OK(c.shutdown_write());
  expect_eof(client.get());
  conn->reset();
  // The released repair-mode socket counts once in EstabResets (ESTABLISHED -> CLOSE in one
  // netns with the client) without sending anything: OutRsts stays, and the client's clean EOF
  // above shows no RST reached it.
  CHECK(lab.resets() == resets0 + 1);
  std::printf(
      "userstack n2u: kernel checkpoint %.3f ms, lwIP restore %.3f ms, whole move incl. "
      "'ip addr del' %.2f ms, first byte after %.2f ms\n",
      checkpoint_ms, restore_ms, move_ms, first_byte_ms);
}

// n2u with more sent-but-unacknowledged bytes than lwIP's send buffer (64 KiB): the peer
// received them all, but the kernel socket never saw its ACKs (dropped here with nftables; in
// a migration the ACKs went out during the source's freeze or the peer's delayed ACK came
// late). lwIP re-sends the in-flight bytes; the peer answers with an ACK of everything it has.
// An ACK beyond what lwIP has sent is "ACK for unsent data" to lwIP and ignored, so a restore
// that queued only 64 KiB of them stalled for good (rendr-demo --method mixed: curl exit 56
// after 60 s when the flow's source had seen no peer ACK).
TEST_CASE("userstack n2u: the peer's ACK of more than 64 KiB of restored in-flight bytes is taken",
          "[.netns][userstack][netns]") {
  StackLab lab;
  userstack::Stack& st = lab.stack();
  const Endpoint vip = Endpoint::parse("198.18.0.12:8084").value();
  Pattern down(33);
  constexpr std::size_t kUnacked = 200000;  // > 3 x 64 KiB, < lwIP's queue limit
  lab.ns().must("ip addr add 198.18.0.12/32 dev lo");
  UniqueFd listener = listen_on(lab.ns(), vip);
  UniqueFd client = connect_bound(Endpoint::parse("10.77.0.1:0").value(), vip);
  UniqueFd server = accept_one(listener.get());
  // Windows first grow with ACKs flowing (the client's initial window is 64 KiB).
  write_all(server.get(), pattern_bytes(down, 0, kBulk));
  CHECK(down.mismatch(0, read_exact(client.get(), kBulk)) == -1);
  const std::uint16_t cport = local_of(client.get()).port;
  lab.ns().must("nft add table inet rendr_acks && nft add chain inet rendr_acks out "
                "'{ type filter hook output priority 0; }' && nft add rule inet rendr_acks out "
                "ip saddr 10.77.0.1 tcp sport " +
                std::to_string(cport) + " drop");
  write_all(server.get(), pattern_bytes(down, kBulk, kUnacked));
  CHECK(down.mismatch(kBulk, read_exact(client.get(), kUnacked)) == -1);
  const FourTuple tuple = tuple_of(server.get());

  st.freeze(tuple);
  repair::Repairer rep;
  auto cp = rep.checkpoint(server.get());
  REQUIRE_OK(cp);
  CHECK(cp->snapshot.send_unacked() == kUnacked);  // the peer has every byte, acked none
  lab.ns().must("ip addr del 198.18.0.12/32 dev lo && nft delete table inet rendr_acks");
  listener.reset();
  auto conn = st.restore(cp->snapshot);
  REQUIRE_OK(conn);
  rep.release(std::move(cp->socket));
  server.reset();
  st.thaw(tuple);

  // The next bytes reach the peer only once lwIP has taken the peer's ACK of all kUnacked.
  userstack::Connection& c = **conn;
  auto t1 = std::chrono::steady_clock::now();
  conn_write_all(c, pattern_bytes(down, kBulk + kUnacked, 4096));
  CHECK(down.mismatch(kBulk + kUnacked, read_exact(client.get(), 4096, 5000)) == -1);
  std::printf("userstack n2u: %zu bytes restored unacked, next bytes after %.2f ms\n", kUnacked,
              ms_since(t1));
  ::shutdown(client.get(), SHUT_WR);
  conn_expect_eof(c);
  REQUIRE_OK(c.shutdown_write());
  expect_eof(client.get());
}
