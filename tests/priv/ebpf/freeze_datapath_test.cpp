// SPDX-License-Identifier: Apache-2.0
// freeze_tc through BPF_PROG_TEST_RUN (STYLE T7): crafted frames against an expectation table.
#include "ebpf_util.hpp"
#include "support/netns.hpp"
#include "support/packet.hpp"

#include <rendr/ebpf/freezer.hpp>
#include <rendr/ebpf/prog_test_run.hpp>

#include <catch2/catch.hpp>

#include <linux/pkt_cls.h>
#include <sched.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

using namespace rendr;
using namespace rendr::ebpf;
using test::endpoint;

namespace {

enum class Hook { ingress, egress };

struct Case {
  std::string name;
  Hook hook;
  std::vector<std::byte> frame;
  std::uint32_t mark;
  std::uint32_t verdict;  // TC_ACT_*
};

std::vector<std::byte> payload(std::size_t n) {
  return std::vector<std::byte>(n, std::byte{0x5a});
}

std::vector<std::byte> tcp(const char* src, const char* dst, std::uint8_t flags = test::kTcpAck,
                           std::size_t len = 0, bool hbh = false) {
  test::TcpFrameSpec s;
  s.src = endpoint(src);
  s.dst = endpoint(dst);
  s.flags = flags;
  s.payload = payload(len);
  s.ipv6_hop_by_hop = hbh;
  return test::tcp_frame(s);
}

std::uint32_t run(const Freezer& f, Hook hook, const std::vector<std::byte>& frame,
                  std::uint32_t mark = 0) {
  auto fds = f.program_fds_for_test();
  SkbRunOptions o;
  o.mark = mark;
  auto r = test_run_skb(hook == Hook::ingress ? fds.ingress : fds.egress, frame, o);
  REQUIRE_OK(r);
  return r->retval;
}

// A Freezer in a fresh netns and the owner's view of two flows: local 10.1.0.1:8080, remote
// 10.2.0.2:40000, and the same over IPv6.
struct FreezerLab {
  explicit FreezerLab(std::string name)
      : ns(test::Netns::create(std::move(name))), in(ns), f(Freezer::create()) {
    REQUIRE_OK(f);
  }
  void freeze_both() {
    REQUIRE_OK(f->freeze(v4));
    REQUIRE_OK(f->freeze(v6));
  }
  test::Netns ns;
  test::NetnsScope in;
  Result<Freezer> f;
  FourTuple v4{endpoint("10.1.0.1:8080"), endpoint("10.2.0.2:40000")};
  FourTuple v6{endpoint("[fd00::1]:443"), endpoint("[fd00::2]:50000")};
};

}  // namespace

