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
  o.listener_key = common_.listener_key;
  o.io = io_;
  apply_probe(common_, o);
  o.later_paths_after = common_.later_paths;
  o.later_paths_bytes = 64U << 10;
  // A path that dies is dialled again until it is back (a dropped uplink that returns): without
  // it a flow whose paths all died once (a real outage, or a loaded host missing the freshness
  // window on the last one) stays without a path until its migration budget ends. Attempts
  // are short so a path that comes back is used within a few seconds.
  o.retry.enabled = true;
  o.retry.min_backoff = std::chrono::milliseconds(200);
  o.retry.max_backoff = std::chrono::milliseconds(2000);
  o.retry.attempt_timeout = std::chrono::milliseconds(2000);
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
