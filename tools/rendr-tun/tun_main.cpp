// SPDX-License-Identifier: Apache-2.0
// rendr-tun: unmodified applications over a rendr engine flow (docs/tun-ingress.md):
//   rendr-tun ingress --tun NAME (--peer HOST:PORT ... | --config FILE) [--tun-clone PATH]
//                     [--udp-max-flows N] [--udp-idle-timeout MS] [--send-mss N] [common]
//     terminates every TCP flow routed into the pre-provisioned TUN NAME in userstack (lwIP),
//     decides per flow (every flow to the --peer list, or the config file's rules), and
//     carries it over its own engine flow with the app flow's L3 identity; each UDP 5-tuple
//     rides its own engine packet flow the same way;
//   rendr-tun egress --listen HOST:PORT (--allow SEL | --deny SEL | --redirect SEL=H:P)...
//                    [--connect-timeout MS] [common]
//     accepts engine flows and lands each at its identity's destination (or the redirect),
//     refusing (REFUSE with a reason) what the rules deny or what cannot be reached;
//   rendr-tun check-config FILE
//     parses an ingress config and prints its rules or the first error.
//   common: [--status-socket PATH] [--status-dir DIR|none] [--key-file FILE] [--probe-ms N]
#include "tun_roles.hpp"
#include "tun_status_dir.hpp"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <rendr/engine/stats_json.hpp>
#include <rendr/engine/types.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace rendr;

int usage() {
  std::fprintf(
      stderr,
      "usage: rendr-tun ingress --tun NAME (--peer HOST:PORT ... | --config FILE)\n"
      "                 [--tun-clone PATH] [--udp-max-flows N] [--udp-idle-timeout MS]\n"
      "                 [--send-mss N] [--later-paths-ms N] [--status-socket PATH]\n"
      "                 [--key-file FILE]\n"
      "       rendr-tun egress --listen HOST:PORT (--allow SEL | --deny SEL |\n"
      "                 --redirect SEL=HOST:PORT)... [--connect-timeout MS]\n"
      "                 [--status-socket PATH] [--key-file FILE]\n"
      "       rendr-tun check-config FILE\n"
      "common: [--probe-ms N] [--status-dir DIR|none]\n"
      "SEL: [tcp:|udp:]CIDR[:PORT|:LO-HI], [tcp:|udp:][V6CIDR]:PORTS, [tcp:|udp:]any, tcp or\n"
      "     udp (no protocol: both)\n"
      "--status-dir DIR: also serve the status on DIR/tun-<pid>.sock, where `rendrctl status`\n"
      "                  finds it (default $RENDR_ENGINE_STATUS_DIR or /run/rendr/engine;\n"
      "                  none: only --status-socket)\n"
      "--tun-clone PATH: the TUN clone node to open instead of /dev/net/tun (a node the\n"
      "                  unprivileged user may open: char 10:200)\n"
      "--udp-max-flows N: UDP 5-tuples carried at once (default 1024; more are dropped)\n"
      "--udp-idle-timeout MS: a UDP flow with no datagram either way ends (default 60000)\n"
      "--send-mss N: lwIP's segment size towards the app, 536..65000 (default lwIP's, 1460);\n"
      "  above 1460 needs the TUN's MTU above N + 40\n"
      "--later-paths-ms N: dial a flow's first path at once and its others N ms later or once\n"
      "  it carried 64 KiB, so a short flow pays for one path (default 250; 0: all at once)\n"
      "--probe-ms N (both roles): probe every path every N ms (5..1000), dead after 3 N ms of\n"
      "  silence (default: the engine's 1 s / 500 ms)\n"
      "docs/tun-ingress.md has the config file format, the counters and the limits.\n");
  return 2;
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    return errno_error("open " + path);
  }
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

Result<tun::IngressConfig> load_config(const std::string& path) {
  auto text = read_file(path);
  if (!text) {
    return std::move(text).take_error();
  }
  return tun::parse_ingress_config(*text, path);
}

// remove_sockets_on_termination: SIGTERM / SIGINT first remove |paths| (the status sockets,
// so that `rendrctl status` lists no stale one after a lab or an operator stopped us), then
// end the process by that signal as before. Call before any other thread exists: they inherit
// the blocked mask and only the waiting thread takes the signal.
void remove_sockets_on_termination(std::vector<std::string> paths) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set, paths = std::move(paths)] {
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    for (const auto& p : paths) {
      ::unlink(p.c_str());
    }
    ::signal(sig, SIG_DFL);
    pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    ::raise(sig);
  }).detach();
}

}  // namespace

// small_thread_stacks makes every thread created from here on take 512 KiB of stack instead of
// the 8 MiB default. rendr-tun starts threads per flow; glibc keeps 40 MiB of freed stacks for
// reuse, which is five 8 MiB stacks: with more flows at once every new thread mapped a fresh
// stack (page faults) and every ended one unmapped its own (a TLB shootdown on every CPU) -
// ~15 % of the CPU per new flow on both sides (docs/bench.md, 12-07 13:00).
void small_thread_stacks() {
  pthread_attr_t a;
  if (::pthread_attr_init(&a) != 0) {
    return;
  }
  if (::pthread_attr_setstacksize(&a, 512U << 10) == 0) {
    (void)::pthread_setattr_default_np(&a);
  }
  ::pthread_attr_destroy(&a);
}

