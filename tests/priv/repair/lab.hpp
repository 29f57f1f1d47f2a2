// SPDX-License-Identifier: Apache-2.0
// The gateway lab used by repair's priv tests: peer -- gw -- {hostA, hostB}, each an anonymous
// netns. The VIP (10.99.0.1 / fd99::1) is configured on both hosts; gw routes it to the host
// that currently owns the flow. freeze()/unfreeze() drop a flow's packets in gw (nftables),
// the stand-in for the eBPF freeze of the native migration path.
#pragma once

#include "support/netns.hpp"

#include <rendr/common/endpoint.hpp>
#include <rendr/common/unique_fd.hpp>

#include <string>

namespace rendr::test {

class GatewayLab {
 public:
  GatewayLab();

  Netns peer;
  Netns gw;
  Netns a;
  Netns b;

  static constexpr const char* kVip4 = "10.99.0.1";
  static constexpr const char* kVip6 = "fd99::1";
  static constexpr const char* kPeer4 = "10.0.1.2";
  static constexpr const char* kPeer6 = "fd00:1::2";

  // route_vip_to points gw's VIP routes at |host| (a or b).
  void route_vip_to(const Netns& host);
  // freeze drops both directions of |tuple| in gw (only host->peer when |host_to_peer_only|);
  // unfreeze lifts it.
  void freeze(const FourTuple& tuple, bool host_to_peer_only = false);
  void unfreeze();

 private:
  bool frozen_ = false;
};

// Flow: one connection peer -> VIP served in hostA (listener kept open until the test drops it).
struct Flow {
  UniqueFd listener;
  UniqueFd server;  // in hostA
  UniqueFd client;  // in peer
  FourTuple tuple;  // as seen by the server
};

// open_flow connects the peer to the VIP (IPv4 or IPv6) on |port| and accepts in hostA.
Flow open_flow(GatewayLab& lab, bool v6, std::uint16_t port);

}  // namespace rendr::test