TEST_CASE("ebpf: freeze drops a frozen flow in both directions and counts it",
          "[.bpf][ebpf][freeze][datapath]") {
  FreezerLab lab("ebpf-freeze-run");
  lab.freeze_both();
  auto& f = lab.f;
  const FourTuple& v4 = lab.v4;
  const FourTuple& v6 = lab.v6;

  const std::vector<Case> cases = {
      {"v4 out (local->remote, data)", Hook::egress, tcp("10.1.0.1:8080", "10.2.0.2:40000", 0x18, 100), 0, TC_ACT_SHOT},
      {"v4 in (remote->local, data)", Hook::ingress, tcp("10.2.0.2:40000", "10.1.0.1:8080", 0x18, 200), 0, TC_ACT_SHOT},
      {"v4 in RST", Hook::ingress, tcp("10.2.0.2:40000", "10.1.0.1:8080", test::kTcpRst), 0, TC_ACT_SHOT},
      {"v4 out RST (kernel reply)", Hook::egress, tcp("10.1.0.1:8080", "10.2.0.2:40000", test::kTcpRst), 0, TC_ACT_SHOT},
      {"v4 out, wrong mark", Hook::egress, tcp("10.1.0.1:8080", "10.2.0.2:40000"), 0xC115, TC_ACT_SHOT},
      {"v4 out, bypass mark", Hook::egress, tcp("10.1.0.1:8080", "10.2.0.2:40000", test::kTcpFin | test::kTcpAck), 0xC114, TC_ACT_OK},
      {"v4 other remote port", Hook::egress, tcp("10.1.0.1:8080", "10.2.0.2:40001"), 0, TC_ACT_OK},
      {"v4 other remote port in", Hook::ingress, tcp("10.2.0.2:40001", "10.1.0.1:8080"), 0, TC_ACT_OK},
      {"v4 other local addr", Hook::ingress, tcp("10.2.0.2:40000", "10.1.0.9:8080"), 0, TC_ACT_OK},
      {"v4 UDP, same ports", Hook::egress, test::udp_frame(endpoint("10.1.0.1:8080"), endpoint("10.2.0.2:40000")), 0, TC_ACT_OK},
      {"v6 out", Hook::egress, tcp("[fd00::1]:443", "[fd00::2]:50000", 0x18, 300), 0, TC_ACT_SHOT},
      {"v6 in", Hook::ingress, tcp("[fd00::2]:50000", "[fd00::1]:443", test::kTcpAck), 0, TC_ACT_SHOT},
      {"v6 in behind hop-by-hop", Hook::ingress, tcp("[fd00::2]:50000", "[fd00::1]:443", test::kTcpAck, 10, true), 0, TC_ACT_SHOT},
      {"v6 other flow", Hook::ingress, tcp("[fd00::2]:50001", "[fd00::1]:443"), 0, TC_ACT_OK},
      {"v6 UDP", Hook::ingress, test::udp_frame(endpoint("[fd00::2]:50000"), endpoint("[fd00::1]:443")), 0, TC_ACT_OK},
  };

  FreezeCounters want4;
  FreezeCounters want6;
  for (const auto& c : cases) {
    INFO(c.name);
    CHECK(run(*f, c.hook, c.frame, c.mark) == c.verdict);
    bool is_v6 = c.name.rfind("v6", 0) == 0;
    FreezeCounters& w = is_v6 ? want6 : want4;
    if (c.verdict == TC_ACT_SHOT) {
      (c.hook == Hook::ingress ? w.ingress_packets : w.egress_packets) += 1;
      (c.hook == Hook::ingress ? w.ingress_bytes : w.egress_bytes) += c.frame.size();
    } else if (c.mark == 0xC114) {
      w.bypassed_packets += 1;
    }
  }

  for (auto [flow, want] : {std::pair{v4, want4}, std::pair{v6, want6}}) {
    INFO(flow.to_string());
    auto got = f->counters(flow);
    REQUIRE_OK(got);
    CHECK(got->ingress_packets == want.ingress_packets);
    CHECK(got->ingress_bytes == want.ingress_bytes);
    CHECK(got->egress_packets == want.egress_packets);
    CHECK(got->egress_bytes == want.egress_bytes);
    CHECK(got->bypassed_packets == want.bypassed_packets);
  }
  CHECK(want4.ingress_packets == 2);
  CHECK(want4.egress_packets == 3);

  auto count = f->frozen_count();
  REQUIRE_OK(count);
  CHECK(*count == 2);

  // Freezing again keeps the counters.
  REQUIRE_OK(f->freeze(v4));
  auto again = f->counters(v4);
  REQUIRE_OK(again);
  CHECK(again->egress_packets == want4.egress_packets);

  // Unfreeze hands back the final counters; afterwards the flow passes.
  auto last = f->unfreeze(v4);
  REQUIRE_OK(last);
  CHECK(last->ingress_packets == want4.ingress_packets);
  CHECK(run(*f, Hook::egress, tcp("10.1.0.1:8080", "10.2.0.2:40000")) == TC_ACT_OK);
  CHECK(run(*f, Hook::ingress, tcp("10.2.0.2:40000", "10.1.0.1:8080")) == TC_ACT_OK);
  REQUIRE_ERROR(f->counters(v4), std::errc::no_such_file_or_directory, "10.1.0.1:8080");
  REQUIRE_ERROR(f->unfreeze(v4), std::errc::no_such_file_or_directory, "unfreeze");
  // The IPv6 flow is still frozen.
  CHECK(run(*f, Hook::egress, tcp("[fd00::1]:443", "[fd00::2]:50000")) == TC_ACT_SHOT);
}

