// SPDX-License-Identifier: Apache-2.0
// Freezer on a real datapath: two anonymous netns joined by a veth pair, a live TCP connection
// across it, the Freezer attached to one end. While frozen no byte crosses in either
// direction; after unfreeze TCP's retransmissions deliver everything, in order, nothing lost.
#include "ebpf_util.hpp"
#include "support/netns.hpp"
#include "support/pattern.hpp"

#include <rendr/ebpf/freezer.hpp>
#include <rendr/ebpf/log.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <mutex>

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace rendr;
using namespace rendr::ebpf;

namespace {

struct Pair {
  test::Netns a = test::Netns::create("ebpf-freeze-a");
  test::Netns b = test::Netns::create("ebpf-freeze-b");
};

std::vector<std::byte> bytes_of(const test::Pattern& p, std::uint64_t off, std::size_t n) {
  std::vector<std::byte> v(n);
  p.fill(off, v);
  return v;
}

void run_freeze_roundtrip(const char* a_addr, const char* b_addr, const char* ip_flags) {
  Pair ns;
  test::veth(ns.a, "va", ns.b, "vb");
  ns.a.must(std::string("ip addr add ") + a_addr + " dev va " + ip_flags);
  ns.b.must(std::string("ip addr add ") + b_addr + " dev vb " + ip_flags);
  std::string b_ip = std::string(b_addr).substr(0, std::string(b_addr).find('/'));
  Endpoint server_ep = *Endpoint::parse_address(b_ip, 0);

  UniqueFd listener;
  {
    test::NetnsScope in(ns.b);
    listener = test::listen_tcp(server_ep);
  }
  server_ep.port = test::local_of(listener.get()).port;
  UniqueFd client;
  {
    test::NetnsScope in(ns.a);
    auto c = test::connect_tcp(server_ep);
    REQUIRE_OK(c);
    client = std::move(*c);
  }
  UniqueFd server = test::accept_one(listener.get());

  test::Pattern up(11);
  test::Pattern down(12);
  constexpr std::size_t kChunk = 4096;
  // Warm-up: the connection works before the freeze.
  test::write_all(client.get(), bytes_of(up, 0, kChunk));
  CHECK(test::read_exact(server.get(), kChunk) == bytes_of(up, 0, kChunk));

  auto f = Freezer::create();
  REQUIRE_OK(f);
  {
    test::NetnsScope in(ns.a);
    REQUIRE_OK(f->attach(test::ifindex_of("va")));
  }
  FourTuple flow{test::local_of(client.get()), test::peer_of(client.get())};
  REQUIRE_OK(f->freeze(flow));

  // Both directions: client->server leaves va (egress), server->client enters va (ingress).
  test::write_all(client.get(), bytes_of(up, kChunk, kChunk));
  test::write_all(server.get(), bytes_of(down, 0, kChunk));
  // 700 ms covers the first retransmission (RTO >= 200 ms): nothing may arrive.
  CHECK_FALSE(test::readable(server.get(), 700));
  CHECK_FALSE(test::readable(client.get(), 0));

  auto frozen = f->counters(flow);
  REQUIRE_OK(frozen);
  // Retransmission timing depends on the RTT estimate and load: wait (bounded, while still
  // frozen) until both sides have retransmitted at least once.
  for (int i = 0; i < 300 && (frozen->egress_packets < 2 || frozen->ingress_packets < 2); ++i) {
    CHECK_FALSE(test::readable(server.get(), 10));
    CHECK_FALSE(test::readable(client.get(), 0));
    frozen = f->counters(flow);
    REQUIRE_OK(frozen);
  }
  CHECK(frozen->egress_packets >= 2);   // original + at least one retransmission
  CHECK(frozen->ingress_packets >= 2);
  CHECK(frozen->egress_bytes > kChunk);
  CHECK(frozen->ingress_bytes > kChunk);

  auto last = f->unfreeze(flow);
  REQUIRE_OK(last);
  CHECK(last->egress_packets >= frozen->egress_packets);

  // Retransmission timers back off; 15 s bounds even a few doublings.
  CHECK(test::read_exact(server.get(), kChunk, 15000) == bytes_of(up, kChunk, kChunk));
  CHECK(test::read_exact(client.get(), kChunk, 15000) == bytes_of(down, 0, kChunk));
  CHECK(test::socket_error(client.get()) == 0);
  CHECK(test::socket_error(server.get()) == 0);

  // And the connection carries on: no RST was exchanged, the stream continues in order.
  test::write_all(client.get(), bytes_of(up, 2 * kChunk, kChunk));
  CHECK(test::read_exact(server.get(), kChunk, 5000) == bytes_of(up, 2 * kChunk, kChunk));
  test::write_all(server.get(), bytes_of(down, kChunk, kChunk));
  CHECK(test::read_exact(client.get(), kChunk, 5000) == bytes_of(down, kChunk, kChunk));

  // Destroying the Freezer from the test's own netns detaches it from va (in ns.a).
  f = Freezer::create();  // replaces (and destroys) the attached one
  REQUIRE_OK(f);
  std::string out;
  ns.a.sh("tc filter show dev va ingress; tc filter show dev va egress", &out);
  CHECK(out.find("bpf") == std::string::npos);
}

}  // namespace

