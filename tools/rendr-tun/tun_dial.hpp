// SPDX-License-Identifier: Apache-2.0
// tun_dial: what the ingress's TCP and UDP paths share: one Dialer per distinct peer list the
// decision hook names (one tcp path per peer, prime mode), and the name of the reason an
// engine flow ended (the egress's refusal code, read as data, or the engine error) for the
// counters.
#pragma once

#include "tun_roles.hpp"

#include <rendr/common/result.hpp>
#include <rendr/engine/conn.hpp>
#include <rendr/engine/dialer.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace rendr::tun {

class Dialers {
 public:
  // |o|: the listener key and the probing (--probe-ms) every Dialer gets; |io|: the io_context
  // every Dialer runs its flows on (null: a thread of its own each).
  explicit Dialers(const CommonOptions& o, asio::io_context* io = nullptr)
      : common_(o), io_(io) {}
  // get: the Dialer for |peers|, created on first use. Its flows dial a dead path again until
  // it is back. Errors: Dialer::create's.
  [[nodiscard]] Result<Dialer*> get(const std::vector<std::string>& peers);

 private:
  CommonOptions common_;
  asio::io_context* io_ = nullptr;
  std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Dialer>> by_peers_;
};

// reason_of names why an engine flow (|c|, or null when the dial itself failed) ended with
// |e|: the egress's refusal code ("flow_denied", "missing_egress", ...), "peer_closed",
// "migration_budget" or "engine_error".
[[nodiscard]] std::string reason_of(const Admin* c, const Error& e);

}  // namespace rendr::tun
