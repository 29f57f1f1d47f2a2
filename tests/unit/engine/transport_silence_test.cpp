// SPDX-License-Identifier: Apache-2.0
// The transport-silence rule (FlowConfig::ack_silence_min, docs/engine.md "Paths: probes and
// death"): a stream path whose transport heard no acknowledgement for too long while our frames
// are in flight is failed at once when another path is ready. The carrier's view (TCP_INFO in
// the tcp carrier) is played here by the test: a blackholed link's transport hears nothing from
// the moment of the cut, a live one keeps hearing acknowledgements.
#include "fake_net.hpp"
#include "flow_transfer.hpp"

#include <rendr/engine/core/flow.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <optional>
#include <vector>

using namespace rendr;
using namespace rendr::engine;
using namespace rendr::engine::test;
using namespace std::chrono_literals;

namespace {

// FakeTransport answers transport_ack for the client's paths: |cut| paths have been silent
// since their cut, the others heard an ACK just now.
struct FakeTransport {
  std::map<PathId, TimePoint> cut;
  std::uint32_t in_flight = 20;
  Duration srtt = 1ms;
  Duration rttvar = 0ms;
  bool blind = false;  // a carrier that cannot tell
  std::size_t asked = 0;

  void install(FakeNet& net) {
    net.client_timer_ctx = [this, &net] {
      FlowCore::TimerContext ctx;
      ctx.transport_ack = [this, &net](PathId p) -> std::optional<TransportAck> {
        ++asked;
        if (blind) {
          return std::nullopt;
        }
        TransportAck a;
        a.in_flight_packets = in_flight;
        a.srtt = srtt;
        a.rttvar = rttvar;
        auto it = cut.find(p);
        a.since_ack = it == cut.end() ? Duration::zero() : net.now - it->second;
        return a;
      };
      return ctx;
    };
  }
};

// A slow-probing config: silence (fresh_min 2 s) and the write stall (stall_min 2 s) cannot
// be what fails the path within the times checked below.
FlowConfig slow_probe_config() {
  FlowConfig c = small_frame_config();
  c.probe_interval = 1s;
  c.fresh_min = 2s;
  c.fresh_max = 4s;
  c.stall_min = 2s;
  c.stall_max = 4s;
  c.ack_silence_min = 100ms;  // off by default
  return c;
}

struct Cut {
  Duration took{0};
  bool lost = false;
  std::vector<int> links;  // the FakeNet links added, the first one active at the cut
};

// cut_links: a transfer over |n| stream links; once 1 MB arrived the first |cut| of them (the
// first is the active one) are blackholed and their transports go silent; how long until the
// client lost a path (within |limit|).
Cut cut_links(FakeNet& net, FakeTransport& ft, Transfer& t, int n, int cut, Duration limit) {
  Cut c;
  for (int i = 0; i < n; ++i) {
    c.links.push_back(net.add_link({Framing::stream, 1ms}));
  }
  wire_transfer(net, t);
  ft.install(net);
  REQUIRE(net.run_until([&] { return t.read > 1'000'000; }, 30s));
  REQUIRE(net.client.active_path() == net.client_path(c.links[0]));
  const TimePoint at = net.now;
  for (int i = 0; i < cut; ++i) {
    net.blackhole(c.links[static_cast<std::size_t>(i)]);
    ft.cut[net.client_path(c.links[static_cast<std::size_t>(i)])] = at;
  }
  net.max_step = 1ms;
  c.lost = net.run_until([&] { return net.client.stats().paths_lost > 0; }, limit);
  c.took = net.now - at;
  return c;
}

// cut_active: two links, the active one cut.
Cut cut_active(FakeNet& net, FakeTransport& ft, Transfer& t, Duration limit) {
  return cut_links(net, ft, t, 2, 1, limit);
}

}  // namespace

TEST_CASE("engine transport silence: a silently dropped busy path fails within the bound",
          "[engine][transport_silence]") {
  FakeNet net(slow_probe_config(), slow_probe_config());
  FakeTransport ft;
  Transfer t(8'000'000);
  const Cut c = cut_active(net, ft, t, 1s);
  REQUIRE(c.lost);
  CHECK(c.took >= 100ms);  // ack_silence_min
  CHECK(c.took <= 100ms + 2 * 5ms);  // plus at most one check interval (and a clock step)
  const auto st = net.client.stats();
  CHECK(st.transport_silence_deaths == 1);
  CHECK(st.last_path_down.find("no transport acknowledgement") != std::string::npos);
  CHECK(net.client.active_path() == net.client_path(c.links[1]));
  REQUIRE(net.run_until([&] { return t.complete(); }, 60s));
  CHECK(t.mismatch_at == -1);
  CHECK(net.spins == 0);
}

