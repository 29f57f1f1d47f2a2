// SPDX-License-Identifier: Apache-2.0
// FakeNet: two FlowCores (client and server) wired back to back through scripted links, driven
// by a fake clock. It plays the part the Asio shell and the listener will play: it dials links
// (client add_path), demultiplexes the first frame on the server side (HELLO -> FlowCore::server,
// BRIDGE_TAG -> accept_bridge), moves bytes with a per-link delay / rate / window, and fires
// timers at the cores' deadlines. Links can lose datagrams (seeded), be black-holed (silent
// drop, like an nftables DROP rule) or fail loudly (path_failed, like an RST). No sleeps, no
// sockets: time jumps from event to event.
#pragma once

#include <rendr/engine/core/flow.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace rendr::engine::test {

// fast_probe_config: probing fast enough that path death shows within a few hundred fake
// milliseconds, and small windows (the scenario and flow tests' common setting).
inline engine::FlowConfig fast_probe_config() {
  engine::FlowConfig c;
  c.probe_interval = std::chrono::milliseconds(20);
  c.fresh_min = std::chrono::milliseconds(100);
  c.fresh_max = std::chrono::seconds(1);
  c.ledger_max_frames = 256;
  c.ledger_max_bytes = 1U << 20;
  c.reorder_max_frames = 512;
  c.recv_window_bytes = 1U << 20;
  return c;
}

struct LinkSpec {
  Framing framing = Framing::stream;
  Duration delay = std::chrono::milliseconds(5);  // one way
  double loss = 0.0;                              // datagram links: drop probability
  std::size_t window = 256 * 1024;                // bytes in flight per direction (socket bufs)
  std::size_t bytes_per_ms = 0;                   // serialisation rate; 0 = unlimited
};

class FakeNet {
 public:
  FakeNet(const FlowConfig& client_cfg, const FlowConfig& server_cfg, std::uint32_t seed = 1);

  // add_link dials a new carrier from the client (FlowCore::add_path) and returns its index.
  int add_link(const LinkSpec& spec);
  // blackhole drops everything on the link from now on, both directions, silently.
  void blackhole(int link);
  // fail_link closes the carrier loudly: both sides see path_failed (like a RST).
  void fail_link(int link);
  void set_loss(int link, double loss);
  void set_delay(int link, Duration delay);

  // step runs one round at the current time (timers, transmit, deliver, application hooks)
  // then moves the clock to the next event. Returns false when nothing can happen any more.
  bool step();
  // run_until steps until |done| holds or |limit| of fake time passed; returns done().
  bool run_until(const std::function<bool()>& done, Duration limit);

  TimePoint now;
  FlowCore client;
  std::optional<FlowCore> server;
  std::vector<FlowEvent> client_events;
  std::vector<FlowEvent> server_events;
  // Application hooks, run every round (e.g. write a pattern, read and verify).
  std::function<void(FakeNet&)> app;
  std::size_t spins = 0;  // rounds in which the clock could not advance (a core bug)
  // What the shell knows about its own timing, handed to the client's on_timeout when set
  // (lateness, unread input on a carrier: FlowCore::TimerContext).
  std::function<FlowCore::TimerContext()> client_timer_ctx;
  // Largest clock jump per step (0 = straight to the next event); set it when run_until's
  // predicate schedules things of its own (chaos actions).
  Duration max_step{0};

  [[nodiscard]] PathId client_path(int link) const { return links_[static_cast<std::size_t>(link)].cpath; }
  [[nodiscard]] std::optional<PathId> server_path(int link) const {
    return links_[static_cast<std::size_t>(link)].spath;
  }
  [[nodiscard]] std::uint64_t dropped(int link) const {
    return links_[static_cast<std::size_t>(link)].dropped;
  }

 private:
  struct Packet {
    TimePoint arrive;
    std::vector<std::byte> bytes;
  };
  struct Dir {
    std::deque<Packet> q;
    std::size_t in_flight = 0;
    TimePoint free_at{};
  };
  struct Link {
    LinkSpec spec;
    PathId cpath = 0;
    std::optional<PathId> spath;
    bool blackholed = false;
    bool client_closed = false;
    bool server_closed = false;
    std::size_t blackholed_bytes[2] = {0, 0};
    Dir up;    // client -> server
    Dir down;  // server -> client
    StreamDeframer accept;  // server side, before the first frame was classified
    std::uint64_t dropped = 0;
  };

  void pump(Link& l, bool upstream);
  void deliver(Link& l, bool upstream);
  void server_first_bytes(Link& l, std::span<const std::byte> bytes);
  void drain_events();
  std::optional<TimePoint> next_event() const;

  FlowConfig server_cfg_;
  TimePoint limit_ = TimePoint::max();
  std::vector<Link> links_;
  std::mt19937_64 rng_;
};

Id128 make_id(std::uint8_t seed);
// server_from_hello creates the server core from a client's first stream bytes (its HELLO),
// with path 1 = that carrier - for tests that drive two cores by hand, without a FakeNet.
FlowCore server_from_hello(const FlowConfig& cfg, std::span<const std::byte> wire, TimePoint now);

}  // namespace rendr::engine::test
