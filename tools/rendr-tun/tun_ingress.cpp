// SPDX-License-Identifier: Apache-2.0
// rendr-tun ingress: one thread per application flow (the dial and the relay block), one
// Dialer per distinct peer set the decision hook names, one PumpHub thread pumping every flow's
// lwIP connection to its relay.
#include "tun_dial.hpp"
#include "tun_relay.hpp"
#include "tun_roles.hpp"
#include "tun_status.hpp"
#include "tun_udp.hpp"

#include <pthread.h>
#include <rendr/engine/dialer.hpp>
#include <rendr/engine/errors.hpp>
#include <rendr/userstack/pump_hub.hpp>
#include <rendr/userstack/stack.hpp>

#include <cstdio>
#include <memory>
#include <thread>

namespace rendr::tun {

namespace {

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

void ingress_flow(const IngressOptions& o, Dialers& dialers, TunStatus& status,
                  userstack::PumpHub& hub, userstack::ConnectionPtr conn) {
  (void)::pthread_setname_np(::pthread_self(), "tun-in-flow");  // per-thread CPU reports
  const auto id = identity_of(conn->tuple());
  const std::string name = engine::to_string(id);
  const auto entry = status.add(id);
  struct Unregister {
    TunStatus& s;
    const std::shared_ptr<FlowEntry>& e;
    ~Unregister() { s.remove(e); }
  } unregister{status, entry};

  const FlowDecision d = o.decide ? o.decide(id) : FlowDecision{true, {}};
  if (d.deny || d.peers.empty()) {
    status.count("reset_flow_denied");
    std::fprintf(stderr, "rendr-tun: %s: denied by the flow decision: reset\n", name.c_str());
    conn->abort();  // the app sees a reset of this one flow
    return;
  }
  auto dialer = dialers.get(d.peers);
  Result<ConnPtr> c = dialer ? (*dialer)->dial(id) : Result<ConnPtr>(dialer.error());
  if (!c) {
    // Refused while the dial waited for its paths: the refusal's reason; else the dial's.
    const bool refused = c.error().code == make_error_code(engine::errc::flow_refused);
    status.count("reset_" + (refused ? reason_of(nullptr, c.error()) : std::string("dial_failed")));
    std::fprintf(stderr, "rendr-tun: %s: dial: %s: reset\n", name.c_str(),
                 c.error().message().c_str());
    conn->abort();
    return;
  }
  UniqueFd fd;
  auto pump = hub.attach(std::move(conn), fd);
  if (!pump) {
    status.count("reset_bridge_failed");
    std::fprintf(stderr, "rendr-tun: bridge: %s\n", pump.error().message().c_str());
    return;
  }
  struct Release {  // the pump goes with the flow (whatever path leaves here)
    userstack::PumpHub& hub;
    userstack::PumpHub::Ticket& t;
    ~Release() { hub.release(t); }
  } release{hub, **pump};
  status.set_conn(entry, c->get());
  entry->state.store("relaying");
  std::string why;
  const auto r = relay(**c, fd.get(), {&entry->bytes_up, &entry->bytes_down},
                       [&](const Error& e) {
                         // Stop the pump and reset the app's connection before the fd is shut
                         // down: the app must see a reset, not a FIN.
                         why = reason_of(c->get(), e);
                         status.count("reset_" + why);
                         hub.abort(**pump);
                         std::fprintf(stderr, "rendr-tun: %s: engine flow ended: %s: reset\n",
                                      name.c_str(), e.message().c_str());
                       });
  entry->state.store("closing");
  if (!r.conn_failed && r.up && r.down) {
    // Both directions ended cleanly: let the pump hand its last bytes and the FIN to lwIP
    // (destroying the Bridge now would discard them).
    hub.wait(**pump);
  }
  status.set_conn(entry, nullptr);
  status.count(r.conn_failed ? "flows_reset" : "flows_done");
  std::fprintf(stderr, "rendr-tun: %s: %llu bytes up, %llu down%s%s\n", name.c_str(),
               static_cast<unsigned long long>(r.to_conn),
               static_cast<unsigned long long>(r.from_conn), r.up ? "" : " (up: error)",
               r.down ? "" : " (down: error)");
}

}  // namespace

int run_ingress(const IngressOptions& o) {
  TunStatus status("ingress");
  if (!o.status_socket.empty()) {
    if (auto st = status.serve(o.status_socket); !st) {
      std::fprintf(stderr, "rendr-tun: %s\n", st.error().message().c_str());
      return 1;
    }
  }
  publish_status(o, status);
  Dialers dialers(o);
  userstack::StackOptions so;
  so.tun.name = o.tun;
  if (!o.tun_clone.empty()) {
    so.tun.clone_path = o.tun_clone;
  }
  so.send_mss = o.send_mss;
  auto stack = userstack::Stack::start(so);
  if (!stack) {
    std::fprintf(stderr, "rendr-tun: tun %s: %s\n", o.tun.c_str(),
                 stack.error().message().c_str());
    return 1;
  }
  status.set_extra([st = stack->get()](JsonWriter& w) {
    const auto c = st->counters();
    w.begin_object("tun");
    w.kv("rx_packets", c.rx_packets);
    w.kv("rx_ignored", c.rx_ignored);
    w.kv("rx_icmp", c.rx_icmp);  // identified, not carried
    w.kv("rx_fragments", c.rx_fragments);
    w.kv("rx_udp", c.rx_udp);
    w.kv("tx_packets", c.tx_packets);
    w.kv("tx_injected", c.tx_injected);  // UDP replies and ICMP unreachables
    w.kv("accepted", c.accepted);
    w.end_object();
  });
  UdpIngress udp(o, dialers, status, **stack);
  (*stack)->set_udp_handler([&udp](const userstack::UdpDatagram& d) { udp.on_datagram(d); });
  auto hub = userstack::PumpHub::start();
  if (!hub) {
    std::fprintf(stderr, "rendr-tun: %s\n", hub.error().message().c_str());
    return 1;
  }
  std::printf("ready ingress tun=%s\n", o.tun.c_str());
  std::fflush(stdout);
  for (;;) {
    auto c = (*stack)->accept(std::chrono::milliseconds(1000));
    if (!c) {
      continue;  // ETIMEDOUT
    }
    // One thread per app flow for its lifetime; the process ends them.
    std::thread(ingress_flow, std::cref(o), std::ref(dialers), std::ref(status), std::ref(**hub),
                std::move(*c))
        .detach();
  }
}

}  // namespace rendr::tun
