// SPDX-License-Identifier: Apache-2.0
#include "multipath_lab.hpp"

#include <fcntl.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

namespace rendr::lab {

namespace {

constexpr const char* kTable = "inet rendr_lab";

std::string lower(std::string_view s) {
  std::string o(s);
  std::transform(o.begin(), o.end(), o.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return o;
}

// roles_of lists the namespaces that act as the sending side for |dir|.
std::vector<std::string> roles_of(Dir dir) {
  switch (dir) {
    case Dir::client_to_server: return {"client"};
    case Dir::server_to_client: return {"server"};
    case Dir::both: break;
  }
  return {"client", "server"};
}

// count_after sums every "<word> N" in |text|.
std::uint64_t sum_after(const std::string& text, const std::string& word) {
  std::uint64_t total = 0;
  std::size_t pos = 0;
  while ((pos = text.find(word, pos)) != std::string::npos) {
    pos += word.size();
    total += std::strtoull(text.c_str() + pos, nullptr, 10);
  }
  return total;
}

}  // namespace

Result<std::uint64_t> parse_rate(std::string_view text) {
  std::string t = lower(text);
  std::size_t i = 0;
  while (i < t.size() && (std::isdigit(static_cast<unsigned char>(t[i])) != 0 || t[i] == '.')) {
    ++i;
  }
  std::string num = t.substr(0, i);
  std::string unit = t.substr(i);
  auto bad = [&] {
    return make_error(std::errc::invalid_argument,
                      "rate '" + std::string(text) +
                          "': expected a number with bit/kbit/mbit/gbit (bits/s) or "
                          "bps/kbps/mbps/gbps (bytes/s), e.g. 100mbit");
  };
  if (num.empty() || std::count(num.begin(), num.end(), '.') > 1) {
    return bad();
  }
  double v = std::strtod(num.c_str(), nullptr);
  double mult = 0;
  if (unit.empty() || unit == "bit") {
    mult = 1;
  } else if (unit == "kbit") {
    mult = 1e3;
  } else if (unit == "mbit") {
    mult = 1e6;
  } else if (unit == "gbit") {
    mult = 1e9;
  } else if (unit == "bps") {
    mult = 8;
  } else if (unit == "kbps") {
    mult = 8e3;
  } else if (unit == "mbps") {
    mult = 8e6;
  } else if (unit == "gbps") {
    mult = 8e9;
  } else {
    return bad();
  }
  double bits = v * mult;
  if (!(bits >= 1) || bits > 1e12) {
    return make_error(std::errc::invalid_argument,
                      "rate '" + std::string(text) + "' out of range (1bit..1000gbit)");
  }
  return static_cast<std::uint64_t>(std::llround(bits));
}

std::string format_rate(std::uint64_t bps) {
  if (bps != 0 && bps % 1000000000 == 0) {
    return std::to_string(bps / 1000000000) + "gbit";
  }
  if (bps != 0 && bps % 1000000 == 0) {
    return std::to_string(bps / 1000000) + "mbit";
  }
  if (bps != 0 && bps % 1000 == 0) {
    return std::to_string(bps / 1000) + "kbit";
  }
  return std::to_string(bps) + "bit";
}

std::string MultipathLab::ifname(int i) { return "p" + std::to_string(i); }
std::string MultipathLab::client_addr4(int i) { return "10.10." + std::to_string(i) + ".1"; }
std::string MultipathLab::server_addr4(int i) { return "10.10." + std::to_string(i) + ".2"; }
std::string MultipathLab::client_addr6(int i) { return "fd10:" + std::to_string(i) + "::1"; }
std::string MultipathLab::server_addr6(int i) { return "fd10:" + std::to_string(i) + "::2"; }

Status MultipathLab::run(const std::string& role, const std::string& cmd) const {
  return run_in(ns(role), cmd);
}

Result<UniqueFd> MultipathLab::netns_fd(const std::string& role) const {
  return open_netns(ns(role));
}

Result<std::unique_ptr<MultipathLab>> MultipathLab::create(std::string prefix,
                                                           MultipathOptions opt) {
  RENDR_TRY(valid_prefix(prefix));
  if (opt.paths < kMinPaths || opt.paths > kMaxPaths) {
    return make_error(std::errc::invalid_argument,
                      "lab: multipath needs " + std::to_string(kMinPaths) + ".." +
                          std::to_string(kMaxPaths) + " paths, not " + std::to_string(opt.paths));
  }
  std::unique_ptr<MultipathLab> lab(new MultipathLab(std::move(prefix), opt.paths));
  lab->teardown();  // leftovers of an earlier run
  // From here on, any early return destroys |lab|, which deletes what was built so far.
  std::string nft = "table " + std::string(kTable) + " {\n";
  std::string jumps;
  // Few process spawns: they are most of the set-up time (see run_script).
  for (const char* role : {"client", "server"}) {
    RENDR_TRY(netns_add(lab->ns(role)));
  }
  std::vector<std::string> links;
  for (const char* role : {"client", "server"}) {
    links.push_back(in_ns(lab->ns(role), "sysctl -qw net.ipv4.conf.all.rp_filter=0 "
                                         "net.ipv4.conf.default.rp_filter=0"));
    links.push_back(in_ns(lab->ns(role), kNoDadSysctl));
  }
  std::vector<std::string> net;
  for (int i = 1; i <= opt.paths; ++i) {
    const std::string p = ifname(i);
    links.push_back("ip -n " + lab->client_ns() + " link add " + p + " type veth peer name " + p +
                    " netns " + lab->server_ns());
    net.push_back(in_ns(lab->client_ns(), "ip addr add " + client_addr4(i) + "/24 dev " + p));
    net.push_back(in_ns(lab->client_ns(), "ip -6 addr add " + client_addr6(i) + "/64 dev " + p +
                                              " nodad"));
    net.push_back(in_ns(lab->server_ns(), "ip addr add " + server_addr4(i) + "/24 dev " + p));
    net.push_back(in_ns(lab->server_ns(), "ip -6 addr add " + server_addr6(i) + "/64 dev " + p +
                                              " nodad"));
    nft += "  chain " + p + "_drop {\n  }\n  chain " + p + "_loss {\n  }\n";
    jumps += "    oifname \"" + p + "\" jump " + p + "_drop\n    oifname \"" + p + "\" jump " + p +
             "_loss\n";
  }
  // Links up (carrier on) before addresses; see gateway_lab.cpp (IPv6 neighbour resolution).
  for (int i = 1; i <= opt.paths; ++i) {
    links.push_back(in_ns(lab->client_ns(), "ip link set " + ifname(i) + " up"));
    links.push_back(in_ns(lab->server_ns(), "ip link set " + ifname(i) + " up"));
  }
  nft += "  chain output {\n    type filter hook output priority 0; policy accept;\n" + jumps +
         "  }\n}\n";
  RENDR_TRY(run_script("multipath lab " + lab->prefix_ + ": links", links));
  RENDR_TRY(wait_links_ready(lab->client_ns()));
  RENDR_TRY(wait_links_ready(lab->server_ns()));
  auto cmacs = macs(lab->client_ns());
  auto smacs = macs(lab->server_ns());
  if (!cmacs || !smacs) {
    return (cmacs ? smacs.error() : cmacs.error());
  }
  for (int i = 1; i <= opt.paths; ++i) {
    auto cm = cmacs->find(ifname(i));
    auto sm = smacs->find(ifname(i));
    if (cm == cmacs->end() || sm == smacs->end()) {
      return make_error(std::errc::io_error, "lab: no MAC for " + ifname(i));
    }
    auto a = neighbour_pins(lab->client_ns(), ifname(i), {server_addr4(i), server_addr6(i)},
                            sm->second);
    auto b = neighbour_pins(lab->server_ns(), ifname(i), {client_addr4(i), client_addr6(i)},
                            cm->second);
    net.insert(net.end(), a.begin(), a.end());
    net.insert(net.end(), b.begin(), b.end());
  }
  for (const char* role : {"client", "server"}) {
    net.push_back("printf '%s' " + shell_quote(nft) + " | " + in_ns(lab->ns(role), "nft -f -"));
  }
  RENDR_TRY(run_script("multipath lab " + lab->prefix_ + ": addresses and filters", net));
  std::string check = "true";
  for (int i = 1; i <= opt.paths; ++i) {
    check += std::string(" && ") + kProbePing + " " + server_addr4(i) + " >/dev/null && " +
             kProbePing + " -6 " +
             server_addr6(i) + " >/dev/null";
  }
  RENDR_TRY(lab->run("client", check));
  if (opt.rate_bps != 0) {
    for (int i = 1; i <= opt.paths; ++i) {
      RENDR_TRY(lab->rate(i, opt.rate_bps));
    }
  }
  return lab;
}

Result<std::unique_ptr<MultipathLab>> MultipathLab::attach(std::string prefix) {
  RENDR_TRY(valid_prefix(prefix));
  std::unique_ptr<MultipathLab> lab(new MultipathLab(std::move(prefix), 0));
  lab->owned_ = false;
  for (const char* role : {"client", "server"}) {
    if (!netns_exists(lab->ns(role))) {
      return make_error(std::errc::no_such_file_or_directory,
                        "lab: no multipath lab with prefix '" + lab->prefix_ + "' (namespace " +
                            lab->ns(role) + " missing)");
    }
  }
  auto ls = links(lab->client_ns());
  if (!ls) {
    return std::move(ls).take_error();
  }
  for (int i = 1; i <= kMaxPaths; ++i) {
    bool found = std::any_of(ls->begin(), ls->end(), [&](const Link& l) { return l.name == ifname(i); });
    if (!found) {
      break;
    }
    lab->paths_ = i;
  }
  return lab;
}

MultipathLab::~MultipathLab() {
  if (owned_) {
    teardown();
  }
}

void MultipathLab::teardown() {
  netns_del(client_ns());
  netns_del(server_ns());
}

Status MultipathLab::check_path(int i) const {
  if (i < 1 || i > paths_) {
    return make_error(std::errc::invalid_argument,
                      "lab: path " + std::to_string(i) + " out of range 1.." +
                          std::to_string(paths_));
  }
  return {};
}

Status MultipathLab::set_chain(int i, const std::string& kind, const std::string& rule, Dir dir) {
  RENDR_TRY(check_path(i));
  const std::string chain = std::string(kTable) + " " + ifname(i) + "_" + kind;
  std::string script = "flush chain " + chain + "\n";
  if (!rule.empty()) {
    script += "add rule " + chain + " " + rule + "\n";
  }
  for (const auto& role : roles_of(dir)) {
    RENDR_TRY(run(role, "printf '%s' " + shell_quote(script) + " | nft -f -"));
  }
  return {};
}

Status MultipathLab::drop(int i, bool on, Dir dir) {
  return set_chain(i, "drop", on ? "counter drop" : "", dir);
}

Status MultipathLab::loss(int i, int percent, Dir dir) {
  if (percent < 0 || percent > 100) {
    return make_error(std::errc::invalid_argument,
                      "lab: loss " + std::to_string(percent) + "% out of range 0..100");
  }
  // nft's "numgen random mod 100" yields 0..99, so "< 100" does not parse: 100 % is "<= 99".
  std::string rule;
  if (percent == 100) {
    rule = "numgen random mod 100 <= 99 counter drop";
  } else if (percent > 0) {
    rule = "numgen random mod 100 < " + std::to_string(percent) + " counter drop";
  }
  return set_chain(i, "loss", rule, dir);
}

Status MultipathLab::rate(int i, std::uint64_t bps, Dir dir) {
  RENDR_TRY(check_path(i));
  std::string cmd;
  if (bps == 0) {
    cmd = "tc qdisc del dev " + ifname(i) + " root 2>/dev/null || true";
  } else {
    // Burst: 10 ms worth of bytes, at least 16 KiB (a few MTUs, so GSO segments pass without
    // tbf having to split them into tiny bursts); the queue holds up to 50 ms.
    std::uint64_t burst = std::max<std::uint64_t>(bps / 8 / 100, 16384);
    cmd = "tc qdisc replace dev " + ifname(i) + " root tbf rate " + std::to_string(bps) +
          "bit burst " + std::to_string(burst) + " latency 50ms";
  }
  for (const auto& role : roles_of(dir)) {
    RENDR_TRY(run(role, cmd));
  }
  return {};
}

Status MultipathLab::clear(int i) {
  RENDR_TRY(drop(i, false));
  RENDR_TRY(loss(i, 0));
  return rate(i, 0);
}

Result<PathState> MultipathLab::state(int i) const {
  RENDR_TRY(check_path(i));
  PathState st;
  for (const char* role : {"client", "server"}) {
    PathDirState& d = std::string(role) == "client" ? st.client_to_server : st.server_to_client;
    const std::string p = ifname(i);
    auto out = output_in(ns(role), "nft list chain " + std::string(kTable) + " " + p +
                                       "_drop && echo '@@loss' && nft list chain " +
                                       std::string(kTable) + " " + p +
                                       "_loss && echo '@@tc' && tc qdisc show dev " + p);
    if (!out) {
      return std::move(out).take_error();
    }
    const std::string& o = *out;
    auto lp = o.find("@@loss");
    auto tp = o.find("@@tc");
    if (lp == std::string::npos || tp == std::string::npos) {
      return make_error(std::errc::io_error, "lab: unexpected nft/tc output: " + o);
    }
    std::string drop_part = o.substr(0, lp);
    std::string loss_part = o.substr(lp, tp - lp);
    std::string tc_part = o.substr(tp);
    d.drop = drop_part.find(" drop") != std::string::npos;
    if (auto m = loss_part.find("mod 100 < "); m != std::string::npos) {
      d.loss_percent = std::atoi(loss_part.c_str() + m + 10);
    } else if (loss_part.find("mod 100 <= 99 ") != std::string::npos) {
      d.loss_percent = 100;
    }
    d.dropped_packets = sum_after(drop_part, "packets ") + sum_after(loss_part, "packets ");
    if (auto t = tc_part.find("qdisc tbf"); t != std::string::npos) {
      if (auto r = tc_part.find(" rate ", t); r != std::string::npos) {
        auto end = tc_part.find(' ', r + 6);
        auto parsed = parse_rate(tc_part.substr(r + 6, end - (r + 6)));
        if (parsed) {
          d.rate_bps = *parsed;
        }
      }
    }
  }
  return st;
}

Result<std::uint64_t> MultipathLab::dropped(int i) const {
  auto st = state(i);
  if (!st) {
    return std::move(st).take_error();
  }
  return st->client_to_server.dropped_packets + st->server_to_client.dropped_packets;
}

void MultipathLab::describe(JsonWriter& w) const {
  bool up = netns_exists(client_ns()) && netns_exists(server_ns());
  w.begin_object();
  w.kv("lab", "multipath").kv("prefix", prefix_).kv("up", up).kv("path_count", paths_);
  w.begin_object("client").kv("ns", client_ns()).end_object();
  w.begin_object("server").kv("ns", server_ns()).end_object();
  std::vector<Link> cl;
  std::vector<Link> sl;
  if (up) {
    if (auto r = links(client_ns())) {
      cl = std::move(*r);
    }
    if (auto r = links(server_ns())) {
      sl = std::move(*r);
    }
  }
  auto index_of = [](const std::vector<Link>& ls, const std::string& name) -> int {
    for (const auto& l : ls) {
      if (l.name == name) {
        return l.ifindex;
      }
    }
    return 0;
  };
  auto dir_json = [&](std::string_view key, const PathDirState& d) {
    w.begin_object(key)
        .kv("drop", d.drop)
        .kv("loss_percent", d.loss_percent)
        .kv("rate_bps", d.rate_bps)
        .kv("dropped_packets", d.dropped_packets)
        .end_object();
  };
  w.begin_array("paths");
  for (int i = 1; i <= paths_; ++i) {
    w.begin_object().kv("index", i);
    w.begin_object("client").kv("ns", client_ns()).kv("if", ifname(i));
    if (int x = index_of(cl, ifname(i)); x != 0) {
      w.kv("ifindex", x);
    } else {
      w.kv_null("ifindex");
    }
    w.kv("addr4", client_addr4(i)).kv("addr6", client_addr6(i)).end_object();
    w.begin_object("server").kv("ns", server_ns()).kv("if", ifname(i));
    if (int x = index_of(sl, ifname(i)); x != 0) {
      w.kv("ifindex", x);
    } else {
      w.kv_null("ifindex");
    }
    w.kv("addr4", server_addr4(i)).kv("addr6", server_addr6(i)).end_object();
    w.kv("prefix4", 24).kv("prefix6", 64);
    if (auto st = up ? state(i) : Result<PathState>(make_error(std::errc::no_such_file_or_directory, ""))) {
      w.begin_object("impair");
      dir_json("client_to_server", st->client_to_server);
      dir_json("server_to_client", st->server_to_client);
      w.end_object();
    } else {
      w.kv_null("impair");
    }
    w.end_object();
  }
  w.end_array();
  w.end_object();
}

std::string MultipathLab::describe() const {
  JsonWriter w;
  describe(w);
  return w.str();
}

}  // namespace rendr::lab
