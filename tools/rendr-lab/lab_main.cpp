// SPDX-License-Identifier: Apache-2.0
// rendr-lab — create, inspect, impair and tear down rendr's test topologies (network namespaces
// + veth on this machine, addresses only inside them). See docs/lab.md.
//
//   rendr-lab up gateway   [--prefix P] [--json] [--userstack a|b|a,b [--tun-user U[:G]]]
//   rendr-lab up multipath [--prefix P] [--paths N] [--rate R] [--json]
//   rendr-lab up ingress   [--prefix P] [--json] [--tun-user U[:G]]
//   rendr-lab status       [--prefix P] [--json]
//   rendr-lab impair       [--prefix P] --path I|all [--dir D] (--drop|--undrop|--loss N|--rate R|
//                          --clear) ...
//   rendr-lab down         [--prefix P]
//
// `up` either leaves a complete lab behind or nothing (a failure or a SIGINT/SIGTERM/SIGHUP during
// `up` removes what was built). Exit codes: 0 ok, 1 failure, 2 usage error, 3 not root.
#include "lab/gateway_lab.hpp"
#include "lab/ingress_lab.hpp"
#include "lab/lab_util.hpp"
#include "lab/multipath_lab.hpp"

#include <rendr/common/json.hpp>

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

using namespace rendr;

namespace {

constexpr const char* kUsage =
    "usage: rendr-lab <command> [options]\n"
    "\n"
    "Builds rendr's test topologies out of network namespaces and veth pairs on this machine.\n"
    "Only addresses inside the lab's own namespaces are used; nothing leaves the machine.\n"
    "Needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN). See docs/lab.md.\n"
    "\n"
    "commands:\n"
    "  up gateway    peer -- gw -- {a, b}; VIP 10.99.0.1 / fd99::1 on a and b (lo), gw routes\n"
    "                the VIP to a. Namespaces <P>-peer, <P>-gw, <P>-a, <P>-b.\n"
    "  up multipath  client and server joined by N veth pairs; path i: p<i> with\n"
    "                10.10.<i>.1 / fd10:<i>::1 (client) and 10.10.<i>.2 / fd10:<i>::2 (server).\n"
    "                Namespaces <P>-client, <P>-server.\n"
    "  up ingress    rendr-tun's lab: app (TUN rtun0, 198.18.0.0/24 routed into it) joined to\n"
    "                egress by two paths p1 10.88.0.1<->.2, p2 10.89.0.1<->.2; origin behind\n"
    "                egress with 198.18.0.10 (reached through rendr-tun) and 198.19.0.10\n"
    "                (routed over p1, no rendr). Namespaces <P>-app, <P>-egress, <P>-origin.\n"
    "                Starts no process: prints the rendr-tun commands (docs/tun-ingress.md).\n"
    "  status        print the labs that exist under the prefix (with --json: one JSON object)\n"
    "  impair        change a multipath path: silent drop, random loss (nftables), rate (tbf);\n"
    "                ingress lab: --drop / --undrop of a path only\n"
    "  down          delete every lab namespace of the prefix (gateway, multipath, ingress)\n"
    "\n"
    "options:\n"
    "  --prefix P    namespace name prefix (default \"rlab\"; [A-Za-z0-9_.-], <= 32 chars)\n"
    "  --json        print the lab description as one JSON object on stdout\n"
    "  --force       up: replace an existing lab with the same prefix instead of refusing\n"
    "  --userstack H up gateway: provision host H (a, b or a,b) for the userstack method, the\n"
    "                one-time root step: TUN device rtun0, the VIP routed into it instead of lo\n"
    "                (docs/userstack.md)\n"
    "  --tun-user U[:G]  with --userstack or up ingress: rtun0 is owned by uid U (and gid G),\n"
    "                so rendr-agent --method userstack / rendr-tun ingress runs as that user\n"
    "                with no capabilities; without it the device is root's\n"
    "  --paths N     up multipath: number of paths, 2..8 (default 2)\n"
    "  --rate R      up multipath: tbf rate on every path and direction (e.g. 100mbit, 1gbit);\n"
    "                impair: rate for the chosen path(s), 0 removes it\n"
    "\n"
    "impair options (multipath lab; applied in order, several may be combined):\n"
    "  --path I|all  path number (1..N) or all paths (required)\n"
    "  --dir D       both (default), c2s (client->server) or s2c (server->client)\n"
    "  --drop        silently drop every packet on the path (nftables DROP, no ICMP/RST)\n"
    "  --undrop      remove the silent drop\n"
    "  --loss N      drop N % of packets at random (numgen random mod 100 < N); 0 removes\n"
    "  --rate R      limit the path with tbf; 0 removes\n"
    "  --clear       remove every impairment of the path (both directions), reset counters\n"
    "\n"
    "exit status: 0 ok, 1 failure, 2 usage error, 3 not root.\n"
    "Delay: this kernel has no netem; use rendr-impair (a user-space delay relay).\n";

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "rendr-lab: %s\n(rendr-lab --help for usage)\n", msg.c_str());
  return 2;
}

