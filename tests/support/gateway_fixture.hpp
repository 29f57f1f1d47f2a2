// SPDX-License-Identifier: Apache-2.0
// GatewayFixture: tools/lab's gateway lab (lab::GatewayLab: peer -- gw -- {a, b}, the VIP
// 10.99.0.1 / fd99::1 on both hosts, gw routing it to its owner) seen through test::Netns
// handles, so tests run commands, spawn processes and open sockets inside its namespaces. The
// namespaces are named "<unique prefix>-<role>"; the fixture deletes them when it goes, also
// when a test fails. A test process that crashed leaves its namespaces behind: the next fixture
// deletes those of test processes that no longer run (remove_stale_test_labs).
//
//   GatewayFixture lab;
//   Flow f = open_flow(lab, /*v6=*/false, 7000);  // peer -> VIP, accepted in a
//   lab.freeze(f.tuple);  ...  lab.route_vip_to(lab.b);  lab.unfreeze();
#pragma once

#include "lab/gateway_lab.hpp"
#include "support/netns.hpp"

#include <rendr/common/endpoint.hpp>
#include <rendr/common/unique_fd.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace rendr::test {

class GatewayFixture {
  // Declared first: built before, and deleted after, the Netns handles below.
  std::unique_ptr<lab::GatewayLab> lab_;

 public:
  // Builds the lab (throws std::runtime_error with the lab's error when it cannot).
  GatewayFixture();
  GatewayFixture(const GatewayFixture&) = delete;
  GatewayFixture& operator=(const GatewayFixture&) = delete;

  Netns peer;
  Netns gw;
  Netns a;
  Netns b;

  static constexpr const char* kVip4 = lab::GatewayLab::kVip4;
  static constexpr const char* kVip6 = lab::GatewayLab::kVip6;
  static constexpr const char* kPeer4 = lab::GatewayLab::kPeer4;
  static constexpr const char* kPeer6 = lab::GatewayLab::kPeer6;

  // topology: the lab itself (namespace names, addresses, AgentStack::start).
  [[nodiscard]] const lab::GatewayLab& topology() const { return *lab_; }
  // route_vip_to points gw's VIP routes at |host| (a or b).
  void route_vip_to(const Netns& host);
  // freeze drops both directions of |tuple| (the host's view) in gw, only host -> peer when
  // |host_to_peer_only|; unfreeze lifts it.
  void freeze(const FourTuple& tuple, bool host_to_peer_only = false);
  void unfreeze();
};

// remove_stale_test_labs deletes the lab namespaces of test processes that no longer run (names
// from unique_prefix whose pid is gone) and returns their names.
std::vector<std::string> remove_stale_test_labs();

// Flow: one connection peer -> VIP served in host a (listener kept open until the test drops it).
struct Flow {
  UniqueFd listener;
  UniqueFd server;  // in a
  UniqueFd client;  // in peer
  FourTuple tuple;  // as seen by the server
};

// open_flow connects the peer to the VIP (IPv4 or IPv6) on |port| and accepts in host a.
Flow open_flow(GatewayFixture& lab, bool v6, std::uint16_t port);

}  // namespace rendr::test
