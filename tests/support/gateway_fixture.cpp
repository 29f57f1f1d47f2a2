// SPDX-License-Identifier: Apache-2.0
#include "support/gateway_fixture.hpp"

#include "support/sockets.hpp"

#include <stdexcept>

namespace rendr::test {
namespace {

std::unique_ptr<lab::GatewayLab> create_lab() {
  auto l = lab::GatewayLab::create(unique_prefix("gw"));
  if (!l) {
    throw std::runtime_error("gateway lab: " + l.error().message());
  }
  return std::move(*l);
}

void must(const Status& st) {
  if (!st) {
    throw std::runtime_error(st.error().message());
  }
}

}  // namespace

GatewayFixture::GatewayFixture()
    : lab_(create_lab()),
      peer(Netns::open(lab_->ns("peer"))),
      gw(Netns::open(lab_->ns("gw"))),
      a(Netns::open(lab_->host_ns(lab::Host::a))),
      b(Netns::open(lab_->host_ns(lab::Host::b))) {}

void GatewayFixture::route_vip_to(const Netns& host) {
  must(lab_->route_vip_to(&host == &a ? lab::Host::a : lab::Host::b));
}

void GatewayFixture::freeze(const FourTuple& tuple, bool host_to_peer_only) {
  must(lab_->freeze(tuple, host_to_peer_only));
}

void GatewayFixture::unfreeze() { must(lab_->unfreeze()); }

Flow open_flow(GatewayFixture& lab, bool v6, std::uint16_t port) {
  Flow f;
  auto vip = *Endpoint::parse_address(v6 ? GatewayFixture::kVip6 : GatewayFixture::kVip4, port);
  f.listener = listen_on(lab.a, vip);
  f.client = connect_from(lab.peer, vip);
  f.server = accept_one(f.listener.get());
  f.tuple = tuple_of(f.server.get());
  return f;
}

}  // namespace rendr::test
