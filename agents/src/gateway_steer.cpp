// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the gateway role - steering setup, steer and steer_check.
#include "agent_internal.hpp"

#include <net/if.h>

namespace rendr::agents {

Status Agent::init_steering() {
  if (!cfg_.steer_ifaces.empty()) {
    // A stable filter handle: a gateway agent restarted after a crash replaces the steering
    // filters its previous run left (they kept steering meanwhile) and first takes over their
    // flow table, so connections living on a non-default backend stay there.
    ebpf::SteererOptions so;
    so.tc_handle = tc_filter_handle("steer", cfg_.name);
    auto st = ebpf::Steerer::create(so);
    if (!st) {
      return std::move(st).take_error().with_context("gateway steering");
    }
    steerer_ = std::make_unique<ebpf::Steerer>(std::move(*st));
    std::uint32_t idx = 0;
    std::vector<unsigned> return_ifaces;
    for (const auto& b : cfg_.backends) {
      unsigned ifidx = ::if_nametoindex(b.ifname.c_str());
      if (ifidx == 0) {
        return make_error(std::errc::no_such_device,
                          "--backend " + b.name + ": no device " + b.ifname);
      }
      ebpf::Backend be;
      be.ifindex = static_cast<int>(ifidx);
      if (!b.nexthop.empty()) {
        auto nh = Endpoint::parse_address(b.nexthop, 0);
        if (!nh) {
          return std::move(nh).take_error().with_context("--backend " + b.name + " nexthop");
        }
        be.nexthop = *nh;
      }
      RENDR_TRY_CTX(steerer_->set_backend(idx, be), "backend " + b.name);
      backend_index_[b.name] = idx++;
      // The servers' side of steered flows comes back on the backend's device: watch it for
      // their FINs and RSTs, once per device.
      if (std::find(return_ifaces.begin(), return_ifaces.end(), ifidx) == return_ifaces.end()) {
        RENDR_TRY_CTX(steerer_->attach_return(static_cast<int>(ifidx)),
                      "watch backend device " + b.ifname);
        return_ifaces.push_back(ifidx);
      }
    }
    for (const auto& v : cfg_.vips) {
      auto ep = Endpoint::parse_address(v, 0);
      if (!ep) {
        return std::move(ep).take_error().with_context("--vip");
      }
      RENDR_TRY_CTX(steerer_->add_vip(*ep), "--vip " + v);
      vips_.push_back(*ep);
    }
    if (!cfg_.default_backend.empty()) {
      auto it = backend_index_.find(cfg_.default_backend);
      if (it == backend_index_.end()) {
        return make_error(std::errc::invalid_argument,
                          "--default-backend " + cfg_.default_backend + " is not a --backend");
      }
      RENDR_TRY(steerer_->set_default_backend(it->second));
    }
    for (const auto& ifn : cfg_.steer_ifaces) {
      unsigned idx2 = ::if_nametoindex(ifn.c_str());
      if (idx2 == 0) {
        return make_error(std::errc::no_such_device, "--steer-iface " + ifn + ": no such device");
      }
      RENDR_TRY_CTX(steerer_->attach(static_cast<int>(idx2)), "attach steering to " + ifn);
    }
    const auto ad = steerer_->adopted();
    if (ad.adopted + ad.dropped > 0) {
      log_.info("took over " + std::to_string(ad.adopted) +
                " steering entries from the previous gateway run" +
                (ad.dropped > 0 ? " (" + std::to_string(ad.dropped) +
                                      " dropped: their backend is not configured any more)"
                                : ""));
    }
    log_.info("gateway steering on " + std::to_string(cfg_.steer_ifaces.size()) +
              " device(s), " + std::to_string(cfg_.backends.size()) + " backend(s)");
  }
  return {};
}

awaitable<void> Agent::steer_gc_loop() {
  if (!steerer_ || cfg_.steer_gc_interval_ms <= 0) {
    co_return;
  }
  asio::steady_timer t(io_);
  for (;;) {
    t.expires_after(ms(cfg_.steer_gc_interval_ms));
    auto [ec] = co_await t.async_wait(as_tuple_aw);
    if (ec || !steerer_) {
      co_return;
    }
    ebpf::CollectOptions o;
    o.fin_linger_ns = static_cast<std::uint64_t>(cfg_.steer_fin_linger_ms) * 1'000'000ULL;
    o.rst_linger_ns = static_cast<std::uint64_t>(cfg_.steer_rst_linger_ms) * 1'000'000ULL;
    auto r = steerer_->collect(o);
    if (!r) {
      log_.warn("steering table sweep: " + r.error().message());
      continue;
    }
    metrics_.steer_entries_removed += r->removed;
    metrics_.steer_entries = r->examined - r->removed;
    if (r->removed > 0) {
      log_.debug("steering table: " + std::to_string(r->removed) + " entries of ended flows "
                 "removed, " + std::to_string(metrics_.steer_entries) + " left");
    }
  }
}

Message Agent::on_steer(const Message& m, bool check_only) {
  auto mig = m.u64(Tag::mig);
  auto backend = m.str(Tag::backend);
  if (!steerer_) {
    return fail_msg("agent " + cfg_.name + " is not a gateway (no --steer-iface)");
  }
  if (!mig || !backend) {
    return fail_msg("malformed steer request");
  }
  auto bi = backend_index_.find(*backend);
  if (bi == backend_index_.end()) {
    return fail_msg("gateway " + cfg_.name + " has no backend '" + *backend + "'");
  }
  // All tuples first: a request that names one flow this gateway cannot steer changes nothing.
  std::vector<FourTuple> tuples;
  for (const auto& ts : m.strs(Tag::tuple)) {
    auto t = FourTuple::parse(ts);
    if (!t) {
      return fail_msg(t.error());
    }
    const std::string addr = t->local.address_string();
    if (std::none_of(vips_.begin(), vips_.end(),
                     [&addr](const Endpoint& v) { return v.address_string() == addr; })) {
      std::string have;
      for (const auto& v : vips_) {
        have += (have.empty() ? "" : ", ") + v.address_string();
      }
      return fail_msg("gateway " + cfg_.name + " does not steer " + addr + " (flow " +
                      t->to_string() + "); its VIPs: " + (have.empty() ? "none" : have));
    }
    tuples.push_back(*t);
  }
  if (fault("refuse_steer") && !check_only) {
    return fail_msg("gateway " + cfg_.name + " refused to steer (fault injection)");
  }
  std::size_t n = 0;
  for (const auto& t : tuples) {
    if (!check_only) {
      if (auto s = steerer_->steer(t, bi->second); !s) {
        return fail_msg(s.error());
      }
    }
    ++n;
  }
  return Message(MsgType::steered).add_u64(Tag::mig, *mig).add_u64(Tag::adopted, check_only ? 0 : n);
}

}  // namespace rendr::agents
