// SPDX-License-Identifier: Apache-2.0
#include "agent.hpp"

#include <cstdlib>
#include <string_view>

namespace rendr::agents {

std::string agent_usage() {
  return R"(usage: rendr-agent --name NAME --cert PEM --key PEM --ca PEM [options]

Per-host rendr agent: tracks connections of registered servers, migrates them to other agents
(eBPF freeze -> TCP_REPAIR checkpoint -> TLS ship -> staged restore -> steer -> commit), adopts
connections migrated here, and (with --steer-iface) runs a gateway's eBPF flow steering.

identity and channel:
  --name NAME              this agent's name; must equal the CN/SAN of --cert
  --cert PEM --key PEM     this agent's certificate and key (rendrctl cert issue)
  --ca PEM                 CA that signs every trusted agent (rendrctl cert init)
  --listen ADDR:PORT       accept agent channels (mutual TLS 1.3) here
  --peer NAME=ADDR:PORT    a peer agent (repeat)
  --gateway NAME           the peer agent that steers this host's VIP flows
  --control PATH           control socket (default /run/rendr/agent.sock; root-only)
host role:
  --freeze-iface DEV       attach the eBPF freeze here (repeat; default: every up device but lo)
  --no-freeze              do not load the eBPF freeze (only for agents that never migrate out)
gateway role:
  --steer-iface DEV        attach eBPF steering at ingress of DEV (peer-facing; repeat)
  --vip ADDR               a VIP whose TCP flows are steered (repeat)
  --backend NAME=DEV[@NEXTHOP]  backend host NAME reached via DEV (repeat; NAME = agent name)
  --default-backend NAME   where new connections go
  --steer-gc-interval-ms N sweep the flow table every N ms (default 10000; 0 never): entries of
                           flows that ended go, live flows' entries stay however idle
  --steer-fin-linger-ms N  remove an entry N ms after both sides' FINs and the last packet
                           (default 60000)
  --steer-rst-linger-ms N  remove an entry N ms after an RST and the last packet (default 10000)
timing:
  --step-timeout-ms N      per-step timeout (default 5000)
  --commit-resolve-ms N    how long to ask the target after a lost COMMIT answer (default 10000)
  --staged-timeout-ms N    target: release staged sockets without COMMIT after N ms (default 30000)
  --freeze-grace-ms N      source: keep a moved flow frozen N ms after commit (default 2000)
  --drain-ms N             source: before the freeze, wait up to N ms while the exported
                           sockets' send queues drain to the peers (default 500; 0 off)
limits:
  --max-frame-mib N        largest agent-channel message accepted, in MiB (default 256, at most
                           256): an offer carries every snapshot of a batch
migration method (docs/native-migration.md "Method selection"):
  --method M               auto (default: native when TCP_REPAIR and BPF work, else userstack
                           when --tun attaches), native or userstack; an explicit method that is
                           not available here fails the start with the reason
  --tun DEV                userstack: the pre-provisioned TUN device the VIPs are routed into
                           (ip tuntap add dev DEV mode tun user <uid>; see docs/userstack.md)
  --tun-clone PATH         userstack: the TUN clone node (default /dev/net/tun)
  --service-port NAME=PORT userstack: connections to local port PORT go to the registered
                           server of service NAME (repeat); other ports are reset
other:
  --log LEVEL              error|warn|info|debug (default info)
  --fault NAME             test-only fault injection (docs/native-migration.md)
  -h, --help               this text
)";
}