TEST_CASE("ebpf: a frozen IPv4 connection stalls both ways and resumes losslessly after unfreeze",
          "[.bpf][ebpf][freeze][netns]") {
  run_freeze_roundtrip("10.77.0.1/24", "10.77.0.2/24", "");
}

TEST_CASE("ebpf: a frozen IPv6 connection stalls both ways and resumes losslessly after unfreeze",
          "[.bpf][ebpf][freeze][netns]") {
  run_freeze_roundtrip("fd77::1/64", "fd77::2/64", "nodad");
}

TEST_CASE("ebpf: Freezer::attach reports a missing device and detach an unknown one",
          "[.bpf][ebpf][freeze][netns]") {
  auto ns = test::Netns::create("ebpf-freeze-attach");
  test::NetnsScope in(ns);
  auto f = Freezer::create();
  REQUIRE_OK(f);
  REQUIRE_ERROR(f->attach(4242), std::errc::no_such_device, "ifindex 4242");
  REQUIRE_ERROR(f->detach(4242), std::errc::no_such_file_or_directory, "not attached");
  REQUIRE_OK(f->attach(test::ifindex_of("lo")));
  std::string out;
  ns.sh("tc filter show dev lo egress", &out);
  CHECK(out.find("freeze_egress") != std::string::npos);
  REQUIRE_OK(f->detach(test::ifindex_of("lo")));
  out.clear();
  ns.sh("tc filter show dev lo egress", &out);
  CHECK(out.find("freeze_egress") == std::string::npos);
}

TEST_CASE("ebpf: attaching beside an existing clsact qdisc logs nothing",
          "[.bpf][ebpf][freeze][netns]") {
  auto ns = test::Netns::create("ebpf-freeze-quiet");
  test::NetnsScope in(ns);
  std::mutex mu;
  std::vector<std::string> lines;
  set_libbpf_log_sink([&](LogLevel, std::string_view l) {
    std::lock_guard<std::mutex> g(mu);
    lines.emplace_back(l);
  });
  // A clsact the freeze did not create (tc, another tool, or our own steering) already exists:
  // creating it again fails with EEXIST, which the kernel explains in an extack line.
  REQUIRE(ns.sh("tc qdisc add dev lo clsact") == 0);
  auto f = Freezer::create();
  REQUIRE_OK(f);
  REQUIRE_OK(f->attach(test::ifindex_of("lo")));
  set_libbpf_log_sink({});
  std::lock_guard<std::mutex> g(mu);
  for (const auto& l : lines) {
    INFO(l);
    CHECK(l.find("Exclusivity") == std::string::npos);
  }
}

namespace {

// filters_named counts the filters in |tc_show| (`tc filter show` output) running |prog|.
int filters_named(const std::string& tc_show, const std::string& prog) {
  int n = 0;
  const std::string key = " " + prog + ":[";  // "handle 0x.. freeze_ingress:[id]"
  for (std::size_t p = tc_show.find(key); p != std::string::npos; p = tc_show.find(key, p + 1)) {
    ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("ebpf: a Freezer with a stable handle replaces the filters a killed process left",
          "[.bpf][ebpf][freeze][netns]") {
  auto ns = test::Netns::create("ebpf-freeze-stale");
  test::NetnsScope in(ns);
  const int lo = test::ifindex_of("lo");
  FreezerOptions o;
  o.tc_handle = 0x5eed;
  // A process attaches, freezes a flow and dies without a word (as under kill -9): its
  // filters stay on the device, with the maps they pin, and go on dropping that flow.
  pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    auto f = Freezer::create(o);
    if (!f || !f->attach(lo).ok() ||
        !f->freeze(*FourTuple::parse("127.0.0.1:1->127.0.0.1:2")).ok()) {
      ::_exit(1);
    }
    ::_exit(0);  // no destructors: nothing is detached
  }
  int st = -1;
  REQUIRE(::waitpid(child, &st, 0) == child);
  REQUIRE(WIFEXITED(st));
  REQUIRE(WEXITSTATUS(st) == 0);
  std::string out;
  ns.sh("tc filter show dev lo ingress", &out);
  INFO(out);
  REQUIRE(filters_named(out, "freeze_ingress") == 1);

  // The next Freezer with that handle takes the same place: one filter per direction, and
  // the stale freeze is gone with the old map.
  auto f = Freezer::create(o);
  REQUIRE_OK(f);
  REQUIRE_OK(f->attach(lo));
  out.clear();
  ns.sh("tc filter show dev lo ingress", &out);
  CHECK(filters_named(out, "freeze_ingress") == 1);
  out.clear();
  ns.sh("tc filter show dev lo egress", &out);
  CHECK(filters_named(out, "freeze_egress") == 1);
  auto n = f->frozen_count();
  REQUIRE_OK(n);
  CHECK(*n == 0);
  // Detaching it leaves nothing behind.
  REQUIRE_OK(f->detach(lo));
  out.clear();
  ns.sh("tc filter show dev lo ingress", &out);
  CHECK(filters_named(out, "freeze_ingress") == 0);
}