TEST_CASE("ebpf: freeze remembers the latest ACK the peer sent while frozen",
          "[.bpf][ebpf][freeze][datapath]") {
  FreezerLab lab("ebpf-freeze-ack");
  auto& f = lab.f;
  const FourTuple& v4 = lab.v4;
  REQUIRE_OK(f->freeze(v4));
  auto seg = [](const char* src, const char* dst, std::uint8_t flags, std::uint32_t ack,
                std::uint16_t window = 1000) {
    test::TcpFrameSpec s;
    s.src = endpoint(src);
    s.dst = endpoint(dst);
    s.flags = flags;
    s.ack = ack;
    s.window = window;
    return test::tcp_frame(s);
  };
  auto ack_now = [&]() {
    auto c = f->counters(v4);
    REQUIRE_OK(c);
    return c->peer_ack;
  };
  CHECK_FALSE(ack_now().has_value());
  // Our own segments (egress) and segments without the ACK bit say nothing about the peer.
  CHECK(run(*f, Hook::egress, seg("10.1.0.1:8080", "10.2.0.2:40000", test::kTcpAck, 0x7000)) ==
        TC_ACT_SHOT);
  CHECK(run(*f, Hook::ingress, seg("10.2.0.2:40000", "10.1.0.1:8080", test::kTcpRst, 0x7000)) ==
        TC_ACT_SHOT);
  CHECK_FALSE(ack_now().has_value());
  CHECK(run(*f, Hook::ingress, seg("10.2.0.2:40000", "10.1.0.1:8080", test::kTcpAck,
                                   0xFFFFFF00U)) == TC_ACT_SHOT);
  CHECK(ack_now() == std::optional<std::uint32_t>(0xFFFFFF00U));
  // Across the 2^32 wrap: 0x10 comes after 0xFFFFFF00; an older (reordered) ACK does not win.
  CHECK(run(*f, Hook::ingress, seg("10.2.0.2:40000", "10.1.0.1:8080", test::kTcpAck, 0x10, 777)) ==
        TC_ACT_SHOT);
  CHECK(run(*f, Hook::ingress, seg("10.2.0.2:40000", "10.1.0.1:8080",
                                   test::kTcpAck | test::kTcpPsh, 0xFFFFFFF0U, 5)) == TC_ACT_SHOT);
  CHECK(ack_now() == std::optional<std::uint32_t>(0x10U));
  // The window comes from the ACK that won: 777, not the older ACK's 5.
  CHECK(f->counters(v4)->peer_window == 777);
  // A window update for the same ACK replaces the window.
  CHECK(run(*f, Hook::ingress, seg("10.2.0.2:40000", "10.1.0.1:8080", test::kTcpAck, 0x10, 900)) ==
        TC_ACT_SHOT);
  CHECK(f->counters(v4)->peer_window == 900);
  // The counters are per CPU: a window update for the same ACK seen on another CPU is the
  // peer's latest word too (Linux never moves a window's right edge back), so the widest window
  // of the latest ACK wins, whichever CPU saw it first (the first CPU's, here a closed window,
  // left a restored socket waiting ~200 ms for its zero-window probe).
  const bool two_cpus = std::thread::hardware_concurrency() >= 2;
  if (two_cpus) {
    cpu_set_t saved;
    REQUIRE(::sched_getaffinity(0, sizeof saved, &saved) == 0);
    auto pin = [](int cpu) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu, &one);
      REQUIRE(::sched_setaffinity(0, sizeof one, &one) == 0);
    };
    pin(0);
    CHECK(run(*f, Hook::ingress, seg("10.2.0.2:40000", "10.1.0.1:8080", test::kTcpAck, 0x10, 0)) ==
          TC_ACT_SHOT);
    pin(1);
    CHECK(run(*f, Hook::ingress,
              seg("10.2.0.2:40000", "10.1.0.1:8080", test::kTcpAck, 0x10, 3000)) == TC_ACT_SHOT);
    CHECK(f->counters(v4)->peer_window == 3000);
    pin(0);
    CHECK(run(*f, Hook::ingress,
              seg("10.2.0.2:40000", "10.1.0.1:8080", test::kTcpAck, 0x10, 3100)) == TC_ACT_SHOT);
    CHECK(f->counters(v4)->peer_window == 3100);
    REQUIRE(::sched_setaffinity(0, sizeof saved, &saved) == 0);
  }
  // A bypassed (marked) packet is not a dropped ACK.
  CHECK(run(*f, Hook::ingress, seg("10.2.0.2:40000", "10.1.0.1:8080", test::kTcpAck, 0x20),
            0xC114) == TC_ACT_OK);
  auto last = f->unfreeze(v4);
  REQUIRE_OK(last);
  CHECK(last->peer_ack == std::optional<std::uint32_t>(0x10U));
  CHECK(last->ingress_packets == (two_cpus ? 8U : 5U));
}

