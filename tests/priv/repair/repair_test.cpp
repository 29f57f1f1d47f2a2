// SPDX-License-Identifier: Apache-2.0
// Checkpoint/restore of real kernel sockets across network namespaces, with an unmodified kernel
// TCP peer. Every test builds its own gateway lab (support/gateway_fixture.hpp: tools/lab's lab).
#include "support/gateway_fixture.hpp"
#include "support/require_result.hpp"
#include "support/sockets.hpp"
#include "migrate_util.hpp"

#include <rendr/repair/repair.hpp>

#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

using namespace rendr;
using namespace rendr::test;

namespace {


tcp_info info_of(int fd) {
  tcp_info ti{};
  socklen_t len = sizeof ti;
  REQUIRE(::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0);
  return ti;
}

}  // namespace

TEST_CASE("checkpoint + restore moves a socket with data in every queue to another netns",
          "[.repair][repair][netns]") {
  const bool v6 = GENERATE(false, true);
  INFO((v6 ? "IPv6" : "IPv4"));
  GatewayFixture lab;
  Flow f = open_flow(lab, v6, 7000);
  Pattern to_server(11);
  Pattern to_peer(22);
  const long long resets_before = peer_resets(lab.peer);

  // Unread data in the server's receive queue.
  write_all(f.client.get(), pattern_bytes(to_server, 0, 3000));
  wait_inq(f.server.get(), 3000);
  // Freeze, then write: what leaves is dropped (sent, unacked); the rest waits (unsent).
  lab.freeze(f.tuple);
  set_nonblocking(f.server.get(), true);
  std::size_t queued = write_until_full(f.server.get(), to_peer, 0);
  REQUIRE(queued > 0);

  repair::Repairer rep;
  auto cp = rep.checkpoint(f.server.get());
  REQUIRE(cp.ok());
  const TcpSnapshot& s = cp->snapshot;
  CHECK(s.state == TcpState::established);
  CHECK(s.tuple == f.tuple);
  CHECK(s.recv_queue.size() == 3000);
  CHECK(s.send_queue.size() == queued);
  CHECK(s.send_unacked() > 0);
  CHECK(s.send_unsent > 0);
  CHECK(s.mss_clamp > 0);
  CHECK(s.has_window);
  CHECK(to_server.mismatch(0, s.recv_queue) == -1);
  CHECK(to_peer.mismatch(0, s.send_queue) == -1);

  // Source gone (silently), flow steered to B, restored there.
  rep.release(std::move(cp->socket));
  f.server.reset();
  lab.route_vip_to(lab.b);
  UniqueFd restored;
  {
    NetnsScope in_b(lab.b);
    auto r = rep.restore(s);
    REQUIRE(r.ok());
    restored = std::move(*r);
  }
  lab.unfreeze();
  CHECK(tuple_of(restored.get()) == f.tuple);

  // Everything arrives exactly once, in order, both ways; then more traffic; then a clean close.
  auto got = read_exact(restored.get(), 3000);
  CHECK(to_server.mismatch(0, got) == -1);
  auto got_peer = read_exact(f.client.get(), queued, 15000);
  CHECK(to_peer.mismatch(0, got_peer) == -1);
  write_all(restored.get(), pattern_bytes(to_peer, queued, 100000));
  CHECK(to_peer.mismatch(queued, read_exact(f.client.get(), 100000)) == -1);
  write_all(f.client.get(), pattern_bytes(to_server, 3000, 100000));
  CHECK(to_server.mismatch(3000, read_exact(restored.get(), 100000)) == -1);
  ::shutdown(f.client.get(), SHUT_WR);
  expect_eof(restored.get());
  restored.reset();
  expect_eof(f.client.get());
  CHECK(peer_resets(lab.peer) == resets_before);
}

