// SPDX-License-Identifier: Apache-2.0
// A kernel client talks to lwIP over a real TUN: attach errors, the bridged echo, any
// destination address/port, v4 and v6.
#include "echo_server.hpp"
#include "tun_lab.hpp"

#include "support/require_result.hpp"

#include <rendr/userstack/stack.hpp>

#include <catch2/catch.hpp>

#include <cstdio>
#include <future>

using namespace rendr;
using namespace rendr::test;
using namespace std::chrono_literals;

namespace {

userstack::StackOptions opts() {
  userstack::StackOptions o;
  o.tun.name = kTun;
  o.seed = 7;
  return o;
}

Endpoint ep(const char* text) { return Endpoint::parse(text).value(); }

}  // namespace

TEST_CASE("userstack attach names busy and missing devices and one Stack per process",
          "[.netns][userstack][netns]") {
  TunLab lab;
  auto missing = userstack::TunDevice::attach({.name = "nosuch0"});
  REQUIRE_ERROR(missing, std::errc::no_such_device, "does not exist");
  auto first = userstack::Stack::start(opts());
  REQUIRE_OK(first);
  auto again = userstack::TunDevice::attach({.name = kTun});
  REQUIRE_ERROR(again, std::errc::device_or_resource_busy, "already attached by another");
  auto second = userstack::Stack::start(opts());
  REQUIRE_ERROR(second, std::errc::device_or_resource_busy, "one");
  first.value().reset();
  // The device is free again once the Stack is gone, and a new Stack can start.
  auto third = userstack::Stack::start(opts());
  REQUIRE_OK(third);
}

TEST_CASE("userstack bridged echo moves 16 MiB each way intact over IPv4 and IPv6",
          "[.netns][userstack][netns]") {
  TunLab lab;
  auto stack = userstack::Stack::start(opts());
  REQUIRE_OK(stack);
  EchoServer server(**stack);
  const long long resets0 = lab.resets();
  for (const char* vip : {"198.18.0.7:7000", "[fd99::7]:7001"}) {
    constexpr std::uint64_t kTotal = 16ULL << 20;
    EchoResult r = echo_client(ep(vip), kTotal, 11);
    INFO(vip << " error: " << r.error);
    CHECK(r.error.empty());
    CHECK(r.sent == kTotal);
    CHECK(r.received == kTotal);
    CHECK(r.first_bad == -1);
    CHECK(r.eof);
    std::printf("userstack echo %s: %.1f MiB each way in %.2f s (%.2f Gbit/s each way)\n", vip,
                static_cast<double>(kTotal) / (1 << 20), r.seconds,
                static_cast<double>(kTotal) * 8 / r.seconds / 1e9);
  }
  CHECK(lab.resets() == resets0);
  auto c = (*stack)->counters();
  CHECK(c.accepted == 2);
  CHECK(c.rx_bad_checksum == 0);
  CHECK(c.tx_errors == 0);
}

TEST_CASE("userstack accepts any destination address and port, v4 and v6",
          "[.netns][userstack][netns]") {
  TunLab lab;
  auto stack = userstack::Stack::start(opts());
  REQUIRE_OK(stack);
  EchoServer server(**stack);
  std::vector<Endpoint> targets;
  for (int a = 1; a <= 10; ++a) {
    for (int p = 0; p < 5; ++p) {
      auto port = static_cast<std::uint16_t>(1000 + p * 997);
      targets.push_back(Endpoint::parse_address("198.18.0." + std::to_string(a), port).value());
      targets.push_back(Endpoint::parse_address("fd99::" + std::to_string(a), port).value());
    }
  }
  std::vector<std::future<EchoResult>> runs;
  for (const auto& t : targets) {
    runs.push_back(std::async(std::launch::async, [t] { return echo_client(t, 64 * 1024, 3, 30s); }));
  }
  std::size_t ok = 0;
  for (std::size_t i = 0; i < runs.size(); ++i) {
    EchoResult r = runs[i].get();
    INFO(targets[i].to_string() << ": " << r.error);
    CHECK(r.first_bad == -1);
    if (r.eof && r.received == 64 * 1024 && r.first_bad == -1) {
      ++ok;
    }
  }
  CHECK(ok == targets.size());
  CHECK(server.accepted() == targets.size());
  CHECK((*stack)->counters().listeners == 5);
}
