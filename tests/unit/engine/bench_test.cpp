// SPDX-License-Identifier: Apache-2.0
// Hidden micro-benchmark ([.bench], not run by default): bytes through two FlowCores joined
// directly (no network model), to see the core's own cost per byte. Run:
//   rendr_unit_engine "[.bench]" -d yes
#include "fake_net.hpp"

#include <rendr/engine/core/flow.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>

using namespace rendr;
using namespace rendr::engine;
using namespace rendr::engine::test;

TEST_CASE("engine bench: in-memory stream throughput of the core", "[.bench][engine]") {
  FlowConfig cfg;
  auto c = FlowCore::client(cfg, make_id(1), make_id(2));
  REQUIRE(c.ok());
  FlowCore& client = *c;
  TimePoint now = TimePoint{} + std::chrono::hours(1);
  const PathId cp = *client.add_path({}, now);
  std::vector<std::byte> wire;
  REQUIRE(client.poll_transmit(cp, wire, 1 << 20, now) > 0);
  FlowCore server = server_from_hello(cfg, wire, now);
  const PathId sp = server.path_ids().front();

  const std::uint64_t total = 2ULL << 30;
  std::uint64_t written = 0;
  std::uint64_t got = 0;
  std::vector<std::byte> src(256 * 1024, std::byte{0x42});
  std::vector<std::byte> dst(256 * 1024);
  std::vector<std::byte> buf;
  const auto t0 = std::chrono::steady_clock::now();
  while (got < total) {
    now += std::chrono::microseconds(10);
    if (written < total) {
      auto w = client.write(src, now);
      REQUIRE(w.ok());
      written += *w;
    }
    buf.clear();
    while (client.poll_transmit(cp, buf, 1 << 20, now) > 0) {
    }
    if (!buf.empty()) {
      REQUIRE(server.on_receive(sp, buf, now).ok());
    }
    while (true) {
      auto r = server.read(dst, now);
      REQUIRE(r.ok());
      if (r->bytes == 0) {
        break;
      }
      got += r->bytes;
    }
    buf.clear();
    while (server.poll_transmit(sp, buf, 1 << 20, now) > 0) {
    }
    if (!buf.empty()) {
      REQUIRE(client.on_receive(cp, buf, now).ok());
    }
    if (client.next_deadline().value_or(TimePoint::max()) <= now) {
      client.on_timeout(now);
    }
    if (server.next_deadline().value_or(TimePoint::max()) <= now) {
      server.on_timeout(now);
    }
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("engine core: %.0f MiB in %.2f s = %.0f MiB/s\n",
              static_cast<double>(total) / (1 << 20), secs,
              static_cast<double>(total) / (1 << 20) / secs);
  CHECK(got == total);
}

#include <malloc.h>

TEST_CASE("engine bench: heap bytes per idle flow (2 paths, handshake done)", "[.bench][engine]") {
  constexpr int kFlows = 1000;
  std::vector<FlowCore> flows;
  flows.reserve(kFlows);
  TimePoint now = TimePoint{} + std::chrono::hours(1);
  FlowConfig cfg;
  const auto before = mallinfo2().uordblks;
  for (int i = 0; i < kFlows; ++i) {
    Hello h;
    h.flow_id = make_id(static_cast<std::uint8_t>(i));
    auto s = FlowCore::server(cfg, h, make_id(3), {}, now);
    REQUIRE(s.ok());
    BridgeTag t;
    t.bridge_id = h.flow_id;
    t.legacy = true;
    REQUIRE(s->accept_bridge(t, {}, now).ok());
    std::vector<std::byte> out;
    for (PathId p : s->path_ids()) {
      while (s->poll_transmit(p, out, 1 << 16, now) > 0) {
      }
    }
    while (s->poll_event()) {
    }
    flows.push_back(std::move(s).value());
  }
  const auto after = mallinfo2().uordblks;
  const double per = static_cast<double>(after - before) / kFlows;
  std::printf("engine core: %.0f heap bytes per idle flow (2 paths)\n", per);
  CHECK(per > 0);
}