TEST_CASE("engine transport silence: the transport's own round trip raises the bound",
          "[engine][transport_silence]") {
  FakeNet net(slow_probe_config(), slow_probe_config());
  FakeTransport ft;
  ft.srtt = 40ms;
  ft.rttvar = 10ms;  // 2 x 40 + 4 x 10 = 120 ms
  Transfer t(8'000'000);
  const Cut c = cut_active(net, ft, t, 1s);
  REQUIRE(c.lost);
  CHECK(c.took >= 120ms);
  CHECK(c.took <= 130ms);
}

TEST_CASE("engine transport silence: a lone segment in flight waits for a delayed ACK",
          "[engine][transport_silence]") {
  FakeNet net(slow_probe_config(), slow_probe_config());
  FakeTransport ft;
  ft.in_flight = 1;
  Transfer t(8'000'000);
  const Cut c = cut_active(net, ft, t, 1s);
  REQUIRE(c.lost);
  CHECK(c.took >= 300ms);  // the delayed-ACK maximum (200 ms) + ack_silence_min
  CHECK(c.took <= 310ms);
}

TEST_CASE("engine transport silence: acknowledgements that keep coming keep the path",
          "[engine][transport_silence]") {
  FakeNet net(slow_probe_config(), slow_probe_config());
  FakeTransport ft;
  Transfer t(4'000'000);
  // Rate-limited: the transfer lasts ~400 ms, with frames in flight all along.
  net.add_link({Framing::stream, 1ms, 0.0, 256 * 1024, 10'000});
  net.add_link({Framing::stream, 1ms, 0.0, 256 * 1024, 10'000});
  wire_transfer(net, t);
  ft.install(net);
  REQUIRE(net.run_until([&] { return t.complete(); }, 60s));
  CHECK(ft.asked > 0);  // the rule looked, and found the transport talking
  CHECK(net.client.stats().paths_lost == 0);
  CHECK(net.client.stats().transport_silence_deaths == 0);
}

TEST_CASE("engine transport silence: never the last path, never when off or blind",
          "[engine][transport_silence]") {
  SECTION("one path: the rule does not apply (silence judges it later)") {
    FakeNet net(slow_probe_config(), slow_probe_config());
    FakeTransport ft;
    Transfer t(8'000'000);
    const Cut c = cut_links(net, ft, t, 1, 1, 500ms);
    CHECK_FALSE(c.lost);
    CHECK(ft.asked == 0);
  }
  SECTION("ack_silence_min 0 turns it off") {
    FlowConfig off = slow_probe_config();
    off.ack_silence_min = 0ms;
    FakeNet net(off, off);
    FakeTransport ft;
    Transfer t(8'000'000);
    const Cut c = cut_active(net, ft, t, 500ms);
    CHECK_FALSE(c.lost);
    CHECK(ft.asked == 0);
  }
  SECTION("a carrier that cannot tell is asked once, then left to the other rules") {
    FakeNet net(slow_probe_config(), slow_probe_config());
    FakeTransport ft;
    ft.blind = true;
    Transfer t(8'000'000);
    const Cut c = cut_active(net, ft, t, 500ms);
    CHECK_FALSE(c.lost);
    CHECK(ft.asked <= 2);  // once per path
    CHECK(net.spins == 0);
  }
  SECTION("both paths silent at once: one stays") {
    FakeNet net(slow_probe_config(), slow_probe_config());
    FakeTransport ft;
    Transfer t(8'000'000);
    (void)cut_links(net, ft, t, 2, 2, 500ms);
    (void)net.run_until([] { return false; }, 500ms);  // on past the first death, if any
    CHECK(net.client.stats().transport_silence_deaths <= 1);
  }
}

TEST_CASE("engine transport silence: the configuration is checked", "[engine][transport_silence]") {
  FlowConfig c;
  c.ack_silence_min = -1ms;
  CHECK_FALSE(validate_config(c).ok());
  c.ack_silence_min = 0ms;
  CHECK(validate_config(c).ok());
}
