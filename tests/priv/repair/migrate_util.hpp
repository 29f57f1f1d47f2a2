// SPDX-License-Identifier: Apache-2.0
// One cross-namespace migration in the gateway lab: freeze in gw, checkpoint, silent release,
// steer the VIP to |to|, restore inside |to|, unfreeze. Throws with the repair error on failure.
#pragma once

#include "support/gateway_fixture.hpp"
#include "support/sockets.hpp"

#include <rendr/common/tcp_snapshot.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/repair/repair.hpp>

#include <functional>
#include <stdexcept>

namespace rendr::test {

struct MigrateHooks {
  // Runs after the freeze, before the checkpoint (e.g. to queue data that must be "unacked").
  std::function<void()> after_freeze = {};
  // Receives the snapshot for inspection.
  std::function<void(const TcpSnapshot&)> inspect = {};
  bool host_to_peer_only = false;
};

inline UniqueFd migrate(GatewayFixture& lab, UniqueFd& fd, const Netns& to,
                        const MigrateHooks& hooks = {}) {
  const FourTuple t = tuple_of(fd.get());
  lab.freeze(t, hooks.host_to_peer_only);
  if (hooks.after_freeze) {
    hooks.after_freeze();
  }
  repair::Repairer rep;
  auto cp = rep.checkpoint(fd.get());
  if (!cp) {
    lab.unfreeze();
    throw std::runtime_error("checkpoint: " + cp.error().message());
  }
  if (hooks.inspect) {
    hooks.inspect(cp->snapshot);
  }
  rep.release(std::move(cp->socket));
  fd.reset();
  lab.route_vip_to(to);
  Result<UniqueFd> r = make_error(std::errc::invalid_argument, "not run");
  {
    NetnsScope in(to);
    r = rep.restore(cp->snapshot);
  }
  lab.unfreeze();
  if (!r) {
    throw std::runtime_error("restore: " + r.error().message());
  }
  return std::move(*r);
}

}  // namespace rendr::test
