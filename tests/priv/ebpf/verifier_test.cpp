// SPDX-License-Identifier: Apache-2.0
// Verifier acceptance (STYLE B9): every program family loads on the running kernel, for every
// load-time switch combination we ship. Failures carry libbpf's verifier log in the message.
#include "ebpf_util.hpp"
#include "support/netns.hpp"

#include <rendr/ebpf/freezer.hpp>
#include <rendr/ebpf/log.hpp>
#include <rendr/ebpf/sk_lookup.hpp>
#include <rendr/ebpf/steerer.hpp>

#include <catch2/catch.hpp>

#include <cerrno>
#include <mutex>
#include <string>
#include <vector>

using namespace rendr;
using namespace rendr::ebpf;

TEST_CASE("ebpf: freeze_tc loads with and without a bypass mark", "[.bpf][ebpf][verifier]") {
  auto ns = test::Netns::create("ebpf-verifier-freeze");
  test::NetnsScope in(ns);
  for (std::uint32_t mark : {0u, 0xC114u, 0xFFFFFFFFu}) {
    INFO("bypass_mark " << mark);
    FreezerOptions o;
    o.bypass_mark = mark;
    auto f = Freezer::create(o);
    REQUIRE_OK(f);
    CHECK(f->program_fds_for_test().ingress >= 0);
    CHECK(f->program_fds_for_test().egress >= 0);
    auto n = f->frozen_count();
    REQUIRE_OK(n);
    CHECK(*n == 0);
  }
}

TEST_CASE("ebpf: steer_tc loads", "[.bpf][ebpf][verifier]") {
  auto ns = test::Netns::create("ebpf-verifier-steer");
  test::NetnsScope in(ns);
  auto s = Steerer::create();
  REQUIRE_OK(s);
  CHECK(s->program_fd_for_test() >= 0);
  auto c = s->counters();
  REQUIRE_OK(c);
  CHECK(c->table == 0);
}

TEST_CASE("ebpf: steer_sk_lookup loads", "[.bpf][ebpf][verifier]") {
  auto ns = test::Netns::create("ebpf-verifier-sk-lookup");
  test::NetnsScope in(ns);
  auto s = SkLookup::create();
  REQUIRE_OK(s);
  CHECK(s->program_fd_for_test() >= 0);
}

TEST_CASE("ebpf: load failures name the object and reach the libbpf log sink",
          "[.bpf][ebpf][verifier]") {
  std::mutex mu;
  std::vector<std::string> lines;
  set_libbpf_log_sink([&](LogLevel, std::string_view m) {
    std::lock_guard<std::mutex> lock(mu);
    lines.emplace_back(m);
  });
  FreezerOptions o;
  o.max_flows = 0;  // a hash map with no entries: the kernel refuses to create it
  auto f = Freezer::create(o);
  set_libbpf_log_sink({});
  REQUIRE_ERROR(f, std::errc::invalid_argument, "freeze_tc: load");
  std::lock_guard<std::mutex> lock(mu);
  REQUIRE_FALSE(lines.empty());
  CHECK_THAT(lines.front(), Catch::StartsWith("libbpf: "));
}
