// SPDX-License-Identifier: Apache-2.0
#include <rendr/engine/dialer.hpp>

#include "driver.hpp"

#include <rendr/engine/errors.hpp>

#include <sys/random.h>

#include <asio/post.hpp>

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

// Dialled: what dialling the paths gave (each path's carrier or failure, in path order).
struct Dialed {
  detail::DialedCarrier c;
  const PathSpec* spec;
};
struct DialedPaths {
  std::vector<Dialed> carriers;
  std::vector<const PathSpec*> failed;
  std::vector<const PathSpec*> later;  // later_paths_after: not dialled now
  std::optional<Error> first_error;
};

bool deferred_path(const DialOptions& opts, std::size_t index) {
  return opts.later_paths_after.count() > 0 && index > 0;
}

// make_flow builds the client flow on the dialled carriers (the first carries HELLO, the others
// BRIDGE_TAG once HELLO_ACK is in); the caller waits for it to settle.
Result<std::shared_ptr<detail::FlowDriver>> make_flow(
    const DialOptions& opts, const std::shared_ptr<detail::IoRuntime>& rt,
    const std::shared_ptr<const detail::DialContext>& ctx, bool packet, DialedPaths& dialed) {
  auto& carriers = dialed.carriers;
  if (carriers.empty()) {
    return dialed.first_error ? *dialed.first_error
                              : engine::make_error(engine::errc::invalid_config, "no path");
  }
  // The flow's frames must fit every path (datagram carriers take 1 392-byte frames), so
  // max_payload is settled before the FlowCore exists.
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
  return drv;
}

// schedule_background queues what the flow dials after its handshake: deferred paths, and the
// re-dial of paths that failed (retry).
void schedule_background(detail::FlowDriver& drv, const DialOptions& opts,
                         const detail::DialContext& ctx, const DialedPaths& dialed) {
  const auto& later = dialed.later;
  if ((!ctx.retry.enabled || dialed.failed.empty()) && later.empty()) {
    return;
  }
  std::unique_lock lk(drv.mu);
  // One queue dials them in turn: the first deferred path waits later_paths_after, the rest
  // follow it; then the re-dials of paths that failed.
  for (std::size_t i = 0; i < later.size(); ++i) {
    drv.schedule_later_locked(*later[i],
                              i == 0 ? opts.later_paths_after : std::chrono::milliseconds{0},
                              ctx.retry.enabled);
  }
  if (!later.empty()) {
    drv.arm_later_locked(opts.later_paths_bytes);
  }
  if (ctx.retry.enabled) {
    for (const PathSpec* spec : dialed.failed) {
      drv.schedule_redial_locked(*spec);
    }
  }
}

void note_failure(DialedPaths& dialed, const PathSpec& spec, const Error& e) {
  if (!dialed.first_error) {
    dialed.first_error = e.with_context("dial " + spec.transport + " " + spec.address);
  }
  dialed.failed.push_back(&spec);
}

Result<std::shared_ptr<detail::FlowDriver>> dial_flow(
    const DialOptions& opts, const std::shared_ptr<detail::IoRuntime>& rt,
    const std::shared_ptr<const detail::DialContext>& ctx, bool packet, Deadline deadline) {
  DialedPaths dialed;
  for (std::size_t i = 0; i < opts.paths.size(); ++i) {
    const auto& spec = opts.paths[i];
    if (deferred_path(opts, i) && !dialed.carriers.empty()) {
      dialed.later.push_back(&spec);
      continue;
    }
    auto c = detail::dial_carrier(*ctx, rt->io(), spec, deadline);
    if (!c) {
      note_failure(dialed, spec, c.error());
      continue;
    }
    dialed.carriers.push_back(Dialed{std::move(*c), &spec});
  }
  auto drv = make_flow(opts, rt, ctx, packet, dialed);
  if (!drv) {
    return drv;
  }
  if (auto st = (*drv)->wait_established(deadline); !st) {
    (*drv)->shutdown();
    return std::move(st).take_error();
  }
  schedule_background(**drv, opts, *ctx, dialed);
  return drv;
}

// AsyncDial: Dialer::async_dial on the io thread: every path's carrier at once
// (detail::async_dial_carrier), then make_flow and on_settled_locked. The handler runs once, on
// the io thread.
class AsyncDial : public std::enable_shared_from_this<AsyncDial> {
 public:
  AsyncDial(DialOptions opts, std::shared_ptr<detail::IoRuntime> rt,
            std::shared_ptr<const detail::DialContext> ctx, Deadline deadline,
            std::function<void(Result<ConnPtr>)> done)
      : opts_(std::move(opts)),
        rt_(std::move(rt)),
        ctx_(std::move(ctx)),
        deadline_(deadline),
        done_(std::move(done)) {}

  void start() {  // io thread
    for (std::size_t i = 0; i < opts_.paths.size(); ++i) {
      if (deferred_path(opts_, i)) {
        dialed_.later.push_back(&opts_.paths[i]);  // the first path is the one dialled now
        continue;
      }
      results_.emplace_back(&opts_.paths[i], std::nullopt);
    }
    waiting_ = results_.size();
    for (std::size_t i = 0; i < results_.size(); ++i) {
      detail::async_dial_carrier(ctx_, rt_->io(), *results_[i].first, deadline_,
                                 [self = shared_from_this(), i](Result<detail::DialedCarrier> c) {
                                   self->results_[i].second.emplace(std::move(c));
                                   if (--self->waiting_ == 0) {
                                     self->dialled();
                                   }
                                 });
    }
  }

 private:
  void dialled() {
    for (auto& [spec, r] : results_) {
      if (*r) {
        dialed_.carriers.push_back(Dialed{std::move(**r), spec});
      } else {
        note_failure(dialed_, *spec, r->error());
      }
    }
    results_.clear();
    auto drv = make_flow(opts_, rt_, ctx_, false, dialed_);
    if (!drv) {
      complete(std::move(drv).take_error());
      return;
    }
    std::unique_lock lk((*drv)->mu);
    (*drv)->on_settled_locked(deadline_, [self = shared_from_this(), d = *drv](Status st) {
      if (!st) {
        d->shutdown();
        self->complete(std::move(st).take_error());
        return;
      }
      schedule_background(*d, self->opts_, *self->ctx_, self->dialed_);
      self->complete(std::make_unique<Conn>(d));
    });
  }

  void complete(Result<ConnPtr> r) {
    auto done = std::move(done_);
    done_ = nullptr;
    if (done) {
      done(std::move(r));
    }
  }

  DialOptions opts_;  // the flow's knobs; the PathSpecs results_ and dialed_ point into
  std::shared_ptr<detail::IoRuntime> rt_;
  std::shared_ptr<const detail::DialContext> ctx_;
  Deadline deadline_;
  std::function<void(Result<ConnPtr>)> done_;
  std::vector<std::pair<const PathSpec*, std::optional<Result<detail::DialedCarrier>>>> results_;
  std::size_t waiting_ = 0;
  DialedPaths dialed_;
};

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

void Dialer::async_dial(const engine::L3Identity& identity, Deadline deadline,
                        std::function<void(Result<ConnPtr>)> done) {
  DialOptions o = opts_;
  o.l3_identity = identity;
  auto ctx = dial_context(o, stream_factories_, packet_factories_);
  auto a = std::make_shared<AsyncDial>(std::move(o), rt_, std::move(ctx), deadline,
                                       std::move(done));
  asio::post(rt_->io(), [a] { a->start(); });
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