int fail(const Error& e) {
  std::fprintf(stderr, "rendr-lab: %s\n", e.message().c_str());
  return e.code == std::make_error_code(std::errc::operation_not_permitted) ? 3 : 1;
}

bool require_root() {
  if (::geteuid() != 0) {
    std::fprintf(stderr,
                 "rendr-lab: must run as root (creating network namespaces needs CAP_SYS_ADMIN "
                 "and CAP_NET_ADMIN); try: sudo rendr-lab ...\n");
    return false;
  }
  return true;
}

struct Args {
  std::vector<std::string> pos;
  std::string prefix = "rlab";
  bool json = false;
  bool force = false;
  int paths = 2;
  std::optional<std::string> rate;
  // impair steps in command-line order: {"drop"}, {"loss", "10"}, ...
  std::vector<std::pair<std::string, std::string>> steps;
  std::optional<std::string> path;
  lab::Dir dir = lab::Dir::both;
  std::vector<lab::Host> userstack;  // up gateway --userstack
  int tun_uid = -1;
  int tun_gid = -1;
};

// Blocks SIGINT/SIGTERM/SIGHUP for the lifetime of the object, so `up` cannot be interrupted
// half way; interrupted() tells whether one arrived meanwhile (the caller then tears down).
class SignalGuard {
 public:
  SignalGuard() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGHUP);
    ::sigprocmask(SIG_BLOCK, &set_, &old_);
  }
  ~SignalGuard() {
    // Consume what is pending so unblocking does not kill us after we already handled it.
    timespec zero{};
    while (::sigtimedwait(&set_, nullptr, &zero) > 0) {
    }
    ::sigprocmask(SIG_SETMASK, &old_, nullptr);
  }
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;
  [[nodiscard]] bool interrupted() const {
    sigset_t pending;
    sigemptyset(&pending);
    ::sigpending(&pending);
    return sigismember(&pending, SIGINT) == 1 || sigismember(&pending, SIGTERM) == 1 ||
           sigismember(&pending, SIGHUP) == 1;
  }

 private:
  sigset_t set_{};
  sigset_t old_{};
};

void print_summary_gateway(const lab::GatewayLab& g) {
  std::printf("gateway lab '%s' up:\n", g.prefix().c_str());
  std::printf("  %-14s eth0 %s %s  (default via gw)\n", g.ns("peer").c_str(),
              lab::GatewayLab::kPeer4, lab::GatewayLab::kPeer6);
  std::printf("  %-14s vpeer %s, va %s, vb %s (forwarding on)\n", g.ns("gw").c_str(),
              lab::GatewayLab::kGwPeer4, lab::GatewayLab::gw_addr4(lab::Host::a).c_str(),
              lab::GatewayLab::gw_addr4(lab::Host::b).c_str());
  for (lab::Host h : {lab::Host::a, lab::Host::b}) {
    std::printf("  %-14s eth0 %s %s, VIP %s %s on lo\n", g.host_ns(h).c_str(),
                lab::GatewayLab::host_addr4(h).c_str(), lab::GatewayLab::host_addr6(h).c_str(),
                lab::GatewayLab::kVip4, lab::GatewayLab::kVip6);
  }
  auto owner = g.vip_owner();
  std::printf("  VIP routed by gw to: %s\n",
              owner ? (*owner == lab::Host::a ? "a" : "b") : "(none)");
}

