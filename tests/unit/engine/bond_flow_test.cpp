// SPDX-License-Identifier: Apache-2.0
// Bond mode end to end over FakeNet: frames spread over paths, a path death, and which paths
// the stuck rule skips (clean round trips, docs/engine.md).
#include "fake_net.hpp"
#include "flow_transfer.hpp"

#include <rendr/engine/core/flow.hpp>

#include <catch2/catch.hpp>

using namespace rendr;
using namespace rendr::engine;
using namespace rendr::engine::test;
using namespace std::chrono_literals;

namespace {

// bond_config: small frames, bond mode, |pin| consecutive frames per path.
FlowConfig bond_config(std::size_t pin) {
  FlowConfig c = small_frame_config();
  c.mode = Mode::bond;
  c.bond_pin = pin;
  return c;
}

}  // namespace

TEST_CASE("engine flow: bond spreads frames over both paths and survives a path death",
          "[engine][flow][bond]") {
  const FlowConfig c = bond_config(4);
  FakeNet net(c, c);
  const int a = net.add_link({Framing::stream, 5ms, 0.0, 256 * 1024, 2000});
  const int b = net.add_link({Framing::stream, 6ms, 0.0, 256 * 1024, 2000});
  Transfer t(4'000'000);
  wire_transfer(net, t);
  REQUIRE(net.run_until([&] { return t.read > 1'500'000; }, 60s));
  const auto mid = net.client.stats();
  REQUIRE(mid.paths.size() == 2);
  CHECK(mid.paths[0].frames_tx > 50);
  CHECK(mid.paths[1].frames_tx > 50);
  net.blackhole(b);
  REQUIRE(net.run_until([&] { return t.complete(); }, 60s));
  CHECK(t.mismatch_at == -1);
  CHECK(net.client.stats().paths.size() == 1);
  CHECK(net.client.active_path() == net.client_path(a));
}

TEST_CASE("engine flow: bond over two equal rate-limited paths skips neither",
          "[engine][flow][bond]") {
  // The lab's bond gate in small: 40 Mbit/s each, 50 us one way; neither path may be skipped
  // and the two carry nearly twice one.
  const FlowConfig c = bond_config(8);
  FakeNet net(c, c);
  const int a = net.add_link({Framing::stream, 50us, 0.0, 256 * 1024, 5000});
  const int b = net.add_link({Framing::stream, 50us, 0.0, 256 * 1024, 5000});
  Transfer t(16'000'000);
  wire_transfer(net, t);
  const TimePoint start = net.now;
  REQUIRE(net.run_until([&] { return t.complete(); }, 120s));
  CHECK(t.mismatch_at == -1);
  const double secs = std::chrono::duration<double>(net.now - start).count();
  const auto st = net.client.stats();
  INFO("bond " << 16.0 / secs << " MB/s over two 5 MB/s links, stuck skips "
               << st.bond_stuck_skips << ", frames " << st.paths[0].frames_tx << " / "
               << st.paths[1].frames_tx);
  CHECK(st.bond_stuck_skips == 0);
  CHECK(16.0 / secs > 1.85 * 5.0);
  (void)a;
  (void)b;
}

// A path that is slow by itself (its probes' round trips with nothing of ours queued) is skipped.
TEST_CASE("engine flow: bond skips a path whose clean round trip is far above the best",
          "[engine][flow][bond]") {
  const FlowConfig c = bond_config(4);
  FakeNet net(c, c);
  const int a = net.add_link({Framing::stream, 1ms, 0.0, 256 * 1024, 0});
  const int b = net.add_link({Framing::stream, 20ms, 0.0, 256 * 1024, 0});
  // Both paths answer probes before any data is queued on them (the first one of each is
  // never clean: it runs through the path's set-up).
  REQUIRE(all_ready(net, 2));
  REQUIRE(net.run_until([&] {
    const auto s = net.client.stats();
    return s.paths.size() == 2 && s.paths[0].clean_rtt && s.paths[1].clean_rtt;
  }, 1s));
  CHECK(*net.client.stats().paths[1].clean_rtt >= 40ms);
  Transfer t(4'000'000);
  wire_transfer(net, t);
  REQUIRE(net.run_until([&] { return t.complete(); }, 60s));
  CHECK(t.mismatch_at == -1);
  const auto st = net.client.stats();
  INFO("frames " << st.paths[0].frames_tx << " / " << st.paths[1].frames_tx);
  CHECK(st.bond_stuck_skips > 0);
  CHECK(st.paths[1].frames_tx * 4 < st.paths[0].frames_tx);
  (void)a;
  (void)b;
}
