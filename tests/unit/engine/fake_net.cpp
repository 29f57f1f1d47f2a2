// SPDX-License-Identifier: Apache-2.0
#include "fake_net.hpp"

#include <rendr/engine/errors.hpp>

#include <catch2/catch.hpp>

#include <algorithm>

namespace rendr::engine::test {

Id128 make_id(std::uint8_t seed) {
  Id128 id{};
  for (std::size_t i = 0; i < id.size(); ++i) {
    id[i] = static_cast<std::uint8_t>(seed * 31 + i);
  }
  return id;
}

FlowCore server_from_hello(const FlowConfig& cfg, std::span<const std::byte> wire,
                           TimePoint now) {
  StreamDeframer d;
  d.feed(wire);
  auto first = d.next();
  REQUIRE(first.ok());
  REQUIRE(first->has_value());
  auto hello = classify_first_frame(**first);
  REQUIRE(hello.ok());
  auto s = FlowCore::server(cfg, std::get<Hello>(*hello), make_id(3), {}, now);
  REQUIRE(s.ok());
  return std::move(s).value();
}

namespace {

FlowCore make_client(const FlowConfig& cfg) {
  auto c = FlowCore::client(cfg, make_id(1), make_id(2));
  INFO((c.ok() ? std::string("-") : c.error().message()));
  REQUIRE(c.ok());
  return std::move(c).value();
}

}  // namespace

FakeNet::FakeNet(const FlowConfig& client_cfg, const FlowConfig& server_cfg, std::uint32_t seed)
    : now(TimePoint{} + std::chrono::hours(1)),
      client(make_client(client_cfg)),
      server_cfg_(server_cfg),
      rng_(seed) {}

int FakeNet::add_link(const LinkSpec& spec) {
  Link l;
  l.spec = spec;
  auto p = client.add_path(PathOptions{spec.framing, "link" + std::to_string(links_.size())}, now);
  INFO((p.ok() ? std::string("-") : p.error().message()));
  REQUIRE(p.ok());
  l.cpath = *p;
  links_.push_back(std::move(l));
  return static_cast<int>(links_.size()) - 1;
}

void FakeNet::blackhole(int link) { links_[static_cast<std::size_t>(link)].blackholed = true; }

void FakeNet::set_loss(int link, double loss) {
  links_[static_cast<std::size_t>(link)].spec.loss = loss;
}

void FakeNet::set_delay(int link, Duration delay) {
  links_[static_cast<std::size_t>(link)].spec.delay = delay;
}

void FakeNet::fail_link(int link) {
  auto& l = links_[static_cast<std::size_t>(link)];
  const Error err = rendr::make_error(std::errc::connection_reset, "fake link reset");
  if (!l.client_closed) {
    l.client_closed = true;
    (void)client.path_failed(l.cpath, err, now);
  }
  if (!l.server_closed && l.spath && server) {
    l.server_closed = true;
    (void)server->path_failed(*l.spath, err, now);
  }
  l.up.q.clear();
  l.down.q.clear();
}

void FakeNet::pump(Link& l, bool upstream) {
  FlowCore* core = upstream ? &client : (server ? &*server : nullptr);
  if (core == nullptr) {
    return;
  }
  const bool closed = upstream ? l.client_closed : l.server_closed;
  if (closed) {
    return;
  }
  const std::optional<PathId> pid = upstream ? std::optional<PathId>(l.cpath) : l.spath;
  if (!pid) {
    return;
  }
  Dir& d = upstream ? l.up : l.down;
  std::size_t& holed = l.blackholed_bytes[upstream ? 0 : 1];
  const bool stream = l.spec.framing == Framing::stream;
  for (int guard = 0; guard < 10000 && core->wants_transmit(*pid); ++guard) {
    // A black-holed TCP carrier keeps taking bytes until its socket buffer is full.
    if (stream && d.in_flight + holed >= l.spec.window) {
      break;
    }
    std::vector<std::byte> out;
    const std::size_t n = core->poll_transmit(*pid, out, 64 * 1024 + 2, now);
    if (n == 0) {
      break;
    }
    if (l.blackholed) {
      holed += stream ? n : 0;
      l.dropped += 1;
      continue;
    }
    if (!stream && l.spec.loss > 0.0 &&
        std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < l.spec.loss) {
      l.dropped += 1;
      continue;
    }
    TimePoint start = std::max(now, d.free_at);
    if (l.spec.bytes_per_ms > 0) {
      start += std::chrono::microseconds(n * 1000 / l.spec.bytes_per_ms);
    }
    d.free_at = start;
    TimePoint arrive = start + l.spec.delay;
    if (stream && !d.q.empty()) {
      arrive = std::max(arrive, d.q.back().arrive);  // a byte stream never reorders
    }
    d.in_flight += stream ? n : 0;
    d.q.push_back(Packet{arrive, std::move(out)});
  }
}

void FakeNet::server_first_bytes(Link& l, std::span<const std::byte> bytes) {
  std::span<const std::byte> first;
  std::vector<std::byte> rest;
  if (l.spec.framing == Framing::stream) {
    l.accept.feed(bytes);
    auto f = l.accept.next();
    REQUIRE(f.ok());
    if (!f->has_value()) {
      return;  // first frame incomplete
    }
    first = **f;
  } else {
    first = bytes;
  }
  auto ff = classify_first_frame(first);
  INFO((ff.ok() ? std::string("-") : ff.error().message()));
  REQUIRE(ff.ok());
  const PathOptions opts{l.spec.framing, "server-link"};
  if (auto* h = std::get_if<Hello>(&*ff); h != nullptr && server) {
    auto p = server->accept_hello_again(*h, opts, now);  // the HELLO_ACK was lost: repeat
    INFO((p.ok() ? std::string("-") : p.error().message()));
    REQUIRE(p.ok());
    l.spath = *p;
  } else if (h != nullptr) {
    auto s = FlowCore::server(server_cfg_, *h, make_id(3), opts, now);
    INFO((s.ok() ? std::string("-") : s.error().message()));
    REQUIRE(s.ok());
    server.emplace(std::move(s).value());
    l.spath = server->path_ids().front();
  } else {
    REQUIRE(server.has_value());
    auto p = server->accept_bridge(std::get<BridgeTag>(*ff), opts, now);
    INFO((p.ok() ? std::string("-") : p.error().message()));
    REQUIRE(p.ok());
    l.spath = *p;
  }
  if (l.spec.framing == Framing::stream) {
    rest = l.accept.release_buffered();
    if (!rest.empty()) {
      REQUIRE(server->on_receive(*l.spath, rest, now).ok());
    }
  }
}

void FakeNet::deliver(Link& l, bool upstream) {
  Dir& d = upstream ? l.up : l.down;
  while (!d.q.empty() && d.q.front().arrive <= now) {
    Packet pkt = std::move(d.q.front());
    d.q.pop_front();
    if (l.spec.framing == Framing::stream) {
      d.in_flight -= pkt.bytes.size();
    }
    if (l.blackholed) {
      continue;  // in flight when the rule went in
    }
    if (upstream) {
      if (l.server_closed) {
        continue;
      }
      if (!l.spath) {
        server_first_bytes(l, pkt.bytes);
      } else {
        REQUIRE(server->on_receive(*l.spath, pkt.bytes, now).ok());
      }
    } else if (!l.client_closed) {
      REQUIRE(client.on_receive(l.cpath, pkt.bytes, now).ok());
    }
  }
}

void FakeNet::drain_events() {
  const auto note = [this](std::vector<FlowEvent>& sink, FlowEvent ev, bool client_side) {
    if (auto* down = std::get_if<EvPathDown>(&ev)) {
      // The shell closes the carrier of a path the core dropped.
      for (auto& l : links_) {
        if (client_side && l.cpath == down->path) {
          l.client_closed = true;
        }
        if (!client_side && l.spath == down->path) {
          l.server_closed = true;
        }
      }
    }
    sink.push_back(std::move(ev));
  };
  while (auto ev = client.poll_event()) {
    note(client_events, std::move(*ev), true);
  }
  if (server) {
    while (auto ev = server->poll_event()) {
      note(server_events, std::move(*ev), false);
    }
  }
}

std::optional<TimePoint> FakeNet::next_event() const {
  std::optional<TimePoint> t = client.next_deadline();
  const auto take = [&t](TimePoint x) {
    if (!t || x < *t) {
      t = x;
    }
  };
  if (server) {
    if (auto s = server->next_deadline()) {
      take(*s);
    }
  }
  for (const auto& l : links_) {
    if (!l.up.q.empty()) {
      take(l.up.q.front().arrive);
    }
    if (!l.down.q.empty()) {
      take(l.down.q.front().arrive);
    }
  }
  return t;
}

bool FakeNet::step() {
  if (client.next_deadline().value_or(TimePoint::max()) <= now) {
    if (client_timer_ctx) {
      client.on_timeout(now, client_timer_ctx());
    } else {
      client.on_timeout(now);
    }
  }
  if (server && server->next_deadline().value_or(TimePoint::max()) <= now) {
    server->on_timeout(now);
  }
  drain_events();
  if (app) {
    app(*this);
  }
  for (auto& l : links_) {
    pump(l, true);
    pump(l, false);
  }
  for (auto& l : links_) {
    deliver(l, true);
    deliver(l, false);
  }
  drain_events();
  if (app) {
    app(*this);
  }
  for (auto& l : links_) {
    pump(l, true);
    pump(l, false);
  }
  auto next = next_event();
  if (!next) {
    return false;
  }
  if (*next <= now) {
    // Something is due right now (new output, a deadline the cores just set): go round again,
    // but a deadline that never clears would spin: count it.
    spins += 1;
    if (spins % 64 == 0) {
      now += std::chrono::microseconds(100);
    }
    return true;
  }
  spins = 0;
  TimePoint to = std::min(*next, limit_);  // never jump past the caller's horizon
  if (max_step > Duration::zero()) {
    to = std::min(to, now + max_step);
  }
  now = to;
  return true;
}

bool FakeNet::run_until(const std::function<bool()>& done, Duration limit) {
  const TimePoint end = now + limit;
  limit_ = end;
  while (!done() && now < end) {
    if (!step()) {
      break;
    }
    REQUIRE(spins < 100000);
  }
  return done();
}

}  // namespace rendr::engine::test
