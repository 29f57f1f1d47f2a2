// SPDX-License-Identifier: Apache-2.0
#include "lab.hpp"

#include "conn_util.hpp"

namespace rendr::test {

GatewayLab::GatewayLab()
    : peer(Netns::create("peer")),
      gw(Netns::create("gw")),
      a(Netns::create("hostA")),
      b(Netns::create("hostB")) {
  veth(peer, "eth0", gw, "vpeer");
  veth(a, "eth0", gw, "va");
  veth(b, "eth0", gw, "vb");
  peer.must("ip addr add 10.0.1.2/24 dev eth0 && ip -6 addr add fd00:1::2/64 dev eth0 nodad && "
            "ip route add default via 10.0.1.1 && ip -6 route add default via fd00:1::1");
  gw.must("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 && "
          "ip addr add 10.0.1.1/24 dev vpeer && ip -6 addr add fd00:1::1/64 dev vpeer nodad && "
          "ip addr add 10.0.2.1/24 dev va && ip -6 addr add fd00:2::1/64 dev va nodad && "
          "ip addr add 10.0.3.1/24 dev vb && ip -6 addr add fd00:3::1/64 dev vb nodad");
  int i = 2;
  for (Netns* h : {&a, &b}) {
    std::string n = std::to_string(i++);
    h->must("ip addr add 10.0." + n + ".2/24 dev eth0 && ip -6 addr add fd00:" + n +
            "::2/64 dev eth0 nodad && ip route add default via 10.0." + n +
            ".1 && ip -6 route add default via fd00:" + n + "::1 && "
            "ip addr add 10.99.0.1/32 dev lo && ip -6 addr add fd99::1/128 dev lo nodad");
  }
  route_vip_to(a);
  // Resolve neighbours now so the first packets after a migration do not wait for ARP/ND.
  for (Netns* h : {&a, &b}) {
    const char* n = h == &a ? "2" : "3";
    h->must(std::string("ping -c1 -W2 -q 10.0.") + n + ".1 >/dev/null && ping -6 -c1 -W2 -q fd00:" +
            n + "::1 >/dev/null");
  }
}

void GatewayLab::route_vip_to(const Netns& host) {
  const char* n = &host == &a ? "2" : "3";
  gw.must(std::string("ip route replace 10.99.0.1/32 via 10.0.") + n +
          ".2 && ip -6 route replace fd99::1/128 via fd00:" + n + "::2");
}

void GatewayLab::freeze(const FourTuple& t, bool host_to_peer_only) {
  const bool v6 = t.local.family == IpFamily::v6;
  const std::string ip = v6 ? "ip6" : "ip";
  const std::string l = t.local.address_string();
  const std::string r = t.remote.address_string();
  const std::string lp = std::to_string(t.local.port);
  const std::string rp = std::to_string(t.remote.port);
  gw.must("nft -f - <<'EOF'\n"
          "table inet rendr_freeze {\n"
          " chain forward_drop { type filter hook forward priority -10; policy accept;\n"
          "  " + ip + " saddr " + l + " " + ip + " daddr " + r + " tcp sport " + lp +
          " tcp dport " + rp + " drop\n" +
          (host_to_peer_only ? std::string()
                             : "  " + ip + " saddr " + r + " " + ip + " daddr " + l +
                                   " tcp sport " + rp + " tcp dport " + lp + " drop\n") +
          " }\n}\nEOF");
  frozen_ = true;
}

void GatewayLab::unfreeze() {
  if (frozen_) {
    gw.must("nft delete table inet rendr_freeze");
    frozen_ = false;
  }
}

Flow open_flow(GatewayLab& lab, bool v6, std::uint16_t port) {
  Flow f;
  auto vip = *Endpoint::parse_address(v6 ? GatewayLab::kVip6 : GatewayLab::kVip4, port);
  f.listener = listen_on(lab.a, vip);
  f.client = connect_from(lab.peer, vip);
  f.server = accept_one(f.listener.get());
  f.tuple = tuple_of(f.server.get());
  return f;
}

}  // namespace rendr::test
