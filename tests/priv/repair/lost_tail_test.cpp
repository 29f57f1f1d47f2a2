// SPDX-License-Identifier: Apache-2.0
// A tail the network lost just before the freeze: the server's last segments never reached the
// peer (an nftables rule in the peer drops them), then the server's socket is frozen,
// checkpointed, released and restored. The old socket counted those bytes as sent; no ACK for
// them can come. Restored as transmitted, they waited for the restored socket's retransmission
// timer - 4.1-4.3 s in 3 of 3 runs here (no RTT sample yet) - and a download stalled that long.
//
// Repairer::ask_peer_ack asks the peer while the flow is frozen: one byte it already has, which
// it answers at once with an ACK of what it received; the freeze records that ACK and
// activate() resends the missing tail as fresh data. The tail must arrive well inside Linux's
// minimum RTO (200 ms), intact and in order.
#include "support/netns.hpp"
#include "support/pattern.hpp"
#include "support/require_result.hpp"
#include "support/sockets.hpp"

#include <rendr/ebpf/freezer.hpp>
#include <rendr/repair/repair.hpp>

#include <catch2/catch.hpp>

#include <linux/sockios.h>
#include <net/if.h>
#include <poll.h>
#include <sys/ioctl.h>

#include <chrono>
#include <cstdio>
#include <future>
#include <optional>
#include <string>

using namespace rendr;
using namespace rendr::test;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kWarmup = 1U << 20;
constexpr std::size_t kTail = 32U << 10;  // what the network loses
// Linux's minimum RTO is 200 ms: a tail recovered by a timer cannot arrive sooner.
constexpr double kMaxTailMs = 150;

void poll_ms(int ms) {
  pollfd none{-1, 0, 0};
  ::poll(&none, 0, ms);
}

void run_lost_tail(const std::string& srv_addr, const std::string& peer_addr,
                   const std::string& ip_flags) {
  Netns srv = Netns::create("losttail-srv");
  Netns peer = Netns::create("losttail-peer");
  veth(srv, "vs", peer, "vp");
  srv.must("ip addr add " + srv_addr + " dev vs " + ip_flags);
  peer.must("ip addr add " + peer_addr + " dev vp " + ip_flags);

  const std::string srv_ip = srv_addr.substr(0, srv_addr.find('/'));
  Endpoint ep = *Endpoint::parse_address(srv_ip, 0);
  UniqueFd listener = listen_on(srv, ep);
  ep.port = local_of(listener.get()).port;
  UniqueFd client = connect_from(peer, ep);
  UniqueFd server = accept_one(listener.get());
  Pattern down(91);

  // Warm-up: an RTT sample and a congestion window for the old socket.
  auto warm = std::async(std::launch::async,
                         [&] { write_all(server.get(), pattern_bytes(down, 0, kWarmup)); });
  REQUIRE(down.mismatch(0, read_exact(client.get(), kWarmup)) == -1);
  warm.get();

  // The network loses the server's next segments: the peer drops them on arrival.
  peer.must("nft add table inet rendr_losttail '{ chain in { type filter hook input priority 0; "
            "policy accept; tcp sport " + std::to_string(ep.port) + " drop; }; }'");
  write_all(server.get(), pattern_bytes(down, kWarmup, kTail));
  for (int i = 0; i < 100 && in_flight(server.get()) < static_cast<int>(kTail); ++i) {
    poll_ms(1);
  }
  REQUIRE(in_flight(server.get()) == static_cast<int>(kTail));
  poll_ms(2);

  auto f = ebpf::Freezer::create();
  REQUIRE_OK(f);
  {
    NetnsScope in(srv);
    const int vs = static_cast<int>(::if_nametoindex("vs"));
    REQUIRE(vs > 0);
    REQUIRE_OK(f->attach(vs));
  }
  const FourTuple tuple = tuple_of(server.get());
  REQUIRE_OK(f->freeze(tuple));
  repair::Repairer rep;
  auto cp = rep.checkpoint(server.get());
  REQUIRE_OK(cp);
  REQUIRE(cp->snapshot.send_unacked() == kTail);
  peer.must("nft delete table inet rendr_losttail");

  // Ask the peer; its answer is recorded by the freeze.
  std::optional<repair::PeerAck> pa;
  {
    NetnsScope in(srv);
    REQUIRE_OK(rep.ask_peer_ack(cp->socket, cp->snapshot));
  }
  const Clock::time_point asked = Clock::now();
  while (!pa && Clock::now() < asked + 500ms) {
    auto c = f->counters(tuple);
    REQUIRE_OK(c);
    if (c->peer_ack) {
      pa = repair::PeerAck{*c->peer_ack, c->peer_window};
    } else {
      poll_ms(1);
    }
  }
  REQUIRE(pa);
  // The peer has nothing of the tail: it acknowledges exactly the old socket's snd_una.
  CHECK(pa->ack == cp->snapshot.send_seq);

  rep.release(std::move(cp->socket));
  server.reset();
  listener.reset();
  Result<UniqueFd> restored = make_error(std::errc::invalid_argument, "not run");
  Clock::time_point t0;
  {
    NetnsScope in(srv);
    auto staged = rep.restore_staged(cp->snapshot);
    REQUIRE_OK(staged);
    // The agent's order (agents/src/native_flow.cpp): hold, activate and replay, lift.
    REQUIRE_OK(f->hold(tuple));
    auto replay = f->take_dropped(tuple);
    REQUIRE_OK(replay);
    t0 = Clock::now();
    restored = rep.activate(std::move(*staged), pa, *replay);
    REQUIRE_OK(restored);
    auto last = f->unfreeze_take(tuple);
    REQUIRE_OK(last);
    REQUIRE_OK(rep.replay(tuple, last->held));
  }
  const auto tail = read_exact(client.get(), kTail, 10000);
  const double tail_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::printf("lost tail (%s): %zu bytes lost before the freeze; peer acked %d past snd_una; the "
              "restored socket delivered them in %.1f ms\n",
              srv_ip.c_str(), kTail, static_cast<std::int32_t>(pa->ack - cp->snapshot.send_seq),
              tail_ms);
  CHECK(down.mismatch(kWarmup, tail) == -1);
  CHECK(tail_ms < kMaxTailMs);

  // The connection goes on both ways.
  write_all(restored->get(), pattern_bytes(down, kWarmup + kTail, 4096));
  CHECK(down.mismatch(kWarmup + kTail, read_exact(client.get(), 4096)) == -1);
  Pattern up(92);
  write_all(client.get(), pattern_bytes(up, 0, 4096));
  CHECK(up.mismatch(0, read_exact(restored->get(), 4096)) == -1);
}

}  // namespace

constexpr int kRuns = 3;

TEST_CASE("lost tail: bytes the network lost before the freeze are resent at once (IPv4)",
          "[.repair][repair][freeze_replay][lost_tail][netns]") {
  for (int i = 0; i < kRuns; ++i) {
    run_lost_tail("10.81.0.1/24", "10.81.0.2/24", "");
  }
}

TEST_CASE("lost tail: bytes the network lost before the freeze are resent at once (IPv6)",
          "[.repair][repair][freeze_replay][lost_tail][netns]") {
  for (int i = 0; i < kRuns; ++i) {
    run_lost_tail("fd81::1/64", "fd81::2/64", "nodad");
  }
}