Result<AgentConfig> parse_agent_args(int argc, char** argv, bool& help) {
  AgentConfig c;
  help = false;
  auto bad = [](const std::string& why) {
    return make_error(std::errc::invalid_argument, why + " (see --help)");
  };
  auto to_int = [&](const std::string& flag, const char* v) -> Result<int> {
    char* end = nullptr;
    long x = std::strtol(v, &end, 10);
    if (end == v || *end != '\0' || x <= 0 || x > 3'600'000) {
      return bad(flag + ": expected a positive number of milliseconds, got '" + v + "'");
    }
    return static_cast<int>(x);
  };
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      help = true;
      return c;
    }
    if (a == "--no-freeze") {
      c.no_freeze = true;
      continue;
    }
    if (i + 1 >= argc) {
      return bad("unknown or incomplete option '" + a + "'");
    }
    const char* v = argv[++i];
    std::string sv = v;
    if (a == "--name") {
      c.name = sv;
    } else if (a == "--cert") {
      c.cert = sv;
    } else if (a == "--key") {
      c.key = sv;
    } else if (a == "--ca") {
      c.ca = sv;
    } else if (a == "--listen") {
      c.listen = sv;
    } else if (a == "--control") {
      c.control_socket = sv;
    } else if (a == "--gateway") {
      c.gateway = sv;
    } else if (a == "--peer") {
      auto eq = sv.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == sv.size()) {
        return bad("--peer expects NAME=ADDR:PORT, got '" + sv + "'");
      }
      c.peers[sv.substr(0, eq)] = sv.substr(eq + 1);
    } else if (a == "--freeze-iface") {
      c.freeze_ifaces.push_back(sv);
    } else if (a == "--steer-iface") {
      c.steer_ifaces.push_back(sv);
    } else if (a == "--vip") {
      c.vips.push_back(sv);
    } else if (a == "--backend") {
      auto eq = sv.find('=');
      if (eq == std::string::npos || eq == 0) {
        return bad("--backend expects NAME=DEV[@NEXTHOP], got '" + sv + "'");
      }
      BackendConfig b;
      b.name = sv.substr(0, eq);
      std::string rest = sv.substr(eq + 1);
      auto at = rest.find('@');
      b.ifname = rest.substr(0, at);
      if (at != std::string::npos) {
        b.nexthop = rest.substr(at + 1);
      }
      if (b.ifname.empty()) {
        return bad("--backend " + sv + ": device missing");
      }
      c.backends.push_back(b);
    } else if (a == "--default-backend") {
      c.default_backend = sv;
    } else if (a == "--max-frame-mib") {
      auto x = to_int(a, v);
      if (!x) return std::move(x).take_error();
      if (*x < 1 || *x > 256) {
        return bad("--max-frame-mib must be 1..256, got " + sv);
      }
      c.max_frame_bytes = static_cast<std::size_t>(*x) << 20;
    } else if (a == "--step-timeout-ms") {
      auto x = to_int(a, v);
      if (!x) return std::move(x).take_error();
      c.step_timeout_ms = *x;
    } else if (a == "--commit-resolve-ms") {
      auto x = to_int(a, v);
      if (!x) return std::move(x).take_error();
      c.commit_resolve_ms = *x;
    } else if (a == "--staged-timeout-ms") {
      auto x = to_int(a, v);
      if (!x) return std::move(x).take_error();
      c.staged_timeout_ms = *x;
    } else if (a == "--drain-ms") {
      auto x = to_int(a, v);
      if (!x) return std::move(x).take_error();
      if (*x < 0 || *x > 10000) {
        return bad("--drain-ms must be 0..10000, got " + sv);
      }
      c.drain_ms = *x;
    } else if (a == "--freeze-grace-ms") {
      auto x = to_int(a, v);
      if (!x) return std::move(x).take_error();
      c.freeze_grace_ms = *x;
    } else if (a == "--steer-gc-interval-ms" || a == "--steer-fin-linger-ms" ||
               a == "--steer-rst-linger-ms") {
      auto x = to_int(a, v);
      if (!x) return std::move(x).take_error();
      if (*x < 0) {
        return bad(a + " must be >= 0, got " + sv);
      }
      (a == "--steer-gc-interval-ms" ? c.steer_gc_interval_ms
       : a == "--steer-fin-linger-ms" ? c.steer_fin_linger_ms
                                      : c.steer_rst_linger_ms) = *x;
    } else if (a == "--method") {
      if (sv != "auto" && sv != "native" && sv != "userstack") {
        return bad("--method expects auto, native or userstack, got '" + sv + "'");
      }
      c.method = sv;
    } else if (a == "--tun") {
      c.tun = sv;
    } else if (a == "--tun-clone") {
      c.tun_clone = sv;
    } else if (a == "--service-port") {
      auto eq = sv.find('=');
      char* end = nullptr;
      const long port = eq == std::string::npos ? 0 : std::strtol(sv.c_str() + eq + 1, &end, 10);
      if (eq == std::string::npos || eq == 0 || end == nullptr || *end != '\0' || port <= 0 ||
          port > 65535) {
        return bad("--service-port expects NAME=PORT, got '" + sv + "'");
      }
      c.service_ports[static_cast<std::uint16_t>(port)] = sv.substr(0, eq);
    } else if (a == "--log") {
      c.log_level = sv;
    } else if (a == "--fault") {
      static const char* known[] = {"restore_mismatch", "delay_before_restore", "drop_after_offer",
                                    "drop_commit_reply", "cut_during_ship",
                                    "tamper_snapshot", "truncate_snapshot", "refuse_steer",
                                    "fail_second_restore", "stall_before_freeze",
                                    "stall_before_ship", "stall_before_commit",
                                    "stall_before_release"};
      bool ok = false;
      for (const char* k : known) {
        ok = ok || sv == k;
      }
      if (!ok) {
        return bad("--fault: unknown fault '" + sv + "'");
      }
      c.faults.push_back(sv);
    } else {
      return bad("unknown option '" + a + "'");
    }
  }
  if (c.name.empty()) {
    return bad("--name is required");
  }
  if (c.cert.empty() || c.key.empty() || c.ca.empty()) {
    return bad("--cert, --key and --ca are required (mutual TLS between agents)");
  }
  if (!c.gateway.empty() && c.peers.count(c.gateway) == 0) {
    return bad("--gateway " + c.gateway + " needs a matching --peer " + c.gateway + "=ADDR:PORT");
  }
  if (c.method == "userstack" && c.tun.empty()) {
    return bad("--method userstack needs --tun DEV (the TUN device the VIPs are routed into)");
  }
  if (c.method == "userstack" && !c.steer_ifaces.empty()) {
    return bad("--method userstack is for hosts; a gateway (--steer-iface) steers with eBPF");
  }
  if (!c.steer_ifaces.empty() && c.backends.empty()) {
    return bad("--steer-iface needs at least one --backend");
  }
  return c;
}

}  // namespace rendr::agents