void print_summary_ingress(const lab::IngressLab& l) {
  std::printf("ingress lab '%s':\n", l.prefix().c_str());
  std::printf("  %-14s TUN %s %s/32, %s routed into it; %s via p1 (no rendr)\n",
              l.ns("app").c_str(), lab::IngressLab::kTun, lab::IngressLab::kTunAddr4,
              lab::IngressLab::kViaRendr4, lab::IngressLab::kRaw4);
  for (int i = 1; i <= lab::IngressLab::kPaths; ++i) {
    std::string state;
    if (auto c = l.drop_counters(i)) {
      state = c->on ? "  DROPPED (" + std::to_string(c->out_packets + c->in_packets) + " packets)"
                    : "";
    }
    std::printf("  path %d  %s  %s <-> %s%s\n", i, lab::IngressLab::ifname(i).c_str(),
                lab::IngressLab::app_addr4(i).c_str(), lab::IngressLab::egress_addr4(i).c_str(),
                state.c_str());
  }
  std::printf("  %-14s origin %s and %s on lo%s\n", l.ns(l.origin_role()).c_str(),
              lab::IngressLab::kOrigin4, lab::IngressLab::kOriginRaw4,
              l.has_origin_ns() ? " (default route via egress)" : "");
  std::printf("  start rendr-tun:\n    ip netns exec %s rendr-tun egress --listen 0.0.0.0:%d "
              "--allow 198.18.0.0/24\n    ip netns exec %s rendr-tun ingress --tun %s",
              l.ns("egress").c_str(), lab::IngressLab::kEgressPort, l.ns("app").c_str(),
              lab::IngressLab::kTun);
  for (const auto& p : lab::IngressLab::peers()) {
    std::printf(" --peer %s", p.c_str());
  }
  std::printf("\n");
}

void print_summary_multipath(const lab::MultipathLab& m) {
  std::printf("multipath lab '%s': %s <-> %s, %d paths\n", m.prefix().c_str(),
              m.client_ns().c_str(), m.server_ns().c_str(), m.paths());
  for (int i = 1; i <= m.paths(); ++i) {
    std::string extra;
    if (auto st = m.state(i)) {
      for (int d = 0; d < 2; ++d) {
        const lab::PathDirState& s = d == 0 ? st->client_to_server : st->server_to_client;
        std::string what;
        if (s.drop) {
          what += " drop";
        }
        if (s.loss_percent != 0) {
          what += " loss=" + std::to_string(s.loss_percent) + "%";
        }
        if (s.rate_bps != 0) {
          what += " rate=" + lab::format_rate(s.rate_bps);
        }
        if (!what.empty() || s.dropped_packets != 0) {
          extra += std::string(d == 0 ? "  c2s:" : "  s2c:") + what +
                   " dropped=" + std::to_string(s.dropped_packets);
        }
      }
    }
    std::printf("  path %d  %s  %s/%s <-> %s/%s%s\n", i, lab::MultipathLab::ifname(i).c_str(),
                lab::MultipathLab::client_addr4(i).c_str(),
                lab::MultipathLab::client_addr6(i).c_str(),
                lab::MultipathLab::server_addr4(i).c_str(),
                lab::MultipathLab::server_addr6(i).c_str(), extra.c_str());
  }
}