TEST_CASE("ebpf: freeze records dropped ingress packets with payload, FIN or RST for replay",
          "[.bpf][ebpf][freeze][datapath]") {
  FreezerLab lab("ebpf-freeze-replay");
  lab.freeze_both();
  auto& f = lab.f;
  const FourTuple& v4 = lab.v4;
  const FourTuple& v6 = lab.v6;
  auto data4 = tcp("10.2.0.2:40000", "10.1.0.1:8080", test::kTcpAck | test::kTcpPsh, 100);
  auto bare4 = tcp("10.2.0.2:40000", "10.1.0.1:8080", test::kTcpAck, 0);
  auto fin4 = tcp("10.2.0.2:40000", "10.1.0.1:8080", test::kTcpAck | test::kTcpFin, 0);
  auto out4 = tcp("10.1.0.1:8080", "10.2.0.2:40000", test::kTcpAck | test::kTcpPsh, 50);
  auto data6 = tcp("[fd00::2]:50000", "[fd00::1]:443", test::kTcpAck | test::kTcpPsh, 30);
  CHECK(run(*f, Hook::ingress, data4) == TC_ACT_SHOT);
  CHECK(run(*f, Hook::ingress, bare4) == TC_ACT_SHOT);   // summed up by peer_ack only
  CHECK(run(*f, Hook::egress, out4) == TC_ACT_SHOT);     // ours: never replayed
  CHECK(run(*f, Hook::ingress, data6) == TC_ACT_SHOT);
  CHECK(run(*f, Hook::ingress, fin4) == TC_ACT_SHOT);
  // (BPF_PROG_TEST_RUN carries at most a page: packets up to 64 KiB, GRO aggregates, are
  // covered on a real veth by tests/priv/repair/freeze_replay_test.cpp.)
  auto l3 = [](const std::vector<std::byte>& frame) {
    return std::vector<std::byte>(frame.begin() + 14, frame.end());  // without Ethernet
  };
  auto got4 = f->take_dropped(v4);
  REQUIRE_OK(got4);
  REQUIRE(got4->size() == 2);
  CHECK((*got4)[0] == l3(data4));
  CHECK((*got4)[1] == l3(fin4));
  auto c4 = f->counters(v4);
  REQUIRE_OK(c4);
  CHECK(c4->replay_packets == 2);
  CHECK(c4->replay_skipped == 0);
  CHECK(c4->replay_lost == 0);
  // Taken means forgotten.
  auto again = f->take_dropped(v4);
  REQUIRE_OK(again);
  CHECK(again->empty());
  auto got6 = f->take_dropped(v6);
  REQUIRE_OK(got6);
  REQUIRE(got6->size() == 1);
  CHECK((*got6)[0] == l3(data6));
  // Unfreeze forgets what was not taken; a new freeze starts empty.
  CHECK(run(*f, Hook::ingress, data4) == TC_ACT_SHOT);
  REQUIRE_OK(f->unfreeze(v4));
  REQUIRE_OK(f->freeze(v4));
  auto fresh = f->take_dropped(v4);
  REQUIRE_OK(fresh);
  CHECK(fresh->empty());
}

