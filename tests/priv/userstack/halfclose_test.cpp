// SPDX-License-Identifier: Apache-2.0
// Snapshot + rebuild in lwIP of half-closed connections: CLOSE_WAIT (with unread data and the
// peer's FIN), LAST_ACK (our FIN in flight), FIN_WAIT1 (our FIN in flight with unacked data)
// and FIN_WAIT2. The flow is frozen around each rebuild; a FIN lwIP emits while frozen is
// dropped by the shim, so the rebuilt PCB must send it again.
#include "conn_io.hpp"
#include "tun_lab.hpp"

#include "support/sockets.hpp"
#include "support/require_result.hpp"

#include <rendr/userstack/stack.hpp>

#include <catch2/catch.hpp>

#include <future>

using namespace rendr;
using namespace rendr::test;
using namespace std::chrono_literals;

namespace {

// rebuild freezes, snapshots, restores and thaws |conn| in place; returns the snapshot.
TcpSnapshot rebuild(userstack::Stack& st, userstack::ConnectionPtr& conn,
                    void (*before_snapshot)(userstack::Connection&) = nullptr) {
  const FourTuple t = conn->tuple();
  st.freeze(t);
  if (before_snapshot != nullptr) {
    before_snapshot(*conn);
  }
  auto snap = st.snapshot(*conn);
  REQUIRE_OK(snap);
  auto r = st.restore(*snap);
  REQUIRE_OK(r);
  conn = std::move(r).value();
  st.thaw(t);
  return *snap;
}

void wait_state(userstack::Connection& c, TcpState s) {
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (c.info().state != s) {
    if (std::chrono::steady_clock::now() > deadline) {
      FAIL("state " << to_string(c.info().state) << ", expected " << to_string(s));
    }
    pollfd pf{c.event_fd(), POLLIN, 0};
    ::poll(&pf, 1, 10);
    c.clear_event();
  }
}

}  // namespace

TEST_CASE("userstack rebuilds CLOSE_WAIT and LAST_ACK connections without losing a byte",
          "[.netns][userstack][netns]") {
  StackLab lab;
  userstack::Stack& st = lab.stack();
  const long long resets0 = lab.resets();
  Pattern up(41);
  Pattern down(42);
  UniqueFd client = connect_from(lab.ns(), Endpoint::parse("198.18.0.11:9000").value());
  auto acc = st.accept(5s);
  REQUIRE_OK(acc);
  userstack::ConnectionPtr conn = std::move(acc).value();

  constexpr std::size_t kUp = 50000;
  write_all(client.get(), pattern_bytes(up, 0, kUp));
  ::shutdown(client.get(), SHUT_WR);
  wait_recv_queue(*conn, kUp);
  wait_state(*conn, TcpState::close_wait);

  TcpSnapshot s1 = rebuild(st, conn);
  CHECK(s1.state == TcpState::close_wait);
  CHECK(s1.peer_fin);
  CHECK(s1.recv_queue.size() == kUp);
  CHECK(conn->info().state == TcpState::close_wait);
  CHECK(up.mismatch(0, conn_read_exact(*conn, 20000)) == -1);
  TcpSnapshot s2 = rebuild(st, conn);
  CHECK(s2.recv_queue.size() == kUp - 20000);
  CHECK(s2.recv_seq == s1.recv_seq + 20000);
  CHECK(up.mismatch(20000, conn_read_exact(*conn, kUp - 20000)) == -1);
  conn_expect_eof(*conn);

  // Send more than lwIP's buffer while the client reads, then FIN while frozen: LAST_ACK.
  constexpr std::size_t kDown = 300000;
  auto cr = std::async(std::launch::async, [&] { return read_exact(client.get(), kDown); });
  conn_write_all(*conn, pattern_bytes(down, 0, kDown));
  TcpSnapshot s3 =
      rebuild(st, conn, [](userstack::Connection& c) { REQUIRE_OK(c.shutdown_write()); });
  CHECK(s3.state == TcpState::last_ack);
  CHECK(s3.fin_queued);
  CHECK(s3.peer_fin);
  CHECK(down.mismatch(0, cr.get()) == -1);
  expect_eof(client.get());
  CHECK(lab.resets() == resets0);
  CHECK(st.counters().tx_discarded > 0);  // the FIN the old PCB sent while frozen
}

TEST_CASE("userstack rebuilds FIN_WAIT1 and FIN_WAIT2 connections without losing a byte",
          "[.netns][userstack][netns]") {
  StackLab lab;
  userstack::Stack& st = lab.stack();
  const long long resets0 = lab.resets();
  Pattern up(51);
  Pattern down(52);
  UniqueFd client = connect_from(lab.ns(), Endpoint::parse("[fd99::11]:9001").value());
  auto acc = st.accept(5s);
  REQUIRE_OK(acc);
  userstack::ConnectionPtr conn = std::move(acc).value();

  // Our data and FIN leave while frozen (dropped): FIN_WAIT1 with the whole queue unacked.
  constexpr std::size_t kDown = 50000;
  st.freeze(conn->tuple());
  conn_write_all(*conn, pattern_bytes(down, 0, kDown));
  TcpSnapshot s1 =
      rebuild(st, conn, [](userstack::Connection& c) { REQUIRE_OK(c.shutdown_write()); });
  CHECK(s1.state == TcpState::fin_wait1);
  CHECK(s1.fin_queued);
  CHECK(s1.send_queue.size() == kDown);
  CHECK(down.mismatch(0, read_exact(client.get(), kDown)) == -1);
  expect_eof(client.get());
  wait_state(*conn, TcpState::fin_wait2);

  TcpSnapshot s2 = rebuild(st, conn);
  CHECK(s2.state == TcpState::fin_wait2);
  CHECK(s2.send_queue.empty());
  CHECK(s2.send_seq == s1.send_seq + kDown);
  CHECK(conn->info().state == TcpState::fin_wait2);
  // The peer keeps sending into our half-open side, then closes.
  constexpr std::size_t kUp = 200000;
  auto cw = std::async(std::launch::async, [&] {
    write_all(client.get(), pattern_bytes(up, 0, kUp));
    ::shutdown(client.get(), SHUT_WR);
  });
  CHECK(up.mismatch(0, conn_read_exact(*conn, 100000)) == -1);
  rebuild(st, conn);
  CHECK(up.mismatch(100000, conn_read_exact(*conn, kUp - 100000)) == -1);
  cw.get();
  conn_expect_eof(*conn);
  INFO("EstabResets " << snmp_counter(lab.ns(), "Tcp", "EstabResets") << " OutRsts "
                      << snmp_counter(lab.ns(), "Tcp", "OutRsts"));
  CHECK(lab.resets() == resets0);
}