int cmd_up(const Args& a) {
  if (a.pos.size() != 2 ||
      (a.pos[1] != "gateway" && a.pos[1] != "multipath" && a.pos[1] != "ingress")) {
    return usage_error("up needs a topology: gateway, multipath or ingress");
  }
  const bool gateway = a.pos[1] == "gateway";
  const bool ingress = a.pos[1] == "ingress";
  if (!a.steps.empty() || a.path) {
    return usage_error("impair options are not valid with up");
  }
  if ((gateway || ingress) && (a.rate || a.paths != 2)) {
    return usage_error("--paths/--rate apply to the multipath lab only");
  }
  if (!gateway && !a.userstack.empty()) {
    return usage_error("--userstack applies to the gateway lab only");
  }
  if (a.userstack.empty() && a.tun_uid >= 0 && !ingress) {
    return usage_error("--tun-user needs --userstack H (or up ingress)");
  }
  if (auto v = lab::valid_prefix(a.prefix); !v) {
    return usage_error(v.error().context);
  }
  if (!require_root()) {
    return 3;
  }
  // Refuse to rebuild a lab someone may be using, unless told to.
  const std::vector<std::string> mine =
      gateway   ? std::vector<std::string>{"peer", "gw", "a", "b"}
      : ingress ? std::vector<std::string>{"app", "egress", "origin"}
                : std::vector<std::string>{"client", "server"};
  for (const auto& r : mine) {
    if (lab::netns_exists(a.prefix + "-" + r) && !a.force) {
      std::fprintf(stderr,
                   "rendr-lab: namespace %s-%s already exists: a %s lab with prefix '%s' is up "
                   "(rendr-lab down --prefix %s, or up --force to rebuild it)\n",
                   a.prefix.c_str(), r.c_str(), a.pos[1].c_str(), a.prefix.c_str(),
                   a.prefix.c_str());
      return 1;
    }
  }
  std::uint64_t rate = 0;
  if (a.rate) {
    auto r = lab::parse_rate(*a.rate);
    if (!r) {
      return usage_error(r.error().context);
    }
    rate = *r;
  }
  SignalGuard guard;
  JsonWriter w;
  if (ingress) {
    lab::IngressLabOptions opt;
    opt.tun_uid = a.tun_uid;
    opt.tun_gid = a.tun_gid;
    auto l = lab::IngressLab::create(a.prefix, opt);
    if (!l) {
      return fail(l.error());
    }
    if (guard.interrupted()) {
      std::fprintf(stderr, "rendr-lab: interrupted; lab removed\n");
      return 130;
    }
    (*l)->keep();
    if (a.json) {
      (*l)->describe(w);
    } else {
      print_summary_ingress(**l);
    }
  } else if (gateway) {
    auto g = lab::GatewayLab::create(a.prefix);
    if (!g) {
      return fail(g.error());
    }
    if (guard.interrupted()) {
      std::fprintf(stderr, "rendr-lab: interrupted; lab removed\n");
      return 130;  // |g| tears the lab down
    }
    for (lab::Host h : a.userstack) {
      if (auto st = (*g)->use_userstack(h, "rtun0", a.tun_uid, a.tun_gid); !st) {
        return fail(st.error());  // |g| tears the lab down
      }
    }
    (*g)->keep();
    if (a.json) {
      (*g)->describe(w);
    } else {
      print_summary_gateway(**g);
      for (lab::Host h : a.userstack) {
        std::printf("  %-14s userstack: VIP routed into TUN rtun0 (not on lo), owner %s\n",
                    (*g)->host_ns(h).c_str(),
                    a.tun_uid >= 0 ? ("uid " + std::to_string(a.tun_uid)).c_str() : "root");
      }
    }
  } else {
    lab::MultipathOptions opt;
    opt.paths = a.paths;
    opt.rate_bps = rate;
    auto m = lab::MultipathLab::create(a.prefix, opt);
    if (!m) {
      return fail(m.error());
    }
    if (guard.interrupted()) {
      std::fprintf(stderr, "rendr-lab: interrupted; lab removed\n");
      return 130;
    }
    (*m)->keep();
    if (a.json) {
      (*m)->describe(w);
    } else {
      print_summary_multipath(**m);
    }
  }
  if (a.json) {
    std::printf("%s\n", w.str().c_str());
  }
  return 0;
}

int cmd_down(const Args& a) {
  if (a.pos.size() != 1) {
    return usage_error("down takes no topology (it removes every lab of the prefix)");
  }
  if (auto v = lab::valid_prefix(a.prefix); !v) {
    return usage_error(v.error().context);
  }
  if (!require_root()) {
    return 3;
  }
  auto before = lab::existing_lab_namespaces(a.prefix);
  auto removed = lab::remove_lab(a.prefix);
  auto left = lab::existing_lab_namespaces(a.prefix);
  if (a.json) {
    JsonWriter w;
    w.begin_object().kv("prefix", a.prefix).begin_array("removed");
    for (const auto& n : removed) {
      w.value(n);
    }
    w.end_array().begin_array("left");
    for (const auto& n : left) {
      w.value(n);
    }
    w.end_array().end_object();
    std::printf("%s\n", w.str().c_str());
  } else if (before.empty()) {
    std::printf("no lab with prefix '%s'\n", a.prefix.c_str());
  } else {
    for (const auto& n : removed) {
      std::printf("removed %s\n", n.c_str());
    }
  }
  if (!left.empty()) {
    std::fprintf(stderr, "rendr-lab: could not remove %zu namespace(s), e.g. %s\n", left.size(),
                 left.front().c_str());
    return 1;
  }
  return 0;
}

