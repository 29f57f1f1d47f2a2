// SPDX-License-Identifier: Apache-2.0
#include <rendr/engine/dialer.hpp>

#include "driver.hpp"

#include <rendr/engine/errors.hpp>

#include <sys/random.h>

#include <algorithm>

namespace rendr {

namespace {

engine::Id128 random_id() {
  engine::Id128 id{};
  std::size_t got = 0;
  for (int guard = 0; guard < 16 && got < id.size(); ++guard) {
    const ssize_t n = ::getrandom(id.data() + got, id.size() - got, 0);
    if (n > 0) {
      got += static_cast<std::size_t>(n);
    }
  }
  return id;
}

bool builtin(const std::string& name) {
  return name == "tcp" || name == "udpflow" || name == "quic";
}

}  // namespace

Result<std::unique_ptr<Dialer>> Dialer::create(DialOptions opts) {
  if (opts.paths.empty()) {
    return engine::make_error(engine::errc::invalid_config, "Dialer has no paths");
  }
  if (auto st = engine::validate_config(opts); !st) {
    return std::move(st).take_error().with_context("Dialer");
  }
  if (opts.retry.enabled &&
      (opts.retry.min_backoff.count() <= 0 || opts.retry.max_backoff < opts.retry.min_backoff ||
       opts.retry.attempt_timeout.count() <= 0)) {
    return engine::make_error(engine::errc::invalid_config,
                              "Dialer: retry needs 0 < min_backoff <= max_backoff and "
                              "attempt_timeout > 0");
  }
  if (opts.later_paths_after.count() < 0) {
    return engine::make_error(engine::errc::invalid_config,
                              "Dialer: later_paths_after must not be negative");
  }
  if (opts.instance_id == engine::Id128{}) {
    opts.instance_id = random_id();
  }
  std::unique_ptr<Dialer> d(new Dialer());
  d->opts_ = std::move(opts);
  d->rt_ = d->opts_.io != nullptr ? detail::IoRuntime::external(*d->opts_.io)
                                  : detail::IoRuntime::owned("rendr-dialer");
  return d;
}

Dialer::~Dialer() = default;

Status Dialer::add_stream_factory(const std::string& name, StreamFactory f) {
  if (name.empty() || builtin(name) || stream_factories_.count(name) != 0 ||
      packet_factories_.count(name) != 0 || !f) {
    return make_error(std::errc::invalid_argument,
                      "add_stream_factory \"" + name + "\": empty, built-in or taken");
  }
  stream_factories_[name] = std::move(f);
  return {};
}

Status Dialer::add_packet_factory(const std::string& name, PacketFactory f) {
  if (name.empty() || builtin(name) || stream_factories_.count(name) != 0 ||
      packet_factories_.count(name) != 0 || !f) {
    return make_error(std::errc::invalid_argument,
                      "add_packet_factory \"" + name + "\": empty, built-in or taken");
  }
  packet_factories_[name] = std::move(f);
  return {};
}

namespace {

// dial_context: what a flow keeps for add_path and the re-dial (the Dialer's factories as of
// now, and its retry policy).
std::shared_ptr<const detail::DialContext> dial_context(
    const DialOptions& opts, const std::map<std::string, StreamFactory>& streams,
    const std::map<std::string, PacketFactory>& packets) {
  auto ctx = std::make_shared<detail::DialContext>();
  ctx->stream_factories = streams;
  ctx->packet_factories = packets;
  ctx->retry = opts.retry;
  return ctx;
}

Result<std::shared_ptr<detail::FlowDriver>> dial_flow(
    const DialOptions& opts, const std::shared_ptr<detail::IoRuntime>& rt,
    const std::shared_ptr<const detail::DialContext>& ctx, bool packet, Deadline deadline) {
  // Dial every carrier first: the flow's frames must fit every path (datagram carriers take
  // 1 392-byte frames), so max_payload is settled before the FlowCore exists.
  struct Dialed {
    detail::DialedCarrier c;
    const PathSpec* spec;
  };
  std::vector<Dialed> carriers;
  std::vector<const PathSpec*> failed;
  std::vector<const PathSpec*> later;  // later_paths_after: not dialled now
  std::optional<Error> first_error;
  for (const auto& spec : opts.paths) {
    if (opts.later_paths_after.count() > 0 && !carriers.empty()) {
      later.push_back(&spec);
      continue;
    }
    auto c = detail::dial_carrier(*ctx, rt->io(), spec, deadline);
    if (!c) {
      if (!first_error) {
        first_error = c.error().with_context("dial " + spec.transport + " " + spec.address);
      }
      failed.push_back(&spec);
      continue;
    }
    carriers.push_back(Dialed{std::move(*c), &spec});
  }
  if (carriers.empty()) {
    return first_error ? *first_error : engine::make_error(engine::errc::invalid_config, "no path");
  }
  engine::FlowConfig cfg = opts;
  if (packet) {
    cfg.caps |= engine::kCapsPacketMode;
  }
  cfg.caps = (cfg.caps & ~engine::kCapsModeMask) |
             (static_cast<std::uint32_t>(cfg.mode) << engine::kCapsModeShift);
  for (const auto& d : carriers) {
    if (d.c.packet) {
      cfg.max_payload = std::min(cfg.max_payload, d.c.packet->max_frame() - engine::kHeaderSize);
    }
  }
  auto core = engine::FlowCore::client(cfg, random_id(), opts.instance_id);
  if (!core) {
    return std::move(core).take_error();
  }
  auto drv = std::make_shared<detail::FlowDriver>(rt, std::move(*core), ctx);
  drv->set_max_payload(cfg.max_payload);
  {
    std::unique_lock lk(drv->mu);
    for (auto& d : carriers) {
      engine::PathOptions po;
      po.name = d.spec->name.empty() ? d.spec->transport + "/" + d.spec->address : d.spec->name;
      if (d.c.packet) {
        po.framing = engine::Framing::datagram;
        po.max_frame = d.c.packet->max_frame();
      }
      po.wall = std::chrono::system_clock::now();
      auto id = drv->core().add_path(po, engine::Clock::now());
      if (!id) {
        return std::move(id).take_error();
      }
      if (d.c.stream) {
        drv->attach_stream_locked(*id, std::move(d.c.stream), d.spec->transport, {});
      } else {
        drv->attach_packet_locked(*id, std::move(d.c.packet), d.spec->transport);
      }
      drv->note_path_locked(*id, *d.spec);
    }
  }
  if (auto st = drv->wait_established(deadline); !st) {
    drv->shutdown();
    return std::move(st).take_error();
  }
  if ((ctx->retry.enabled && !failed.empty()) || !later.empty()) {
    std::unique_lock lk(drv->mu);
    // One queue dials them in turn: the first deferred path waits later_paths_after, the rest
    // follow it; then the re-dials of paths that failed.
    for (std::size_t i = 0; i < later.size(); ++i) {
      drv->schedule_later_locked(*later[i],
                                 i == 0 ? opts.later_paths_after : std::chrono::milliseconds{0},
                                 ctx->retry.enabled);
    }
    if (!later.empty()) {
      drv->arm_later_locked(opts.later_paths_bytes);
    }
    if (ctx->retry.enabled) {
      for (const PathSpec* spec : failed) {
        drv->schedule_redial_locked(*spec);
      }
    }
  }
  return drv;
}

}  // namespace

Result<ConnPtr> Dialer::dial(Deadline deadline) {
  auto ctx = dial_context(opts_, stream_factories_, packet_factories_);
  auto d = dial_flow(opts_, rt_, ctx, false, deadline);
  if (!d) {
    return std::move(d).take_error();
  }
  return std::make_unique<Conn>(std::move(*d));
}

Result<PacketConnPtr> Dialer::dial_packet(Deadline deadline) {
  auto ctx = dial_context(opts_, stream_factories_, packet_factories_);
  auto d = dial_flow(opts_, rt_, ctx, true, deadline);
  if (!d) {
    return std::move(d).take_error();
  }
  return std::make_unique<PacketConn>(std::move(*d));
}

Result<ConnPtr> Dialer::dial(const engine::L3Identity& identity, Deadline deadline) {
  DialOptions o = opts_;
  o.l3_identity = identity;
  auto ctx = dial_context(o, stream_factories_, packet_factories_);
  auto d = dial_flow(o, rt_, ctx, false, deadline);
  if (!d) {
    return std::move(d).take_error();
  }
  return std::make_unique<Conn>(std::move(*d));
}

Result<PacketConnPtr> Dialer::dial_packet(const engine::L3Identity& identity, Deadline deadline) {
  DialOptions o = opts_;
  o.l3_identity = identity;
  auto ctx = dial_context(o, stream_factories_, packet_factories_);
  auto d = dial_flow(o, rt_, ctx, true, deadline);
  if (!d) {
    return std::move(d).take_error();
  }
  return std::make_unique<PacketConn>(std::move(*d));
}

}  // namespace rendr
