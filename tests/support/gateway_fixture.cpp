// SPDX-License-Identifier: Apache-2.0
#include "support/gateway_fixture.hpp"

#include "support/sockets.hpp"

#include <signal.h>

#include <cctype>
#include <cerrno>
#include <filesystem>
#include <stdexcept>

namespace rendr::test {
namespace {

std::unique_ptr<lab::GatewayLab> create_lab() {
  (void)remove_stale_test_labs();
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

std::vector<std::string> remove_stale_test_labs() {
  std::vector<std::string> removed;
  const std::string mine = unique_prefix();
  const std::string tag = mine.substr(0, mine.find_first_of("0123456789"));  // "rlt"
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/run/netns", ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(tag, 0) != 0) {
      continue;
    }
    std::size_t end = tag.size();
    while (end < name.size() && std::isdigit(static_cast<unsigned char>(name[end])) != 0) {
      ++end;
    }
    if (end == tag.size() || end - tag.size() > 9) {
      continue;
    }
    const pid_t pid = static_cast<pid_t>(std::stol(name.substr(tag.size(), end - tag.size())));
    if (::kill(pid, 0) != 0 && errno == ESRCH) {
      removed.push_back(name);
    }
  }
  for (const auto& name : removed) {
    lab::netns_del(name);
  }
  return removed;
}

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