int cmd_status(const Args& a) {
  if (a.pos.size() != 1) {
    return usage_error("status takes no topology");
  }
  if (auto v = lab::valid_prefix(a.prefix); !v) {
    return usage_error(v.error().context);
  }
  // Reading namespaces works unprivileged, but nft/tc inside them need root.
  if (!require_root()) {
    return 3;
  }
  auto g = lab::GatewayLab::attach(a.prefix);
  auto m = lab::MultipathLab::attach(a.prefix);
  auto in = lab::IngressLab::attach(a.prefix);
  auto present = lab::existing_lab_namespaces(a.prefix);
  if (a.json) {
    JsonWriter w;
    w.begin_object().kv("prefix", a.prefix).begin_array("namespaces");
    for (const auto& n : present) {
      w.value(n);
    }
    w.end_array();
    if (g) {
      w.raw("gateway", (*g)->describe());
    } else {
      w.kv_null("gateway");
    }
    if (m) {
      w.raw("multipath", (*m)->describe());
    } else {
      w.kv_null("multipath");
    }
    if (in) {
      w.raw("ingress", (*in)->describe());
    } else {
      w.kv_null("ingress");
    }
    w.end_object();
    std::printf("%s\n", w.str().c_str());
  } else {
    if (present.empty()) {
      std::printf("no lab with prefix '%s'\n", a.prefix.c_str());
    }
    if (g) {
      print_summary_gateway(**g);
    }
    if (m) {
      print_summary_multipath(**m);
    }
    if (in) {
      print_summary_ingress(**in);
    }
    if (!present.empty() && !g && !m && !in) {
      std::printf("incomplete lab with prefix '%s' (namespaces:", a.prefix.c_str());
      for (const auto& n : present) {
        std::printf(" %s", n.c_str());
      }
      std::printf("); rendr-lab down --prefix %s removes it\n", a.prefix.c_str());
    }
  }
  // Exit 0 if a complete lab exists, 1 otherwise (scripts can test for it).
  return (g || m || in) ? 0 : 1;
}

// impair_ingress: the ingress lab's paths only know a silent drop (IngressLab::drop).
int impair_ingress(const Args& a, lab::IngressLab& l) {
  std::vector<int> paths;
  if (*a.path == "all") {
    for (int i = 1; i <= lab::IngressLab::kPaths; ++i) {
      paths.push_back(i);
    }
  } else if (*a.path == "1" || *a.path == "2") {
    paths.push_back(std::atoi(a.path->c_str()));
  } else {
    return usage_error("--path must be 1..2 or all in the ingress lab, not '" + *a.path + "'");
  }
  if (a.dir != lab::Dir::both) {
    return usage_error("the ingress lab drops a path both ways only (no --dir)");
  }
  for (const auto& [what, arg] : a.steps) {
    if (what != "drop" && what != "undrop" && what != "clear") {
      return usage_error("the ingress lab's paths take --drop, --undrop or --clear only");
    }
  }
  for (int p : paths) {
    for (const auto& [what, arg] : a.steps) {
      if (auto s = l.drop(p, what == "drop"); !s) {
        return fail(s.error());
      }
    }
  }
  if (a.json) {
    std::printf("%s\n", l.describe().c_str());
  } else {
    print_summary_ingress(l);
  }
  return 0;
}