TEST_CASE("ebpf: a held flow lets its socket and the peer's bare ACKs through and keeps the "
          "peer's data for replay",
          "[.bpf][ebpf][freeze][datapath]") {
  FreezerLab lab("ebpf-freeze-hold");
  auto& f = lab.f;
  const FourTuple& v4 = lab.v4;
  // Only a frozen flow can be held.
  REQUIRE_ERROR(f->hold(v4), std::errc::no_such_file_or_directory, "10.1.0.1:8080");
  lab.freeze_both();
  auto data4 = tcp("10.2.0.2:40000", "10.1.0.1:8080", test::kTcpAck | test::kTcpPsh, 100);
  auto bare4 = tcp("10.2.0.2:40000", "10.1.0.1:8080", test::kTcpAck, 0);
  auto fin4 = tcp("10.2.0.2:40000", "10.1.0.1:8080", test::kTcpAck | test::kTcpFin, 0);
  auto out4 = tcp("10.1.0.1:8080", "10.2.0.2:40000", test::kTcpAck | test::kTcpPsh, 50);
  auto l3 = [](const std::vector<std::byte>& frame) {
    return std::vector<std::byte>(frame.begin() + 14, frame.end());  // without Ethernet
  };
  // Frozen whole: everything is dropped.
  CHECK(run(*f, Hook::ingress, data4) == TC_ACT_SHOT);
  CHECK(run(*f, Hook::egress, out4) == TC_ACT_SHOT);
  REQUIRE_OK(f->hold(v4));
  REQUIRE_OK(f->hold(v4));  // idempotent
  // Held: the socket speaks, the peer's ACKs reach it, its data (and FIN) stay held.
  CHECK(run(*f, Hook::egress, out4) == TC_ACT_OK);
  CHECK(run(*f, Hook::ingress, bare4) == TC_ACT_OK);
  CHECK(run(*f, Hook::ingress, data4) == TC_ACT_SHOT);
  CHECK(run(*f, Hook::ingress, fin4) == TC_ACT_SHOT);
  // Holding one flow leaves the others frozen whole.
  CHECK(run(*f, Hook::egress, tcp("[fd00::1]:443", "[fd00::2]:50000")) == TC_ACT_SHOT);
  auto c = f->counters(v4);
  REQUIRE_OK(c);
  CHECK(c->held_passed == 2);
  CHECK(c->egress_packets == 1);   // the one before the hold
  CHECK(c->ingress_packets == 3);  // data before and after the hold, the FIN
  auto first = f->take_dropped(v4);
  REQUIRE_OK(first);
  REQUIRE(first->size() == 3);
  CHECK((*first)[0] == l3(data4));
  CHECK((*first)[2] == l3(fin4));
  // unfreeze_take hands over what came after the last take (instead of forgetting it), and
  // the flow then passes whole.
  CHECK(run(*f, Hook::ingress, data4) == TC_ACT_SHOT);
  auto u = f->unfreeze_take(v4);
  REQUIRE_OK(u);
  REQUIRE(u->held.size() == 1);
  CHECK(u->held[0] == l3(data4));
  CHECK(u->counters.held_passed == 2);
  CHECK(run(*f, Hook::ingress, data4) == TC_ACT_OK);
  CHECK(run(*f, Hook::egress, out4) == TC_ACT_OK);
  REQUIRE_ERROR(f->unfreeze_take(v4), std::errc::no_such_file_or_directory, "unfreeze");
  // A new freeze of a flow that was held is whole again, also when it was still frozen.
  REQUIRE_OK(f->freeze(v4));
  CHECK(run(*f, Hook::egress, out4) == TC_ACT_SHOT);
  REQUIRE_OK(f->hold(v4));
  CHECK(run(*f, Hook::egress, out4) == TC_ACT_OK);
  REQUIRE_OK(f->freeze(v4));
  CHECK(run(*f, Hook::egress, out4) == TC_ACT_SHOT);
  CHECK(run(*f, Hook::ingress, bare4) == TC_ACT_SHOT);
}

TEST_CASE("ebpf: Freezer refuses a replay ring that cannot hold the largest record",
          "[.bpf][ebpf][freeze][datapath]") {
  auto ns = test::Netns::create("ebpf-freeze-ring");
  test::NetnsScope in(ns);
  FreezerOptions o;
  o.replay_ring_bytes = 64U << 10;  // a power of two, but below one 64 KiB record + headers
  REQUIRE_ERROR(Freezer::create(o), std::errc::invalid_argument, "replay_ring_bytes 65536");
  o.replay_ring_bytes = (1U << 20) + 4096;  // not a power of two
  REQUIRE_ERROR(Freezer::create(o), std::errc::invalid_argument, "power of two");
  o.replay_ring_bytes = 128U << 10;
  REQUIRE_OK(Freezer::create(o));
}

