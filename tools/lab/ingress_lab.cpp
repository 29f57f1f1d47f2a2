// SPDX-License-Identifier: Apache-2.0
#include "ingress_lab.hpp"

#include <cstdlib>
#include <map>

namespace rendr::lab {

namespace {

constexpr const char* kTable = "inet rtdrop";
constexpr const char* kEgressO = "10.90.0.1";  // egress on the o1 link
constexpr const char* kOriginO = "10.90.0.2";  // origin on the o1 link

// in_subnet: |a| is a dotted quad inside 198.18.0.0/24 or 198.19.0.0/24.
bool origin_addr_ok(const std::string& a) {
  if (a.rfind("198.18.0.", 0) != 0 && a.rfind("198.19.0.", 0) != 0) {
    return false;
  }
  const std::string last = a.substr(9);
  char* end = nullptr;
  const long n = std::strtol(last.c_str(), &end, 10);
  return !last.empty() && *end == '\0' && n >= 1 && n <= 254;
}

std::uint64_t packets_in(const std::string& text) {
  const auto at = text.find("packets ");
  return at == std::string::npos ? 0 : std::strtoull(text.c_str() + at + 8, nullptr, 10);
}

}  // namespace

std::string IngressLab::ifname(int i) { return "p" + std::to_string(i); }
std::string IngressLab::app_addr4(int i) { return "10." + std::to_string(87 + i) + ".0.1"; }
std::string IngressLab::egress_addr4(int i) { return "10." + std::to_string(87 + i) + ".0.2"; }

std::vector<std::string> IngressLab::peers() {
  std::vector<std::string> v;
  for (int i = 1; i <= kPaths; ++i) {
    v.push_back(egress_addr4(i) + ":" + std::to_string(kEgressPort));
  }
  return v;
}

int IngressLab::active_path(std::string_view st) {
  const std::string id = json_scalar(st, "active_path");
  const auto paths = st.find("\"paths\":[");
  if (id.empty() || id == "0" || paths == std::string_view::npos) {
    return 0;
  }
  const auto at = st.find("{\"id\":" + id + ",", paths);
  if (at == std::string_view::npos) {
    return 0;
  }
  const std::string_view obj = st.substr(at, st.find('}', at) - at);
  for (int i = 1; i <= kPaths; ++i) {
    // The egress's address is the remote end on the ingress, the local one on the egress.
    if (obj.find("\"" + egress_addr4(i) + ":") != std::string_view::npos) {
      return i;
    }
  }
  return 0;
}

Status IngressLab::run(const std::string& role, const std::string& cmd) const {
  return run_in(ns(role), cmd);
}

Result<UniqueFd> IngressLab::netns_fd(const std::string& role) const {
  return open_netns(ns(role));
}

Result<std::unique_ptr<IngressLab>> IngressLab::create(std::string prefix, IngressLabOptions opt) {
  RENDR_TRY(valid_prefix(prefix));
  for (const auto& a : opt.origin_addrs) {
    if (!origin_addr_ok(a)) {
      return make_error(std::errc::invalid_argument,
                        "lab: origin address '" + a +
                            "' must be an address in 198.18.0.0/24 or 198.19.0.0/24");
    }
  }
  std::unique_ptr<IngressLab> lab(new IngressLab(std::move(prefix), opt.origin_ns));
  lab->teardown();  // leftovers of an earlier run
  // From here on, any early return destroys |lab|, which deletes what was built so far.
  std::vector<std::string> roles = {"app", "egress"};
  if (opt.origin_ns) {
    roles.emplace_back("origin");
  }
  for (const auto& r : roles) {
    RENDR_TRY(netns_add(lab->ns(r)));
  }
  const std::string app = lab->ns("app");
  const std::string egress = lab->ns("egress");
  const std::string origin = lab->ns(lab->origin_role());
  // Few process spawns: they are most of the set-up time (see run_script).
  std::vector<std::string> links;
  for (const auto& r : roles) {
    links.push_back(in_ns(lab->ns(r), "sysctl -qw net.ipv4.conf.all.rp_filter=0 "
                                      "net.ipv4.conf.default.rp_filter=0"));
    links.push_back(in_ns(lab->ns(r), kNoDadSysctl));
  }
  for (int i = 1; i <= kPaths; ++i) {
    links.push_back("ip -n " + app + " link add " + ifname(i) + " type veth peer name " +
                    ifname(i) + " netns " + egress);
  }
  if (opt.origin_ns) {
    links.push_back(in_ns(egress, "sysctl -qw net.ipv4.ip_forward=1"));
    links.push_back("ip -n " + egress + " link add o1 type veth peer name o1 netns " + origin);
    links.push_back(in_ns(egress, "ip link set o1 up"));
    links.push_back(in_ns(origin, "ip link set o1 up"));
  }
  // Links up (carrier on) before addresses; see gateway_lab.cpp.
  for (int i = 1; i <= kPaths; ++i) {
    links.push_back(in_ns(app, "ip link set " + ifname(i) + " up"));
    links.push_back(in_ns(egress, "ip link set " + ifname(i) + " up"));
  }
  RENDR_TRY(run_script("ingress lab " + lab->prefix_ + ": links", links));
  for (const auto& r : roles) {
    RENDR_TRY(wait_links_ready(lab->ns(r)));
  }
  std::map<std::string, std::map<std::string, std::string>> mac;  // role -> ifname -> MAC
  for (const auto& r : roles) {
    auto m = macs(lab->ns(r));
    if (!m) {
      return std::move(m).take_error();
    }
    mac[r] = std::move(*m);
  }
  auto mac_of_if = [&](const std::string& role, const std::string& ifn) -> Result<std::string> {
    auto it = mac[role].find(ifn);
    if (it == mac[role].end()) {
      return make_error(std::errc::io_error, "lab: no MAC for " + ifn + " in " + lab->ns(role));
    }
    return it->second;
  };
  std::vector<std::string> net;
  std::string nft = "table " + std::string(kTable) + " {\n";
  std::string jumps_out;
  std::string jumps_in;
  for (int i = 1; i <= kPaths; ++i) {
    const std::string p = ifname(i);
    net.push_back(in_ns(app, "ip addr add " + app_addr4(i) + "/24 dev " + p));
    net.push_back(in_ns(egress, "ip addr add " + egress_addr4(i) + "/24 dev " + p));
    auto am = mac_of_if("app", p);
    auto em = mac_of_if("egress", p);
    if (!am || !em) {
      return am ? em.error() : am.error();
    }
    for (auto& c : neighbour_pins(app, p, {egress_addr4(i)}, *em)) {
      net.push_back(std::move(c));
    }
    for (auto& c : neighbour_pins(egress, p, {app_addr4(i)}, *am)) {
      net.push_back(std::move(c));
    }
    nft += "  chain " + p + "_out {\n  }\n  chain " + p + "_in {\n  }\n";
    jumps_out += "    jump " + p + "_out\n";
    jumps_in += "    jump " + p + "_in\n";
  }
  nft += "  chain out {\n    type filter hook output priority 0; policy accept;\n" + jumps_out +
         "  }\n  chain in {\n    type filter hook input priority 0; policy accept;\n" + jumps_in +
         "  }\n}\n";
  net.push_back("printf '%s' " + shell_quote(nft) + " | " + in_ns(app, "nft -f -"));
  // The TUN (after wait_links_ready: with no process attached it has no carrier).
  const std::string owner =
      (opt.tun_uid >= 0 ? " user " + std::to_string(opt.tun_uid) : std::string()) +
      (opt.tun_gid >= 0 ? " group " + std::to_string(opt.tun_gid) : std::string());
  net.push_back(in_ns(app, std::string("ip tuntap add dev ") + kTun + " mode tun" + owner));
  net.push_back(in_ns(app, std::string("ip link set ") + kTun + " mtu " +
                               std::to_string(opt.tun_mtu) + " up"));
  net.push_back(in_ns(app, std::string("ip addr add ") + kTunAddr4 + "/32 dev " + kTun));
  net.push_back(in_ns(app, std::string("ip route add ") + kViaRendr4 + " dev " + kTun + " src " +
                               kTunAddr4));
  net.push_back(in_ns(app, std::string("ip route add ") + kRaw4 + " via " + egress_addr4(1) +
                               " dev " + ifname(1)));
  std::vector<std::string> addrs = {kOrigin4, kOriginRaw4};
  addrs.insert(addrs.end(), opt.origin_addrs.begin(), opt.origin_addrs.end());
  for (const auto& a : addrs) {
    net.push_back(in_ns(origin, "ip addr add " + a + "/32 dev lo"));
  }
  if (opt.origin_ns) {
    auto eo = mac_of_if("egress", "o1");
    auto oo = mac_of_if("origin", "o1");
    if (!eo || !oo) {
      return eo ? oo.error() : eo.error();
    }
    net.push_back(in_ns(egress, std::string("ip addr add ") + kEgressO + "/24 dev o1"));
    net.push_back(in_ns(origin, std::string("ip addr add ") + kOriginO + "/24 dev o1"));
    for (auto& c : neighbour_pins(egress, "o1", {kOriginO}, *oo)) {
      net.push_back(std::move(c));
    }
    for (auto& c : neighbour_pins(origin, "o1", {kEgressO}, *eo)) {
      net.push_back(std::move(c));
    }
    net.push_back(in_ns(origin, std::string("ip route add default via ") + kEgressO));
    net.push_back(in_ns(egress, std::string("ip route add ") + kViaRendr4 + " via " + kOriginO));
    net.push_back(in_ns(egress, std::string("ip route add ") + kRaw4 + " via " + kOriginO));
  }
  RENDR_TRY(run_script("ingress lab " + lab->prefix_ + ": addresses, routes, TUN", net));
  // Every path answers, and the raw route reaches the origin (through the egress's forwarding).
  std::string check = "true";
  for (int i = 1; i <= kPaths; ++i) {
    check += std::string(" && ") + kProbePing + " " + egress_addr4(i) + " >/dev/null";
  }
  check += std::string(" && ") + kProbePing + " " + kOriginRaw4 + " >/dev/null";
  RENDR_TRY(lab->run("app", check));
  if (opt.origin_ns) {
    RENDR_TRY(lab->run("egress", std::string(kProbePing) + " " + kOrigin4 + " >/dev/null"));
  }
  return lab;
}

Result<std::unique_ptr<IngressLab>> IngressLab::attach(std::string prefix) {
  RENDR_TRY(valid_prefix(prefix));
  std::unique_ptr<IngressLab> lab(new IngressLab(prefix, netns_exists(prefix + "-origin")));
  lab->owned_ = false;
  for (const char* role : {"app", "egress"}) {
    if (!netns_exists(lab->ns(role))) {
      return make_error(std::errc::no_such_file_or_directory,
                        "lab: no ingress lab with prefix '" + lab->prefix_ + "' (namespace " +
                            lab->ns(role) + " missing)");
    }
  }
  return lab;
}

IngressLab::~IngressLab() {
  if (owned_) {
    teardown();
  }
}

void IngressLab::teardown() {
  for (const char* role : {"app", "egress", "origin"}) {
    netns_del(ns(role));
  }
}

Status IngressLab::drop(int i, bool on) {
  if (i < 1 || i > kPaths) {
    return make_error(std::errc::invalid_argument,
                      "lab: path " + std::to_string(i) + " out of range 1.." +
                          std::to_string(kPaths));
  }
  const std::string chain = std::string(kTable) + " " + ifname(i);
  std::string script = "flush chain " + chain + "_out\nflush chain " + chain + "_in\n";
  if (on) {
    script += "add rule " + chain + "_out ip daddr " + egress_addr4(i) + " counter drop\n";
    script += "add rule " + chain + "_in ip saddr " + egress_addr4(i) + " counter drop\n";
  }
  return run("app", "printf '%s' " + shell_quote(script) + " | nft -f -");
}

Result<DropCounters> IngressLab::drop_counters(int i) const {
  if (i < 1 || i > kPaths) {
    return make_error(std::errc::invalid_argument, "lab: path " + std::to_string(i) +
                                                       " out of range");
  }
  const std::string chain = std::string(kTable) + " " + ifname(i);
  auto out = output_in(ns("app"), "nft list chain " + chain + "_out && echo @@in && nft list "
                                  "chain " + chain + "_in");
  if (!out) {
    return std::move(out).take_error();
  }
  const auto sep = out->find("@@in");
  if (sep == std::string::npos) {
    return make_error(std::errc::io_error, "lab: unexpected nft output: " + *out);
  }
  DropCounters c;
  const std::string o = out->substr(0, sep);
  const std::string in = out->substr(sep);
  c.on = o.find(" drop") != std::string::npos;
  c.out_packets = packets_in(o);
  c.in_packets = packets_in(in);
  return c;
}

void IngressLab::describe(JsonWriter& w) const {
  const bool up = netns_exists(ns("app")) && netns_exists(ns("egress")) &&
                  (!origin_ns_ || netns_exists(ns("origin")));
  w.begin_object();
  w.kv("lab", "ingress").kv("prefix", prefix_).kv("up", up);
  w.begin_object("app")
      .kv("ns", ns("app"))
      .kv("tun", kTun)
      .kv("tun_addr4", kTunAddr4)
      .kv("via_rendr", kViaRendr4)
      .kv("raw", kRaw4)
      .end_object();
  w.begin_object("egress")
      .kv("ns", ns("egress"))
      .kv("listen", "0.0.0.0:" + std::to_string(kEgressPort))
      .end_object();
  w.begin_object("origin")
      .kv("ns", ns(origin_role()))
      .kv("addr4", kOrigin4)
      .kv("raw_addr4", kOriginRaw4);
  if (origin_ns_) {
    w.kv("link_addr4", kOriginO).kv("egress_link_addr4", kEgressO);
  }
  w.end_object();
  w.begin_array("paths");
  for (int i = 1; i <= kPaths; ++i) {
    w.begin_object().kv("index", i).kv("if", ifname(i));
    w.kv("app_addr4", app_addr4(i)).kv("egress_addr4", egress_addr4(i));
    if (auto c = up ? drop_counters(i) : Result<DropCounters>(make_error(std::errc::no_such_file_or_directory, ""))) {
      w.kv("drop", c->on).kv("dropped_out", c->out_packets).kv("dropped_in", c->in_packets);
    } else {
      w.kv_null("drop");
    }
    w.end_object();
  }
  w.end_array();
  std::string peers_arg;
  for (const auto& p : peers()) {
    peers_arg += " --peer " + p;
  }
  w.begin_object("commands")
      .kv("egress", "ip netns exec " + ns("egress") + " rendr-tun egress --listen 0.0.0.0:" +
                        std::to_string(kEgressPort) + " --allow 198.18.0.0/24")
      .kv("ingress", "ip netns exec " + ns("app") + " rendr-tun ingress --tun " + kTun + peers_arg)
      .end_object();
  w.end_object();
}

std::string IngressLab::describe() const {
  JsonWriter w;
  describe(w);
  return w.str();
}

}  // namespace rendr::lab