TEST_CASE("a checkpoint given the options tuple and descriptor read before the freeze moves a "
          "socket losslessly",
          "[.repair][repair][netns]") {
  // The agent's order: options, 4-tuple and a duplicate taken while the flow runs; inside the
  // freeze the checkpoint reads neither names nor options and makes no dup.
  const bool v6 = GENERATE(false, true);
  INFO((v6 ? "IPv6" : "IPv4"));
  GatewayFixture lab;
  Flow f = open_flow(lab, v6, 7004);
  const int one = 1;
  REQUIRE(::setsockopt(f.server.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
  REQUIRE(::setsockopt(f.server.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
  Pattern to_server(31);
  Pattern to_peer(32);
  write_all(f.client.get(), pattern_bytes(to_server, 0, 4000));
  wait_inq(f.server.get(), 4000);

  repair::Repairer rep;
  auto opts = rep.read_options(f.server.get());
  REQUIRE_OK(opts);
  auto tuple = FourTuple::of_socket(f.server.get());
  REQUIRE_OK(tuple);
  auto dup = UniqueFd::dup(f.server.get());
  REQUIRE_OK(dup);
  UniqueFd mine = std::move(*dup);
  const int mine_fd = mine.get();

  lab.freeze(f.tuple);
  set_nonblocking(f.server.get(), true);
  const std::size_t queued = write_until_full(f.server.get(), to_peer, 0);
  REQUIRE(queued > 0);
  auto cp = rep.checkpoint(mine, &*opts, &*tuple);
  REQUIRE_OK(cp);
  CHECK_FALSE(mine.valid());
  CHECK(cp->socket.fd() == mine_fd);
  const TcpSnapshot& s = cp->snapshot;
  CHECK(s.tuple == f.tuple);
  CHECK(s.options.nodelay);
  CHECK(s.options.reuseaddr);
  CHECK(to_server.mismatch(0, s.recv_queue) == -1);
  CHECK(to_peer.mismatch(0, s.send_queue) == -1);

  rep.release(std::move(cp->socket));
  f.server.reset();
  lab.route_vip_to(lab.b);
  UniqueFd restored;
  {
    NetnsScope in_b(lab.b);
    auto r = rep.restore(s);
    REQUIRE_OK(r);
    restored = std::move(*r);
  }
  lab.unfreeze();
  CHECK(tuple_of(restored.get()) == f.tuple);
  int v = 0;
  socklen_t len = sizeof v;
  REQUIRE(::getsockopt(restored.get(), IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0);
  CHECK(v == 1);
  REQUIRE(::getsockopt(restored.get(), SOL_SOCKET, SO_REUSEADDR, &v, &len) == 0);
  CHECK(v == 1);
  CHECK(to_server.mismatch(0, read_exact(restored.get(), 4000)) == -1);
  CHECK(to_peer.mismatch(0, read_exact(f.client.get(), queued, 15000)) == -1);
  write_all(f.client.get(), pattern_bytes(to_server, 4000, 50000));
  CHECK(to_server.mismatch(4000, read_exact(restored.get(), 50000)) == -1);
}

TEST_CASE("thaw returns a frozen socket to service in place", "[.repair][repair][netns]") {
  GatewayFixture lab;
  Flow f = open_flow(lab, false, 7001);
  Pattern p(5);
  write_all(f.client.get(), pattern_bytes(p, 0, 5000));
  wait_inq(f.server.get(), 5000);
  repair::Repairer rep;
  auto cp = rep.checkpoint(f.server.get());
  REQUIRE(cp.ok());
  auto fd = rep.thaw(std::move(cp->socket));
  REQUIRE(fd.ok());
  CHECK(p.mismatch(0, read_exact(f.server.get(), 5000)) == -1);
  write_all(f.server.get(), pattern_bytes(p, 0, 70000));
  CHECK(p.mismatch(0, read_exact(f.client.get(), 70000)) == -1);
}

TEST_CASE("options read before the freeze are what a checkpoint reads in repair mode",
          "[.repair][repair][netns]") {
  GatewayFixture lab;
  Flow f = open_flow(lab, false, 7003);
  const int one = 1;
  const int idle = 77;
  const int tos = 0x10;
  REQUIRE(::setsockopt(f.server.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
  REQUIRE(::setsockopt(f.server.get(), SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) == 0);
  REQUIRE(::setsockopt(f.server.get(), IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) == 0);
  REQUIRE(::setsockopt(f.server.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
  REQUIRE(::setsockopt(f.server.get(), IPPROTO_IP, IP_TOS, &tos, sizeof tos) == 0);
  repair::Repairer rep;
  auto before = rep.read_options(f.server.get());
  REQUIRE_OK(before);
  CHECK(before->nodelay);
  CHECK(before->keepalive);
  CHECK(before->keepidle == 77);
  CHECK(before->reuseaddr);
  CHECK(before->tos == 0x10);
  auto plain = rep.checkpoint(f.server.get());
  REQUIRE_OK(plain);
  CHECK(plain->snapshot.options == *before);
  REQUIRE_OK(rep.thaw(std::move(plain->socket)));
  auto cp = rep.checkpoint(f.server.get(), &*before);
  REQUIRE_OK(cp);
  CHECK(cp->snapshot.options == *before);
  REQUIRE_OK(rep.thaw(std::move(cp->socket)));
  // Thawed twice, the connection still works both ways and SO_REUSEADDR is back.
  int reuse = 0;
  socklen_t len = sizeof reuse;
  REQUIRE(::getsockopt(f.server.get(), SOL_SOCKET, SO_REUSEADDR, &reuse, &len) == 0);
  CHECK(reuse == 1);
  Pattern p(9);
  write_all(f.client.get(), pattern_bytes(p, 0, 3000));
  CHECK(p.mismatch(0, read_exact(f.server.get(), 3000)) == -1);
  write_all(f.server.get(), pattern_bytes(p, 0, 3000));
  CHECK(p.mismatch(0, read_exact(f.client.get(), 3000)) == -1);
}

TEST_CASE("checkpoint refuses sockets it cannot migrate, naming why", "[.repair][repair][netns]") {
  GatewayFixture lab;
  repair::Repairer rep;
  auto vip = *Endpoint::parse_address(GatewayFixture::kVip4, 7002);
  auto listener = listen_on(lab.a, vip);
  auto r = rep.checkpoint(listener.get());
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().message(), Catch::Contains("not a connected socket"));
  int udp = ::socket(AF_INET, SOCK_DGRAM, 0);
  auto u = rep.checkpoint(udp);
  ::close(udp);
  REQUIRE_FALSE(u.ok());
  CHECK_THAT(u.error().message(), Catch::Contains("not a TCP socket"));
}

TEST_CASE("a staged restore transmits nothing until activated, and releasing it is silent",
          "[.repair][repair][netns]") {
  GatewayFixture lab;
  Flow f = open_flow(lab, false, 7003);
  Pattern up(31);
  Pattern down(32);
  write_all(f.client.get(), pattern_bytes(up, 0, 2000));
  wait_inq(f.server.get(), 2000);
  const long long resets_before = peer_resets(lab.peer);
  repair::Repairer rep;

  // Abort path: staged on B while A stays frozen, then dropped; A thaws and carries on.
  lab.freeze(f.tuple);
  auto cp = rep.checkpoint(f.server.get());
  REQUIRE(cp.ok());
  const long long b_out_before = snmp_counter(lab.b, "Tcp", "OutSegs");
  const long long b_rst_before = snmp_counter(lab.b, "Tcp", "OutRsts");
  {
    NetnsScope in_b(lab.b);
    auto staged = rep.restore_staged(cp->snapshot);
    REQUIRE(staged.ok());
    CHECK(staged->tuple() == f.tuple);
    CHECK(staged->snapshot().recv_queue.size() == 2000);
    rep.release(std::move(*staged));
  }
  lab.unfreeze();
  auto thawed = rep.thaw(std::move(cp->socket));
  REQUIRE(thawed.ok());
  // B's stack sent nothing (its socket never left repair mode), and A still works.
  CHECK(snmp_counter(lab.b, "Tcp", "OutSegs") == b_out_before);
  CHECK(snmp_counter(lab.b, "Tcp", "OutRsts") == b_rst_before);
  CHECK(up.mismatch(0, read_exact(f.server.get(), 2000)) == -1);
  write_all(f.server.get(), pattern_bytes(down, 0, 5000));
  CHECK(down.mismatch(0, read_exact(f.client.get(), 5000)) == -1);

  // Commit path: stage on B, steer, activate.
  write_all(f.client.get(), pattern_bytes(up, 2000, 3000));
  wait_inq(f.server.get(), 3000);
  lab.freeze(f.tuple);
  auto cp2 = rep.checkpoint(f.server.get());
  REQUIRE(cp2.ok());
  repair::StagedSocket staged;
  {
    NetnsScope in_b(lab.b);
    auto s = rep.restore_staged(std::move(cp2->snapshot));
    REQUIRE(s.ok());
    staged = std::move(*s);
  }
  rep.release(std::move(cp2->socket));
  f.server.reset();
  lab.route_vip_to(lab.b);
  lab.unfreeze();
  UniqueFd live;
  {
    NetnsScope in_b(lab.b);
    auto fd = rep.activate(std::move(staged));
    REQUIRE(fd.ok());
    live = std::move(*fd);
  }
  CHECK(up.mismatch(2000, read_exact(live.get(), 3000)) == -1);
  write_all(live.get(), pattern_bytes(down, 5000, 70000));
  CHECK(down.mismatch(5000, read_exact(f.client.get(), 70000)) == -1);
  CHECK(peer_resets(lab.peer) == resets_before);
}

TEST_CASE("a restored socket sends full-size segments at once (the saved MSS, not 524)",
          "[.repair][repair][netns][mss]") {
  const bool v6 = GENERATE(false, true);
  GatewayFixture lab;
  Flow f = open_flow(lab, v6, 7004);
  const tcp_info before = info_of(f.server.get());
  REQUIRE(before.tcpi_snd_mss > 1000);
  Pattern p(41);
  UniqueFd r = migrate(lab, f.server, lab.b);
  // Right after restore, before anything was sent or received: no PMTU event has happened that
  // could have recomputed the MSS since the repair-mode connect.
  CHECK(info_of(r.get()).tcpi_snd_mss == before.tcpi_snd_mss);
  for (std::size_t off = 0; off < (1U << 20); off += 65536) {
    write_all(r.get(), pattern_bytes(p, off, 65536));
    CHECK(p.mismatch(off, read_exact(f.client.get(), 65536)) == -1);
  }
  CHECK(info_of(r.get()).tcpi_snd_mss == before.tcpi_snd_mss);
}

TEST_CASE("a server restarts on its port right after a migrated or thawed connection closed",
          "[.repair][repair][netns][reuseaddr]") {
  const bool thawed = GENERATE(false, true);
  INFO((thawed ? "thawed" : "migrated"));
  GatewayFixture lab;
  Flow f = open_flow(lab, false, 7005);  // the listener has SO_REUSEADDR, so the connection too
  UniqueFd conn;
  const Netns* host = &lab.a;
  if (thawed) {
    repair::Repairer rep;
    auto cp = rep.checkpoint(f.server.get());
    REQUIRE(cp.ok());
    auto fd = rep.thaw(std::move(cp->socket));
    REQUIRE(fd.ok());
    conn = std::move(*fd);
    f.server.reset();
  } else {
    conn = migrate(lab, f.server, lab.b);
    host = &lab.b;
  }
  int reuse = 0;
  socklen_t len = sizeof reuse;
  REQUIRE(::getsockopt(conn.get(), SOL_SOCKET, SO_REUSEADDR, &reuse, &len) == 0);
  CHECK(reuse == 1);
  // The server closes first, so its end of the connection stays in TIME_WAIT.
  ::shutdown(conn.get(), SHUT_WR);
  expect_eof(f.client.get());
  f.client.reset();
  expect_eof(conn.get());
  conn.reset();
  f.listener.reset();
  CHECK_NOTHROW(listen_on(*host, *Endpoint::parse_address(GatewayFixture::kVip4, 7005)));
}

TEST_CASE("a delayed ACK the old socket owed reaches the peer right after restore",
          "[.repair][repair][netns][kick]") {
  // The server acknowledges late (TCP_QUICKACK 0: delayed ACKs, >= 40 ms) and is checkpointed
  // and released before that ACK leaves, so the peer's byte is unacknowledged. The snapshot shows
  // the debt (rcv_wup behind rcv_nxt) and restore kicks an ACK out; without it the peer would
  // learn only from its own retransmission (RTO >= 200 ms).
  GatewayFixture lab;
  Flow f = open_flow(lab, false, 7006);
  const int off = 0;
  REQUIRE(::setsockopt(f.server.get(), IPPROTO_TCP, TCP_QUICKACK, &off, sizeof off) == 0);
  TcpSnapshot snap;
  bool owed = false;
  for (int attempt = 0; attempt < 5 && !owed; ++attempt) {
    const std::byte b{0x42};
    write_all(f.client.get(), {&b, 1});
    wait_inq(f.server.get(), attempt + 1);
    repair::Repairer rep;
    auto cp = rep.checkpoint(f.server.get());
    REQUIRE(cp.ok());
    snap = cp->snapshot;
    const std::uint32_t rcv_nxt =
        snap.recv_seq + static_cast<std::uint32_t>(snap.recv_queue.size());
    owed = snap.has_window && snap.window.rcv_wup != rcv_nxt;
    if (owed) {
      rep.release(std::move(cp->socket));  // before the delayed ACK: the peer never gets it
      f.server.reset();
    } else {
      // The delayed ACK left before the checkpoint (a slow moment): try again.
      auto fd = rep.thaw(std::move(cp->socket));
      REQUIRE(fd.ok());
      f.server = std::move(*fd);
      REQUIRE(::setsockopt(f.server.get(), IPPROTO_TCP, TCP_QUICKACK, &off, sizeof off) == 0);
    }
  }
  REQUIRE(owed);
  REQUIRE(info_of(f.client.get()).tcpi_unacked > 0);
  lab.route_vip_to(lab.b);
  UniqueFd restored;
  {
    NetnsScope in_b(lab.b);
    repair::Repairer rep;
    auto r = rep.restore(snap);
    REQUIRE(r.ok());
    restored = std::move(*r);
  }
  // The kick's ACK is processed inline on this machine; allow a generous 100 ms, still half the
  // peer's minimum RTO.
  bool acked = false;
  for (int i = 0; i < 100 && !acked; ++i) {
    acked = info_of(f.client.get()).tcpi_unacked == 0;
    if (!acked) {
      ::poll(nullptr, 0, 1);
    }
  }
  CHECK(acked);
  CHECK(read_exact(restored.get(), snap.recv_queue.size()) == snap.recv_queue);
}
