// SPDX-License-Identifier: Apache-2.0
// rendr-tun ingress: the stack's reader thread decides each application flow; the dial
// (Dialer::async_dial) and the relay between the flow's lwIP connection and its engine flow run
// on one io thread shared by every Dialer - no thread per flow, no socket between lwIP and the
// engine.
#include "tun_dial.hpp"
#include "tun_io.hpp"
#include "tun_relay.hpp"
#include "tun_roles.hpp"
#include "tun_status.hpp"
#include "tun_udp.hpp"

#include <rendr/engine/dialer.hpp>
#include <rendr/engine/errors.hpp>
#include <rendr/userstack/stack.hpp>

#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>

#include <unistd.h>

#include <cstdio>
#include <memory>

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

// IngressFlow: one app flow's state while its dial and relay run on the io thread; its status
// entry goes with it.
struct IngressFlow {
  IngressFlow(TunStatus& s, const engine::L3Identity& id, userstack::ConnectionPtr c)
      : status(s), entry(s.add(id)), name(engine::to_string(id)), app(std::move(c)) {}
  ~IngressFlow() { status.remove(entry); }
  IngressFlow(const IngressFlow&) = delete;
  IngressFlow& operator=(const IngressFlow&) = delete;
  TunStatus& status;
  std::shared_ptr<FlowEntry> entry;
  std::string name;
  userstack::ConnectionPtr app;  // until the relay takes it
};

// relay_flow (io thread): bridges the dialled engine flow and the app's lwIP connection.
void relay_flow(const std::shared_ptr<IngressFlow>& f, ConnPtr conn) {
  Conn* raw = conn.get();
  f->status.set_conn(f->entry, raw);
  f->entry->state.store("relaying");
  RelayHooks h;
  h.progress = {&f->entry->bytes_up, &f->entry->bytes_down};
  h.on_conn_error = [f, raw](const Error& e) {
    // The relay has reset the app's connection already (a reset, not a FIN).
    f->status.count("reset_" + reason_of(raw, e));
    std::fprintf(stderr, "rendr-tun: %s: engine flow ended: %s: reset\n", f->name.c_str(),
                 e.message().c_str());
  };
  h.on_done = [f](const RelayResult& r) {
    f->entry->state.store("closing");
    f->status.set_conn(f->entry, nullptr);
    f->status.count(r.conn_failed ? "flows_reset" : "flows_done");
    std::fprintf(stderr, "rendr-tun: %s: %llu bytes up, %llu down%s%s\n", f->name.c_str(),
                 static_cast<unsigned long long>(r.to_conn),
                 static_cast<unsigned long long>(r.from_conn), r.up ? "" : " (up: error)",
                 r.down ? "" : " (down: error)");
  };
  start_relay(std::move(conn), std::move(f->app), std::move(h));
}

// ingress_flow (the stack's reader thread, its accept handler): decide and start the engine
// dial without waiting for it; the rest happens on the io thread.
void ingress_flow(const IngressOptions& o, Dialers& dialers, TunStatus& status,
                  userstack::ConnectionPtr conn) {
  const auto id = identity_of(conn->tuple());
  auto f = std::make_shared<IngressFlow>(status, id, std::move(conn));
  const FlowDecision d = o.decide ? o.decide(id) : FlowDecision{true, {}};
  if (d.deny || d.peers.empty()) {
    status.count("reset_flow_denied");
    std::fprintf(stderr, "rendr-tun: %s: denied by the flow decision: reset\n", f->name.c_str());
    f->app->abort();  // the app sees a reset of this one flow
    return;
  }
  auto dialer = dialers.get(d.peers);
  if (!dialer) {
    status.count("reset_dial_failed");
    std::fprintf(stderr, "rendr-tun: %s: dial: %s: reset\n", f->name.c_str(),
                 dialer.error().message().c_str());
    f->app->abort();
    return;
  }
  // The app's first bytes wait in lwIP (its window) until the relay reads them.
  f->entry->state.store("dialling");
  (*dialer)->async_dial(id, deadline_in(std::chrono::seconds(10)), [f](Result<ConnPtr> c) {
    if (!c) {
      // Refused while the dial waited for its paths: the refusal's reason; else the dial's.
      const bool refused = c.error().code == make_error_code(engine::errc::flow_refused);
      f->status.count("reset_" +
                      (refused ? reason_of(nullptr, c.error()) : std::string("dial_failed")));
      std::fprintf(stderr, "rendr-tun: %s: dial: %s: reset\n", f->name.c_str(),
                   c.error().message().c_str());
      f->app->abort();
      return;
    }
    relay_flow(f, std::move(*c));
  });
}

// TunPoller: the stack's TUN read on the io thread - a wait for readability, then
// Stack::poll_tun, again until the device is gone.
class TunPoller : public std::enable_shared_from_this<TunPoller> {
 public:
  static Result<std::shared_ptr<TunPoller>> start(asio::io_context& io, userstack::Stack& st) {
    const int fd = ::dup(st.tun_fd());  // the descriptor asio owns; the stack keeps its own
    if (fd < 0) {
      return errno_error("dup the TUN fd");
    }
    auto p = std::shared_ptr<TunPoller>(new TunPoller(io, st, fd));
    asio::post(io, [p] { p->poll(); });
    return p;
  }

 private:
  TunPoller(asio::io_context& io, userstack::Stack& st, int fd) : st_(st), sd_(io, fd) {}

  void poll() {
    const int n = st_.poll_tun();
    if (n < 0) {
      std::fprintf(stderr, "rendr-tun: the TUN device is gone: no new flows\n");
      return;
    }
    if (n >= kDrainedBelow) {
      // Not drained (poll_tun reads a bounded amount): the edge-triggered wait would not fire
      // for what is left. Another round after what else is queued.
      asio::post(sd_.get_executor(), [self = shared_from_this()] { self->poll(); });
      return;
    }
    sd_.async_wait(asio::posix::stream_descriptor::wait_read,
                   [self = shared_from_this()](std::error_code ec) {
                     if (!ec) {
                       self->poll();
                     }
                   });
  }

  static constexpr int kDrainedBelow = 128;  // poll_tun's bound: 4 batches of 32
  userstack::Stack& st_;
  asio::posix::stream_descriptor sd_;
};

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
  IoThread io("tun-io");
  Dialers dialers(o, &io.io);
  userstack::StackOptions so;
  so.tun.name = o.tun;
  if (!o.tun_clone.empty()) {
    so.tun.clone_path = o.tun_clone;
  }
  so.send_mss = o.send_mss;
  // The TUN is read on the io thread too (TunPoller below): lwIP's input, the accept handler
  // and every connection's events run where the relays and engine flows run - no thread hop
  // and no contended lwIP lock per packet.
  so.reader_thread = false;
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
  // Every new connection is decided where the stack hands it out: on the io thread.
  (*stack)->set_accept_handler([&](userstack::ConnectionPtr c) {
    ingress_flow(o, dialers, status, std::move(c));
  });
  auto poller = TunPoller::start(io.io, **stack);
  if (!poller) {
    std::fprintf(stderr, "rendr-tun: tun %s: %s\n", o.tun.c_str(),
                 poller.error().message().c_str());
    return 1;
  }
  std::printf("ready ingress tun=%s\n", o.tun.c_str());
  std::fflush(stdout);
  for (;;) {
    ::pause();  // the threads above do the work; a signal ends the process
  }
}

}  // namespace rendr::tun
