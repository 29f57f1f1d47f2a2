// SPDX-License-Identifier: Apache-2.0
#include "tun_dial.hpp"

#include <rendr/engine/errors.hpp>

namespace rendr::tun {

Result<Dialer*> Dialers::get(const std::vector<std::string>& peers) {
  std::lock_guard lk(mu_);
  if (auto it = by_peers_.find(peers); it != by_peers_.end()) {
    return it->second.get();
  }
  DialOptions o;
  o.listener_key = key_;
  for (std::size_t i = 0; i < peers.size(); ++i) {
    PathSpec p;
    p.transport = "tcp";
    p.address = peers[i];
    p.name = "p" + std::to_string(i + 1);
    o.paths.push_back(p);
  }
  auto d = Dialer::create(o);
  if (!d) {
    return std::move(d).take_error();
  }
  Dialer* raw = d->get();
  by_peers_.emplace(peers, std::move(*d));
  return raw;
}

std::string reason_of(const Admin* c, const Error& e) {
  if (auto r = c != nullptr ? c->peer_refusal() : std::nullopt) {
    return engine::to_string(r->code);
  }
  if (auto code = engine::refusal_code(e)) {
    return engine::to_string(*code);  // a dial the egress refused before it returned
  }
  if (e.code == make_error_code(engine::errc::flow_refused)) {
    return "unspecified";
  }
  if (e.code == make_error_code(engine::errc::peer_closed)) {
    return "peer_closed";
  }
  if (e.code == make_error_code(engine::errc::migration_budget_exceeded)) {
    return "migration_budget";
  }
  return "engine_error";
}

}  // namespace rendr::tun