TEST_CASE("ebpf: freeze matches IPv4-mapped tuples against IPv4 packets",
          "[.bpf][ebpf][freeze][datapath]") {
  auto ns = test::Netns::create("ebpf-freeze-mapped");
  test::NetnsScope in(ns);
  auto f = Freezer::create();
  REQUIRE_OK(f);
  // A dual-stack socket reports its IPv4 peers as ::ffff:a.b.c.d.
  FourTuple mapped{endpoint("[::ffff:10.3.0.1]:80"), endpoint("[::ffff:10.3.0.2]:33000")};
  REQUIRE_OK(f->freeze(mapped));
  CHECK(run(*f, Hook::ingress, tcp("10.3.0.2:33000", "10.3.0.1:80")) == TC_ACT_SHOT);
  CHECK(run(*f, Hook::egress, tcp("10.3.0.1:80", "10.3.0.2:33000")) == TC_ACT_SHOT);
  REQUIRE_ERROR(f->freeze(FourTuple{endpoint("10.3.0.1:80"), endpoint("[fd00::2]:1")}),
                     std::errc::invalid_argument, "families differ");
}

TEST_CASE("ebpf: freeze with the bypass disabled drops marked packets too",
          "[.bpf][ebpf][freeze][datapath]") {
  auto ns = test::Netns::create("ebpf-freeze-nobypass");
  test::NetnsScope in(ns);
  FreezerOptions o;
  o.bypass_mark = 0;
  auto f = Freezer::create(o);
  REQUIRE_OK(f);
  FourTuple t{endpoint("10.4.0.1:22"), endpoint("10.4.0.2:50000")};
  REQUIRE_OK(f->freeze(t));
  CHECK(run(*f, Hook::egress, tcp("10.4.0.1:22", "10.4.0.2:50000"), 0xC114) == TC_ACT_SHOT);
  auto c = f->counters(t);
  REQUIRE_OK(c);
  CHECK(c->bypassed_packets == 0);
  CHECK(c->egress_packets == 1);
}

TEST_CASE("ebpf: every packet a new freeze drops is recorded, also on a Freezer's first freeze",
          "[.bpf][ebpf][freeze][datapath]") {
  // freeze() inserted the flow and only then dropped "leftovers of an earlier freeze" from the
  // replay stash: what the program recorded in between was dropped with them. On a Freezer's
  // first freeze that window includes opening the ring buffer: the first n->u move of a fresh
  // kernel connection lost the peer's first packet and its RTO stalled the flow ~350 ms
  // (rendr-bench userstack, every run).
  FreezerLab lab("ebpf-freeze-first");
  auto& f = lab.f;
  const auto data4 = tcp("10.2.0.2:40000", "10.1.0.1:8080", test::kTcpAck | test::kTcpPsh, 100);
  const int prog = f->program_fds_for_test().ingress;
  std::atomic<bool> stop{false};
  std::atomic<int> passed{0};
  std::atomic<int> shot{0};
  std::thread peer([&] {
    // Each ingress run stands for one packet from the peer (no Catch assertions off the main
    // thread).
    while (!stop) {
      auto r = test_run_skb(prog, data4, {});
      if (r && r->retval == TC_ACT_SHOT) {
        ++shot;
      } else if (r) {
        ++passed;
      }
    }
  });
  while (passed < 20) {
    std::this_thread::yield();
  }
  REQUIRE_OK(f->freeze(lab.v4));
  while (shot < 200) {
    std::this_thread::yield();
  }
  stop = true;
  peer.join();
  auto got = f->take_dropped(lab.v4);
  REQUIRE_OK(got);
  auto c = f->counters(lab.v4);
  REQUIRE_OK(c);
  CHECK(c->replay_packets == static_cast<std::uint64_t>(shot.load()));
  CHECK(got->size() == static_cast<std::size_t>(shot.load()));
}
