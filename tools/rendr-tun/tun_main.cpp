// SPDX-License-Identifier: Apache-2.0
// rendr-tun: unmodified applications over a rendr engine flow (docs/tun-ingress.md). A start:
//   rendr-tun ingress --tun NAME --peer HOST:PORT [--peer HOST:PORT ...]
//     terminates every TCP flow routed into the pre-provisioned TUN NAME in userstack (lwIP)
//     and carries each over its own engine flow (tcp paths to the peers) with the app flow's
//     L3 identity;
//   rendr-tun egress --listen HOST:PORT
//     accepts engine flows and connects each to its L3 identity's destination.
// Both run until killed. Bytes are relayed both ways with half-close (tun_relay.hpp).
#include "tun_relay.hpp"

#include <rendr/common/endpoint.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/engine/dialer.hpp>
#include <rendr/engine/listener.hpp>
#include <rendr/userstack/bridge.hpp>
#include <rendr/userstack/stack.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace rendr;

int usage() {
  std::fprintf(stderr,
               "usage: rendr-tun ingress --tun NAME --peer HOST:PORT [--peer HOST:PORT ...]\n"
               "       rendr-tun egress --listen HOST:PORT\n");
  return 2;
}

engine::L3Identity identity_of(const FourTuple& t) {
  // The Connection's local end is the address the app dialled; its remote end is the app.
  engine::L3Identity id;
  id.proto = 6;
  id.family = t.local.family == IpFamily::v4 ? 4 : 6;
  id.src = t.remote.addr;
  id.src_port = t.remote.port;
  id.dst = t.local.addr;
  id.dst_port = t.local.port;
  return id;
}

Endpoint destination_of(const engine::L3Identity& id) {
  Endpoint e;
  e.family = id.family == 4 ? IpFamily::v4 : IpFamily::v6;
  e.addr = id.dst;
  e.port = id.dst_port;
  return e;
}

void ingress_flow(Dialer& dialer, userstack::ConnectionPtr conn) {
  const auto id = identity_of(conn->tuple());
  auto c = dialer.dial(id);
  if (!c) {
    std::fprintf(stderr, "rendr-tun: %s: dial: %s\n", engine::to_string(id).c_str(),
                 c.error().message().c_str());
    conn->abort();  // the app sees a reset of this one flow
    return;
  }
  auto bridge = userstack::Bridge::start(std::move(conn));
  if (!bridge) {
    std::fprintf(stderr, "rendr-tun: bridge: %s\n", bridge.error().message().c_str());
    return;
  }
  UniqueFd fd = (*bridge)->take_fd();
  const auto r = tun::relay(**c, fd.get());
  if (r.up && r.down) {
    // Both directions ended cleanly: let the pump hand its last bytes and the FIN to lwIP
    // (destroying the Bridge now would discard them).
    (*bridge)->wait();
  }
  std::fprintf(stderr, "rendr-tun: %s: %llu bytes up, %llu down%s%s\n",
               engine::to_string(id).c_str(), static_cast<unsigned long long>(r.to_conn),
               static_cast<unsigned long long>(r.from_conn), r.up ? "" : " (up: error)",
               r.down ? "" : " (down: error)");
}

void egress_flow(ConnPtr conn) {
  const auto id = conn->l3_identity();
  if (!id) {
    std::fprintf(stderr, "rendr-tun: a flow without an L3 identity: closed\n");
    (void)conn->close();
    return;
  }
  const Endpoint dst = destination_of(*id);
  UniqueFd fd(::socket(dst.af(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage ss{};
  const socklen_t len = dst.to_sockaddr(ss);
  if (!fd || ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
    std::fprintf(stderr, "rendr-tun: %s: connect: %s\n", engine::to_string(*id).c_str(),
                 std::strerror(errno));
    (void)conn->close();
    return;
  }
  const auto r = tun::relay(*conn, fd.get());
  std::fprintf(stderr, "rendr-tun: egress %s: %llu bytes to origin, %llu back\n",
               engine::to_string(*id).c_str(), static_cast<unsigned long long>(r.from_conn),
               static_cast<unsigned long long>(r.to_conn));
}

int run_ingress(const std::string& tun, const std::vector<std::string>& peers) {
  DialOptions o;
  for (std::size_t i = 0; i < peers.size(); ++i) {
    PathSpec p;
    p.transport = "tcp";
    p.address = peers[i];
    p.name = "p" + std::to_string(i + 1);
    o.paths.push_back(p);
  }
  auto dialer = Dialer::create(o);
  if (!dialer) {
    std::fprintf(stderr, "rendr-tun: %s\n", dialer.error().message().c_str());
    return 1;
  }
  userstack::StackOptions so;
  so.tun.name = tun;
  auto stack = userstack::Stack::start(so);
  if (!stack) {
    std::fprintf(stderr, "rendr-tun: tun %s: %s\n", tun.c_str(), stack.error().message().c_str());
    return 1;
  }
  std::printf("ready ingress tun=%s\n", tun.c_str());
  std::fflush(stdout);
  for (;;) {
    auto c = (*stack)->accept(std::chrono::milliseconds(1000));
    if (!c) {
      continue;  // ETIMEDOUT
    }
    // One thread per app flow for its lifetime (the relay blocks); the process ends them.
    std::thread(ingress_flow, std::ref(**dialer), std::move(*c)).detach();
  }
}

int run_egress(const std::string& listen) {
  auto l = listen_tcp(listen);
  if (!l) {
    std::fprintf(stderr, "rendr-tun: listen %s: %s\n", listen.c_str(),
                 l.error().message().c_str());
    return 1;
  }
  std::printf("ready egress listen=%s\n", (*l)->local_address().c_str());
  std::fflush(stdout);
  for (;;) {
    auto c = (*l)->accept();
    if (!c) {
      std::fprintf(stderr, "rendr-tun: accept: %s\n", c.error().message().c_str());
      return 1;
    }
    std::thread(egress_flow, std::move(*c)).detach();
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    return usage();
  }
  const std::string mode = argv[1];
  std::string tun;
  std::string listen;
  std::vector<std::string> peers;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    if (k == "--tun") {
      tun = argv[i + 1];
    } else if (k == "--peer") {
      peers.emplace_back(argv[i + 1]);
    } else if (k == "--listen") {
      listen = argv[i + 1];
    } else {
      return usage();
    }
  }
  if (mode == "ingress" && !tun.empty() && !peers.empty()) {
    return run_ingress(tun, peers);
  }
  if (mode == "egress" && !listen.empty()) {
    return run_egress(listen);
  }
  return usage();
}