int cmd_impair(const Args& a) {
  if (a.pos.size() != 1) {
    return usage_error("impair takes no positional argument");
  }
  if (!a.path) {
    return usage_error("impair needs --path I|all");
  }
  if (a.steps.empty()) {
    return usage_error("impair needs at least one of --drop, --undrop, --loss N, --rate R, --clear");
  }
  if (auto v = lab::valid_prefix(a.prefix); !v) {
    return usage_error(v.error().context);
  }
  // Validate the steps before touching anything.
  for (const auto& [what, arg] : a.steps) {
    if (what == "loss") {
      char* end = nullptr;
      long n = std::strtol(arg.c_str(), &end, 10);
      if (arg.empty() || *end != '\0' || n < 0 || n > 100) {
        return usage_error("--loss takes a percentage 0..100, not '" + arg + "'");
      }
    } else if (what == "rate" && arg != "0") {
      if (auto r = lab::parse_rate(arg); !r) {
        return usage_error(r.error().context);
      }
    }
  }
  if (!require_root()) {
    return 3;
  }
  auto m = lab::MultipathLab::attach(a.prefix);
  if (!m) {
    if (auto in = lab::IngressLab::attach(a.prefix)) {
      return impair_ingress(a, **in);
    }
    return fail(m.error());
  }
  std::vector<int> paths;
  if (*a.path == "all") {
    for (int i = 1; i <= (*m)->paths(); ++i) {
      paths.push_back(i);
    }
  } else {
    char* end = nullptr;
    long i = std::strtol(a.path->c_str(), &end, 10);
    if (a.path->empty() || *end != '\0' || i < 1 || i > (*m)->paths()) {
      return usage_error("--path must be 1.." + std::to_string((*m)->paths()) + " or all, not '" +
                         *a.path + "'");
    }
    paths.push_back(static_cast<int>(i));
  }
  for (int p : paths) {
    for (const auto& [what, arg] : a.steps) {
      Status s;
      if (what == "drop") {
        s = (*m)->drop(p, true, a.dir);
      } else if (what == "undrop") {
        s = (*m)->drop(p, false, a.dir);
      } else if (what == "loss") {
        s = (*m)->loss(p, std::atoi(arg.c_str()), a.dir);
      } else if (what == "rate") {
        s = (*m)->rate(p, arg == "0" ? 0 : *lab::parse_rate(arg), a.dir);
      } else if (what == "clear") {
        s = (*m)->clear(p);
      }
      if (!s) {
        return fail(s.error());
      }
    }
  }
  if (a.json) {
    std::printf("%s\n", (*m)->describe().c_str());
  } else {
    print_summary_multipath(**m);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    auto next = [&](const char* what) -> std::optional<std::string> {
      if (i + 1 >= argc) {
        return std::nullopt;
      }
      (void)what;
      return std::string(argv[++i]);
    };
    if (s == "-h" || s == "--help" || s == "help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (s == "--json") {
      a.json = true;
    } else if (s == "--force") {
      a.force = true;
    } else if (s == "--drop" || s == "--undrop" || s == "--clear") {
      a.steps.emplace_back(s.substr(2), "");
    } else if (s == "--userstack" || s == "--tun-user") {
      auto v = next(s.c_str());
      if (!v) {
        return usage_error(s + " needs a value");
      }
      if (s == "--userstack") {
        if (*v != "a" && *v != "b" && *v != "a,b" && *v != "b,a") {
          return usage_error("--userstack takes a, b or a,b, not '" + *v + "'");
        }
        for (char c : *v) {
          if (c != ',') {
            a.userstack.push_back(c == 'a' ? lab::Host::a : lab::Host::b);
          }
        }
      } else {
        char* end = nullptr;
        const long u = std::strtol(v->c_str(), &end, 10);
        long gr = u;
        if (*end == ':') {
          gr = std::strtol(end + 1, &end, 10);
        }
        if (v->empty() || *end != '\0' || u < 0 || gr < 0 || u > 0x7fffffff || gr > 0x7fffffff) {
          return usage_error("--tun-user takes a numeric UID or UID:GID, not '" + *v + "'");
        }
        a.tun_uid = static_cast<int>(u);
        a.tun_gid = static_cast<int>(gr);
      }
    } else if (s == "--prefix" || s == "--paths" || s == "--rate" || s == "--loss" ||
               s == "--path" || s == "--dir") {
      auto v = next(s.c_str());
      if (!v) {
        return usage_error(s + " needs a value");
      }
      if (s == "--prefix") {
        a.prefix = *v;
      } else if (s == "--paths") {
        char* end = nullptr;
        long n = std::strtol(v->c_str(), &end, 10);
        if (v->empty() || *end != '\0' || n < lab::MultipathLab::kMinPaths ||
            n > lab::MultipathLab::kMaxPaths) {
          return usage_error("--paths takes 2..8, not '" + *v + "'");
        }
        a.paths = static_cast<int>(n);
      } else if (s == "--rate") {
        // Before `impair` it is the lab-wide rate for up; for impair it is a step.
        a.rate = *v;
        a.steps.emplace_back("rate", *v);
      } else if (s == "--loss") {
        a.steps.emplace_back("loss", *v);
      } else if (s == "--path") {
        a.path = *v;
      } else if (*v == "both") {
        a.dir = lab::Dir::both;
      } else if (*v == "c2s") {
        a.dir = lab::Dir::client_to_server;
      } else if (*v == "s2c") {
        a.dir = lab::Dir::server_to_client;
      } else {
        return usage_error("--dir takes both, c2s or s2c, not '" + *v + "'");
      }
    } else if (!s.empty() && s[0] == '-') {
      return usage_error("unknown option " + s);
    } else {
      a.pos.push_back(s);
    }
  }
  if (a.pos.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string& cmd = a.pos[0];
  if (cmd == "up") {
    // --rate is the lab-wide rate here, not an impair step.
    if (!a.steps.empty() && a.steps.size() == 1 && a.steps[0].first == "rate") {
      a.steps.clear();
    }
    return cmd_up(a);
  }
  if (cmd == "down") {
    return cmd_down(a);
  }
  if (cmd == "status") {
    return cmd_status(a);
  }
  if (cmd == "impair") {
    return cmd_impair(a);
  }
  return usage_error("unknown command '" + cmd + "'");
}
