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

namespace {

// refusal_in names the refusal code in a flow_refused error's text ("... peer refused the
// flow: missing_egress (detail)"): a dial that the egress refused before it returned has no
// Conn to ask.
std::string refusal_in(const Error& e) {
  const std::string_view key = "peer refused the flow: ";
  const auto at = e.context.find(key);
  if (at == std::string::npos) {
    return "unspecified";
  }
  const auto start = at + key.size();
  const auto end = e.context.find_first_of(" :(", start);
  return e.context.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

}  // namespace

std::string reason_of(const Admin* c, const Error& e) {
  if (auto r = c != nullptr ? c->peer_refusal() : std::nullopt) {
    return engine::to_string(r->code);
  }
  if (e.code == make_error_code(engine::errc::flow_refused)) {
    return refusal_in(e);
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
