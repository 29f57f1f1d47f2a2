// SPDX-License-Identifier: Apache-2.0
#include "gateway_lab.hpp"

#include <fcntl.h>

#include <map>

namespace rendr::lab {

const std::vector<std::string>& GatewayLab::roles() {
  static const std::vector<std::string> kRoles = {"peer", "gw", "a", "b"};
  return kRoles;
}

const std::vector<Iface>& GatewayLab::interfaces() {
  static const std::vector<Iface> kIfaces = {
      {"peer", "eth0", "10.0.1.2/24", "fd00:1::2/64", "gw", "vpeer"},
      {"gw", "vpeer", "10.0.1.1/24", "fd00:1::1/64", "peer", "eth0"},
      {"gw", "va", "10.0.2.1/24", "fd00:2::1/64", "a", "eth0"},
      {"gw", "vb", "10.0.3.1/24", "fd00:3::1/64", "b", "eth0"},
      {"a", "eth0", "10.0.2.2/24", "fd00:2::2/64", "gw", "va"},
      {"a", "lo", "10.99.0.1/32", "fd99::1/128", "", ""},
      {"b", "eth0", "10.0.3.2/24", "fd00:3::2/64", "gw", "vb"},
      {"b", "lo", "10.99.0.1/32", "fd99::1/128", "", ""},
  };
  return kIfaces;
}

namespace {
const char* leg(Host h) { return h == Host::a ? "2" : "3"; }
}  // namespace

std::string GatewayLab::host_addr4(Host h) { return std::string("10.0.") + leg(h) + ".2"; }
std::string GatewayLab::host_addr6(Host h) { return std::string("fd00:") + leg(h) + "::2"; }
std::string GatewayLab::gw_addr4(Host h) { return std::string("10.0.") + leg(h) + ".1"; }
std::string GatewayLab::gw_addr6(Host h) { return std::string("fd00:") + leg(h) + "::1"; }
std::string GatewayLab::gw_ifname(Host h) { return h == Host::a ? "va" : "vb"; }

Status GatewayLab::run(const std::string& role, const std::string& cmd) const {
  return run_in(ns(role), cmd);
}

Result<std::unique_ptr<GatewayLab>> GatewayLab::create(std::string prefix) {
  RENDR_TRY(valid_prefix(prefix));
  std::unique_ptr<GatewayLab> lab(new GatewayLab(std::move(prefix)));
  lab->teardown();  // leftovers of an earlier run
  // From here on, any early return destroys |lab|, which deletes what was built so far.
  // Few process spawns: they are most of the set-up time (each command of a script runs as
  // "ip -n <ns>" where it can, without entering the namespace).
  for (const auto& role : roles()) {
    RENDR_TRY(netns_add(lab->ns(role)));
  }
  std::vector<std::string> links;
  for (const auto& role : roles()) {
    links.push_back(in_ns(lab->ns(role), kNoDadSysctl));
  }
  links.push_back(in_ns(lab->ns("gw"), "sysctl -qw net.ipv4.ip_forward=1 "
                                       "net.ipv6.conf.all.forwarding=1 "
                                       "net.ipv6.conf.default.forwarding=1"));
  for (const auto& i : interfaces()) {
    if (i.peer_role.empty() || i.role == "gw") {
      continue;  // lo, or the gw end (created with its peer)
    }
    links.push_back("ip -n " + lab->ns(i.role) + " link add " + i.name + " type veth peer name " +
                    i.peer_name + " netns " + lab->ns(i.peer_role));
  }
  // Links up (and carrier on) first, addresses after: an IPv6 address added (nodad) while its
  // link has no carrier makes the first neighbour resolution over that link wait a full
  // retransmit timer (1 s).
  for (const auto& i : interfaces()) {
    if (i.name != "lo") {
      links.push_back(in_ns(lab->ns(i.role), "ip link set " + i.name + " up"));
    }
  }
  RENDR_TRY(run_script("gateway lab " + lab->prefix_ + ": links", links));
  std::map<std::string, std::map<std::string, std::string>> mac;  // role -> ifname -> MAC
  for (const auto& role : roles()) {
    RENDR_TRY(wait_links_ready(lab->ns(role)));
    auto m = macs(lab->ns(role));
    if (!m) {
      return std::move(m).take_error();
    }
    mac[role] = std::move(*m);
  }
  std::vector<std::string> net;
  for (const auto& i : interfaces()) {
    net.push_back(in_ns(lab->ns(i.role), "ip addr add " + i.addr4 + " dev " + i.name));
    net.push_back(in_ns(lab->ns(i.role), "ip -6 addr add " + i.addr6 + " dev " + i.name +
                                             " nodad"));
  }
  // Permanent neighbours on every veth (see pin_neighbour).
  for (const auto& i : interfaces()) {
    if (i.peer_role.empty()) {
      continue;
    }
    auto m = mac[i.peer_role].find(i.peer_name);
    if (m == mac[i.peer_role].end()) {
      return make_error(std::errc::io_error, "lab: [" + lab->ns(i.peer_role) + "] no MAC for " +
                                                 i.peer_name);
    }
    for (const auto& o : interfaces()) {
      if (o.role == i.peer_role && o.name == i.peer_name) {
        auto pins = neighbour_pins(lab->ns(i.role), i.name,
                                   {o.addr4.substr(0, o.addr4.find('/')),
                                    o.addr6.substr(0, o.addr6.find('/'))},
                                   m->second);
        net.insert(net.end(), pins.begin(), pins.end());
      }
    }
  }
  net.push_back(in_ns(lab->ns("peer"), "ip route add default via 10.0.1.1"));
  net.push_back(in_ns(lab->ns("peer"), "ip -6 route add default via fd00:1::1"));
  for (Host h : {Host::a, Host::b}) {
    const std::string n = lab->ns(h == Host::a ? "a" : "b");
    net.push_back(in_ns(n, "ip route add default via " + gw_addr4(h)));
    net.push_back(in_ns(n, "ip -6 route add default via " + gw_addr6(h)));
  }
  net.push_back(in_ns(lab->ns("gw"), "ip route replace 10.99.0.1/32 via " + host_addr4(Host::a)));
  net.push_back(in_ns(lab->ns("gw"), "ip -6 route replace fd99::1/128 via " +
                                         host_addr6(Host::a)));
  RENDR_TRY(run_script("gateway lab " + lab->prefix_ + ": addresses and routes", net));
  // Every leg answers before create() returns (see kProbePing).
  std::vector<std::string> probes;
  for (Host h : {Host::a, Host::b}) {
    const std::string n = lab->ns(h == Host::a ? "a" : "b");
    probes.push_back(in_ns(n, std::string(kProbePing) + " " + gw_addr4(h) + " >/dev/null"));
    probes.push_back(in_ns(n, std::string(kProbePing) + " -6 " + gw_addr6(h) + " >/dev/null"));
  }
  for (const std::string& dst : {std::string(kGwPeer4), std::string("-6 ") + kGwPeer6,
                                 std::string(kVip4), std::string("-6 ") + kVip6}) {
    probes.push_back(in_ns(lab->ns("peer"), std::string(kProbePing) + " " + dst + " >/dev/null"));
  }
  RENDR_TRY(run_script("gateway lab " + lab->prefix_ + ": reachability", probes));
  return lab;
}

Result<std::unique_ptr<GatewayLab>> GatewayLab::attach(std::string prefix) {
  RENDR_TRY(valid_prefix(prefix));
  std::unique_ptr<GatewayLab> lab(new GatewayLab(std::move(prefix)));
  lab->owned_ = false;
  for (const auto& role : roles()) {
    if (!netns_exists(lab->ns(role))) {
      return make_error(std::errc::no_such_file_or_directory,
                        "lab: no gateway lab with prefix '" + lab->prefix_ + "' (namespace " +
                            lab->ns(role) + " missing)");
    }
  }
  return lab;
}

GatewayLab::~GatewayLab() {
  if (owned_) {
    teardown();
  }
}

void GatewayLab::teardown() {
  for (const auto& role : roles()) {
    netns_del(ns(role));
  }
  frozen_ = false;
}

Result<UniqueFd> GatewayLab::netns_fd(const std::string& role) const {
  return UniqueFd::open("/run/netns/" + ns(role), O_RDONLY);
}

Result<int> GatewayLab::ifindex(const std::string& role, const std::string& ifname) const {
  return lab::ifindex(ns(role), ifname);
}

Status GatewayLab::route_vip_to(Host h) {
  return run("gw", "ip route replace 10.99.0.1/32 via " + host_addr4(h) +
                       " && ip -6 route replace fd99::1/128 via " + host_addr6(h));
}

Status GatewayLab::use_userstack(Host h, const std::string& tun, int owner_uid,
                                 int owner_gid) const {
  const std::string role = h == Host::a ? "a" : "b";
  const std::string owner =
      (owner_uid >= 0 ? " user " + std::to_string(owner_uid) : std::string()) +
      (owner_gid >= 0 ? " group " + std::to_string(owner_gid) : std::string());
  return run(role, "ip tuntap add dev " + tun + " mode tun" + owner + " && ip link set " + tun +
                       " up && ip addr del " + kVip4 + "/32 dev lo && ip -6 addr del " + kVip6 +
                       "/128 dev lo && ip route add " + kVip4 + "/32 dev " + tun +
                       " && ip -6 route add " + kVip6 + "/128 dev " + tun +
                       " && sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
}

Result<Host> GatewayLab::vip_owner() const {
  auto out = output_in(ns("gw"), "ip route show 10.99.0.1/32");
  if (!out) {
    return std::move(out).take_error();
  }
  if (out->find("via " + host_addr4(Host::a)) != std::string::npos) {
    return Host::a;
  }
  if (out->find("via " + host_addr4(Host::b)) != std::string::npos) {
    return Host::b;
  }
  return make_error(std::errc::no_such_file_or_directory, "lab: gw has no VIP route");
}

Status GatewayLab::freeze(const FourTuple& t, bool host_to_peer_only) {
  const std::string ip = t.local.family == IpFamily::v6 ? "ip6" : "ip";
  const std::string l = t.local.address_string();
  const std::string r = t.remote.address_string();
  const std::string lp = std::to_string(t.local.port);
  const std::string rp = std::to_string(t.remote.port);
  std::string script = "table inet rendr_freeze { chain forward_drop { type filter hook forward "
                       "priority -10; policy accept; " +
                       ip + " saddr " + l + " " + ip + " daddr " + r + " tcp sport " + lp +
                       " tcp dport " + rp + " drop; " +
                       (host_to_peer_only ? std::string()
                                          : ip + " saddr " + r + " " + ip + " daddr " + l +
                                                " tcp sport " + rp + " tcp dport " + lp +
                                                " drop; ") +
                       "}; }";
  RENDR_TRY(run("gw", "echo " + shell_quote(script) + " | nft -f -"));
  frozen_ = true;
  return {};
}

Status GatewayLab::unfreeze() {
  if (!frozen_) {
    return {};
  }
  frozen_ = false;
  return run("gw", "nft delete table inet rendr_freeze");
}

void GatewayLab::describe(JsonWriter& w) const {
  auto addr_pair = [&](std::string_view key4, const std::string& a4, std::string_view key6,
                       const std::string& a6) { w.kv(key4, a4).kv(key6, a6); };
  w.begin_object();
  w.kv("lab", "gateway").kv("prefix", prefix_);
  bool up = true;
  for (const auto& role : roles()) {
    up = up && netns_exists(ns(role));
  }
  w.kv("up", up);
  w.begin_object("vip").kv("v4", kVip4).kv("v6", kVip6);
  auto owner = up ? vip_owner() : Result<Host>(make_error(std::errc::no_such_file_or_directory, ""));
  if (owner) {
    w.kv("owner", *owner == Host::a ? "a" : "b").kv("owner_ns", host_ns(*owner));
  } else {
    w.kv_null("owner").kv_null("owner_ns");
  }
  w.end_object();
  w.begin_object("peer").kv("ns", ns("peer")).kv("if", kHostIf);
  addr_pair("addr4", kPeer4, "addr6", kPeer6);
  addr_pair("gw4", kGwPeer4, "gw6", kGwPeer6);
  w.end_object();
  w.begin_object("gw").kv("ns", ns("gw"));
  w.begin_object("peer").kv("if", kGwPeerIf).kv("addr4", kGwPeer4).kv("addr6", kGwPeer6);
  w.end_object();
  for (Host h : {Host::a, Host::b}) {
    w.begin_object(h == Host::a ? "a" : "b").kv("if", gw_ifname(h));
    addr_pair("addr4", gw_addr4(h), "addr6", gw_addr6(h));
    w.end_object();
  }
  w.end_object();
  w.begin_object("hosts");
  for (Host h : {Host::a, Host::b}) {
    w.begin_object(h == Host::a ? "a" : "b").kv("ns", host_ns(h)).kv("if", kHostIf);
    addr_pair("addr4", host_addr4(h), "addr6", host_addr6(h));
    addr_pair("gw4", gw_addr4(h), "gw6", gw_addr6(h));
    w.end_object();
  }
  w.end_object();
  // Agent management addresses: where each node's rendr-agent listens for its peers. Hosts use
  // their leg address (routed through gw); gw uses its peer-leg address, reachable from all.
  w.begin_object("agents");
  w.begin_object("gw").kv("ns", ns("gw")).kv("addr4", kGwPeer4).kv("addr6", kGwPeer6);
  w.end_object();
  for (Host h : {Host::a, Host::b}) {
    w.begin_object(h == Host::a ? "a" : "b").kv("ns", host_ns(h));
    addr_pair("addr4", host_addr4(h), "addr6", host_addr6(h));
    w.end_object();
  }
  w.end_object();
  w.begin_array("namespaces");
  for (const auto& role : roles()) {
    w.begin_object().kv("role", role).kv("name", ns(role)).kv("exists", netns_exists(ns(role)));
    std::vector<Link> ls;
    if (netns_exists(ns(role))) {
      if (auto r = links(ns(role))) {
        ls = std::move(*r);
      }
    }
    w.begin_array("interfaces");
    for (const auto& i : interfaces()) {
      if (i.role != role) {
        continue;
      }
      w.begin_object().kv("name", i.name);
      bool found = false;
      for (const auto& l : ls) {
        if (l.name == i.name) {
          w.kv("ifindex", l.ifindex);
          found = true;
        }
      }
      if (!found) {
        w.kv_null("ifindex");
      }
      w.kv("addr4", i.addr4).kv("addr6", i.addr6);
      if (!i.peer_role.empty()) {
        w.kv("peer_ns", ns(i.peer_role)).kv("peer_if", i.peer_name);
      }
      w.end_object();
    }
    w.end_array();
    w.end_object();
  }
  w.end_array();
  w.end_object();
}

std::string GatewayLab::describe() const {
  JsonWriter w;
  describe(w);
  return w.str();
}

}  // namespace rendr::lab