int main(int argc, char** argv) {
  if (argc < 2) {
    return usage();
  }
  small_thread_stacks();
  const std::string mode = argv[1];
  if (mode == "check-config") {
    if (argc != 3) {
      return usage();
    }
    auto cfg = load_config(argv[2]);
    if (!cfg) {
      std::fprintf(stderr, "rendr-tun: %s\n", cfg.error().message().c_str());
      return 1;
    }
    std::printf("ok: %zu rules\n", cfg->rules.size());
    return 0;
  }
  tun::IngressOptions in;
  tun::EgressOptions eg;
  tun::EgressPolicy policy;
  std::vector<std::string> peers;
  std::string config;
  std::string status_socket;
  std::string status_dir = engine::engine_status_dir();
  std::string key_file;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const std::string v = argv[i + 1];
    if (k == "--tun") {
      in.tun = v;
    } else if (k == "--peer") {
      peers.push_back(v);
    } else if (k == "--config") {
      config = v;
    } else if (k == "--listen") {
      eg.listen = v;
    } else if (k == "--allow" || k == "--deny" || k == "--redirect") {
      if (auto st = policy.add(k.substr(2), v); !st) {
        std::fprintf(stderr, "rendr-tun: %s\n", st.error().message().c_str());
        return 2;
      }
    } else if (k == "--probe-ms") {
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 5 || n > 1000) {
        std::fprintf(stderr, "rendr-tun: --probe-ms takes 5..1000, not '%s'\n", v.c_str());
        return 2;
      }
      in.probe = eg.probe = std::chrono::milliseconds(n);
    } else if (k == "--later-paths-ms") {
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 0 || n > 60000) {
        std::fprintf(stderr, "rendr-tun: --later-paths-ms takes 0..60000, not '%s'\n",
                     v.c_str());
        return 2;
      }
      in.later_paths = std::chrono::milliseconds(n);
    } else if (k == "--send-mss") {
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 536 || n > 65000) {
        std::fprintf(stderr, "rendr-tun: --send-mss takes 536..65000, not '%s'\n", v.c_str());
        return 2;
      }
      in.send_mss = static_cast<std::uint16_t>(n);
    } else if (k == "--connect-timeout") {
      eg.connect_timeout = std::chrono::milliseconds(std::atoi(v.c_str()));
    } else if (k == "--tun-clone") {
      in.tun_clone = v;
    } else if (k == "--udp-max-flows" || k == "--udp-idle-timeout") {
      const long n = std::strtol(v.c_str(), nullptr, 10);
      if (n <= 0 || n > 100000000) {
        std::fprintf(stderr, "rendr-tun: %s: expected a positive number, got '%s'\n", k.c_str(),
                     v.c_str());
        return 2;
      }
      if (k == "--udp-max-flows") {
        in.udp.max_flows = static_cast<std::size_t>(n);
      } else {
        in.udp.idle_timeout = std::chrono::milliseconds(n);
      }
    } else if (k == "--status-socket") {
      status_socket = v;
    } else if (k == "--status-dir") {
      status_dir = v == "none" ? std::string() : v;
    } else if (k == "--key-file") {
      key_file = v;
    } else {
      return usage();
    }
  }
  if (argc % 2 != 0) {
    return usage();  // an option without its value
  }
  std::vector<std::uint8_t> key;
  if (!key_file.empty()) {
    auto k = read_file(key_file);
    if (!k) {
      std::fprintf(stderr, "rendr-tun: key: %s\n", k.error().message().c_str());
      return 1;
    }
    key.assign(k->begin(), k->end());
    if (key.size() < engine::kMinListenerKey || key.size() > engine::kMaxListenerKey) {
      std::fprintf(stderr, "rendr-tun: key file %s: %zu bytes, need 16..64\n", key_file.c_str(),
                   key.size());
      return 1;
    }
  }
  std::vector<std::string> sockets;
  if (!status_socket.empty()) {
    sockets.push_back(status_socket);
  }
  if (!status_dir.empty()) {
    sockets.push_back(tun::published_socket(status_dir, ::getpid()));
  }
  remove_sockets_on_termination(sockets);
  if (mode == "ingress" && !in.tun.empty() && (peers.empty() != config.empty())) {
    in.status_socket = status_socket;
    in.status_dir = status_dir;
    in.listener_key = key;
    if (!config.empty()) {
      auto cfg = load_config(config);
      if (!cfg) {
        std::fprintf(stderr, "rendr-tun: %s\n", cfg.error().message().c_str());
        return 1;
      }
      in.decide = [c = std::move(*cfg)](const engine::L3Identity& id) { return c.decide(id); };
    } else {
      in.decide = [peers](const engine::L3Identity&) { return tun::FlowDecision{false, peers}; };
    }
    return tun::run_ingress(in);
  }
  if (mode == "egress" && !eg.listen.empty()) {
    if (policy.allow.empty() && policy.redirect.empty()) {
      std::fprintf(stderr,
                   "rendr-tun: egress needs --allow or --redirect (nothing is allowed by "
                   "default; --allow any allows every destination)\n");
      return 2;
    }
    eg.status_socket = status_socket;
    eg.status_dir = status_dir;
    eg.listener_key = key;
    eg.decide = [policy](const engine::L3Identity& id) { return policy.decide(id); };
    return tun::run_egress(eg);
  }
  return usage();
}
