// SPDX-License-Identifier: Apache-2.0
// rendr-tun egress: the listener and every stream flow run on one io thread - the decision, the
// origin's connect and the relay are events there, no thread per flow; a flow that cannot be
// landed is refused with a RefusalCode the ingress counts. Packet flows (UDP) keep a thread
// each.
#include "tun_io.hpp"
#include "tun_relay.hpp"
#include "tun_roles.hpp"
#include "tun_status.hpp"

#include <pthread.h>
#include <rendr/engine/listener.hpp>

#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

namespace rendr::tun {

namespace {

Endpoint destination_of(const engine::L3Identity& id) {
  Endpoint e;
  e.family = id.family == 4 ? IpFamily::v4 : IpFamily::v6;
  e.addr = id.dst;
  e.port = id.dst_port;
  return e;
}

// refusal_for: the code a failed connect() reports to the ingress.
engine::RefusalCode refusal_for(int err) {
  switch (err) {
    case ECONNREFUSED:
    case ENETUNREACH:
    case EHOSTUNREACH:
    case EADDRNOTAVAIL:
    case ENETDOWN:
    case EHOSTDOWN:
      return engine::RefusalCode::missing_egress;
    case ETIMEDOUT:
      return engine::RefusalCode::egress_timeout;
    default:
      return engine::RefusalCode::egress_error;
  }
}

// refuse: ends a packet flow with a REFUSE carrying |code| (blocking: its own thread).
void refuse(Admin& conn, TunStatus& status, const std::string& name, engine::RefusalCode code,
            const std::string& detail) {
  status.count("refused_" + engine::to_string(code));
  std::fprintf(stderr, "rendr-tun: egress %s: refused: %s (%s)\n", name.c_str(),
               engine::to_string(code).c_str(), detail.c_str());
  (void)conn.refuse(code, detail);
}

// EgressFlow: one stream flow being landed, on the io thread; its status entry goes with it.
struct EgressFlow {
  EgressFlow(TunStatus& s, ConnPtr c) : status(s), conn(std::move(c)) {}
  ~EgressFlow() {
    if (entry) {
      status.remove(entry);
    }
  }
  EgressFlow(const EgressFlow&) = delete;
  EgressFlow& operator=(const EgressFlow&) = delete;
  TunStatus& status;
  ConnPtr conn;  // until the relay takes it
  std::shared_ptr<FlowEntry> entry;
  std::string name;
  std::unique_ptr<asio::posix::stream_descriptor> origin;  // while connecting
  std::unique_ptr<asio::steady_timer> timer;
};

// refuse_async (io thread): ends the flow with a REFUSE carrying |code|; the Conn goes once the
// refusal is out.
void refuse_async(const std::shared_ptr<EgressFlow>& f, engine::RefusalCode code,
                  const std::string& detail) {
  f->status.count("refused_" + engine::to_string(code));
  std::fprintf(stderr, "rendr-tun: egress %s: refused: %s (%s)\n", f->name.c_str(),
               engine::to_string(code).c_str(), detail.c_str());
  if (f->entry) {
    f->entry->state.store("refused");
    f->status.set_conn(f->entry, nullptr);
  }
  std::shared_ptr<Conn> conn(std::move(f->conn));
  Conn& c = *conn;
  c.async_refuse(code, detail, [conn](Status) {});
}

// relay_to_origin (io thread): the origin answered; bridge it and the flow.
void relay_to_origin(const std::shared_ptr<EgressFlow>& f, asio::posix::stream_descriptor sd) {
  f->entry->state.store("relaying");
  RelayHooks h;
  // Bytes up (app -> origin) arrive from the Conn here: the relay's from_conn.
  h.progress = {&f->entry->bytes_down, &f->entry->bytes_up};
  h.on_done = [f](const RelayResult& r) {
    f->status.set_conn(f->entry, nullptr);
    f->status.count(r.conn_failed ? "flows_failed" : "flows_done");
    std::fprintf(stderr, "rendr-tun: egress %s: %llu bytes to origin, %llu back\n",
                 f->name.c_str(), static_cast<unsigned long long>(r.from_conn),
                 static_cast<unsigned long long>(r.to_conn));
  };
  start_relay(std::move(f->conn), std::move(sd), std::move(h));
}

// connect_origin (io thread): a non-blocking connect to |dst| bounded by o.connect_timeout;
// then relay_to_origin, or a refusal naming why.
void connect_origin(const EgressOptions& o, const std::shared_ptr<EgressFlow>& f,
                    const Endpoint& dst) {
  f->entry->state.store("connecting");
  UniqueFd fd(::socket(dst.af(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) {
    refuse_async(f, refusal_for(errno), errno_error("socket").message());
    return;
  }
  sockaddr_storage ss{};
  const socklen_t len = dst.to_sockaddr(ss);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&ss), len) != 0 &&
      errno != EINPROGRESS) {
    const int err = errno;
    refuse_async(f, refusal_for(err), errno_error("connect " + dst.to_string(), err).message());
    return;
  }
  auto& io = static_cast<asio::io_context&>(f->conn->get_executor().context());
  f->origin = std::make_unique<asio::posix::stream_descriptor>(io, fd.release());
  f->timer = std::make_unique<asio::steady_timer>(io, o.connect_timeout);
  f->timer->async_wait([f](std::error_code ec) {
    if (!ec && f->origin) {
      f->origin->cancel();  // the wait below completes with operation_aborted: a time-out
    }
  });
  f->origin->async_wait(asio::posix::stream_descriptor::wait_write, [f, dst](std::error_code ec) {
    f->timer->cancel();
    int err = ec ? (ec == asio::error::operation_aborted ? ETIMEDOUT : ec.value()) : 0;
    if (err == 0) {
      socklen_t el = sizeof err;
      if (::getsockopt(f->origin->native_handle(), SOL_SOCKET, SO_ERROR, &err, &el) != 0) {
        err = errno;
      }
    }
    if (err != 0) {
      f->origin.reset();
      refuse_async(f, refusal_for(err), errno_error("connect " + dst.to_string(), err).message());
      return;
    }
    auto connected = std::move(*f->origin);
    f->origin.reset();
    relay_to_origin(f, std::move(connected));
  });
}

// egress_flow (io thread): identity, decision, then the origin's connect.
void egress_flow(const EgressOptions& o, TunStatus& status, ConnPtr conn) {
  auto f = std::make_shared<EgressFlow>(status, std::move(conn));
  const auto id = f->conn->l3_identity();
  if (!id || id->proto != 6) {
    f->name = id ? engine::to_string(*id) : "(no identity)";
    refuse_async(f, engine::RefusalCode::identity_mismatch,
                 id ? "only tcp identities are landed" : "the flow carries no L3 identity");
    return;
  }
  f->name = engine::to_string(*id);
  f->entry = status.add(*id);
  status.set_conn(f->entry, f->conn.get());
  const EgressDecision d =
      o.decide ? o.decide(*id) : EgressDecision{EgressDecision::Kind::deny, {}, {}, "no policy"};
  if (d.kind == EgressDecision::Kind::deny) {
    refuse_async(f, d.code, d.detail);
    return;
  }
  if (d.kind == EgressDecision::Kind::redirect) {
    status.count("redirected");
  }
  connect_origin(o, f, d.kind == EgressDecision::Kind::redirect ? d.to : destination_of(*id));
}

// udp_socket_to: a UDP socket connected to |dst| (so only its replies are read).
Result<UniqueFd> udp_socket_to(const Endpoint& dst) {
  UniqueFd fd(::socket(dst.af(), SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) {
    return errno_error("socket");
  }
  sockaddr_storage ss{};
  const socklen_t len = dst.to_sockaddr(ss);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
    return errno_error("connect " + dst.to_string());
  }
  return fd;
}

// egress_udp_flow lands one packet flow with a UDP identity: one datagram to the destination
// per packet, one packet back per datagram the destination answers with. Ends when the
// ingress closes the flow (EOF: its table reaped the 5-tuple) or the flow fails.
void egress_udp_flow(const EgressOptions& o, TunStatus& status, PacketConnPtr conn) {
  const auto id = conn->l3_identity();
  if (!id || id->proto != 17) {
    refuse(*conn, status, id ? engine::to_string(*id) : "(no identity)",
           engine::RefusalCode::identity_mismatch,
           id ? "packet flows carry udp identities only" : "the flow carries no L3 identity");
    return;
  }
  const std::string name = engine::to_string(*id);
  const auto entry = status.add(*id);
  struct Unregister {
    TunStatus& s;
    const std::shared_ptr<FlowEntry>& e;
    ~Unregister() { s.remove(e); }
  } unregister{status, entry};
  status.count("udp_flows");
  status.set_conn(entry, conn.get());
  const EgressDecision d =
      o.decide ? o.decide(*id) : EgressDecision{EgressDecision::Kind::deny, {}, {}, "no policy"};
  if (d.kind == EgressDecision::Kind::deny) {
    entry->state.store("refused");
    refuse(*conn, status, name, d.code, d.detail);
    status.set_conn(entry, nullptr);
    return;
  }
  const Endpoint dst = d.kind == EgressDecision::Kind::redirect ? d.to : destination_of(*id);
  if (d.kind == EgressDecision::Kind::redirect) {
    status.count("redirected");
  }
  auto fd = udp_socket_to(dst);
  if (!fd) {
    entry->state.store("refused");
    refuse(*conn, status, name, refusal_for(fd.error().code.value()), fd.error().message());
    status.set_conn(entry, nullptr);
    return;
  }
  entry->state.store("relaying");
  std::atomic<bool> stop{false};
  // Destination -> flow on a helper thread (poll, so that it notices |stop|).
  std::thread up([&] {
    std::vector<std::byte> buf(65536);
    const std::size_t max = conn->max_packet();
    while (!stop.load()) {
      pollfd p{fd->get(), POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) {
        continue;
      }
      const ssize_t n = ::recv(fd->get(), buf.data(), buf.size(), MSG_TRUNC | MSG_DONTWAIT);
      if (n < 0) {
        // ECONNREFUSED: an ICMP port unreachable from the destination (nothing listens yet);
        // UDP carries on, as the app's own socket would.
        status.count(errno == ECONNREFUSED ? "udp_origin_refused" : "udp_recv_errors");
        continue;
      }
      if (static_cast<std::size_t>(n) > max) {
        status.count("udp_dropped_oversize");
        std::fprintf(stderr, "rendr-tun: egress %s: %zd-byte reply over the flow's %zu: dropped\n",
                     name.c_str(), n, max);
        continue;
      }
      if (!conn->write(std::span(buf).first(static_cast<std::size_t>(n)))) {
        break;  // the flow ended: the read below sees it too
      }
      status.count("udp_datagrams_down");
      entry->bytes_down.fetch_add(static_cast<std::uint64_t>(n), std::memory_order_relaxed);
    }
  });
  std::vector<std::byte> pkt;
  bool failed = false;
  while (true) {
    auto r = conn->read(pkt);
    if (!r || !*r) {
      failed = !r;
      break;
    }
    if (::send(fd->get(), pkt.data(), pkt.size(), 0) < 0) {
      status.count(errno == ECONNREFUSED ? "udp_origin_refused" : "udp_send_errors");
      continue;
    }
    status.count("udp_datagrams_up");
    entry->bytes_up.fetch_add(pkt.size(), std::memory_order_relaxed);
  }
  stop.store(true);
  (void)conn->close();
  up.join();
  status.set_conn(entry, nullptr);
  status.count(failed ? "udp_flows_failed" : "udp_flows_done");
  std::fprintf(stderr, "rendr-tun: egress %s: %llu bytes to origin, %llu back\n", name.c_str(),
               static_cast<unsigned long long>(entry->bytes_up.load()),
               static_cast<unsigned long long>(entry->bytes_down.load()));
}

}  // namespace

int run_egress(const EgressOptions& o) {
  TunStatus status("egress");
  if (!o.status_socket.empty()) {
    if (auto st = status.serve(o.status_socket); !st) {
      std::fprintf(stderr, "rendr-tun: %s\n", st.error().message().c_str());
      return 1;
    }
  }
  publish_status(o, status);
  IoThread io("tun-io");
  ListenOptions lo;
  lo.io = &io.io;
  lo.listener_key = o.listener_key;
  apply_probe(o, lo.flow);
  // An egress serves a few ingress hosts, each carrying many app flows from one address (200
  // concurrent flows are 400 carriers from two addresses): per-source limits as wide as the
  // listener's own. The listener key and the network decide who may connect.
  lo.max_pending_per_source = lo.max_pending_carriers;
  lo.max_half_open_per_source = lo.backlog;
  auto l = listen_tcp(o.listen, lo);
  if (!l) {
    std::fprintf(stderr, "rendr-tun: listen %s: %s\n", o.listen.c_str(),
                 l.error().message().c_str());
    return 1;
  }
  status.set_extra([ls = l->get()](JsonWriter& w) {
    const auto s = ls->listener_stats();
    w.begin_object("listener");
    w.kv("flows", static_cast<std::uint64_t>(s.flows));
    w.kv("half_open", static_cast<std::uint64_t>(s.half_open));
    w.kv("flows_evicted", s.flows_evicted);
    w.kv("flows_refused", s.flows_refused);
    w.kv("carriers_dropped", s.carriers_dropped);
    w.kv("first_frame_timeouts", s.first_frame_timeouts);
    w.kv("key_refused", s.key_missing + s.key_bad + s.key_stale + s.key_replayed);
    w.end_object();
  });
  // Packet flows (UDP identities): a thread each (their relay blocks), started from the io
  // thread as they come - no thread waits for them.
  (*l)->set_packet_accept_handler([&o, &status](PacketConnPtr c) {
    std::thread(egress_udp_flow, std::cref(o), std::ref(status), std::move(c)).detach();
  });
  std::printf("ready egress listen=%s\n", (*l)->local_address().c_str());
  std::fflush(stdout);
  // Every stream flow is landed on the io thread, like every flow and relay of this process.
  (*l)->set_accept_handler(
      [&o, &status](ConnPtr c) { egress_flow(o, status, std::move(c)); });
  for (;;) {
    ::pause();  // the threads above do the work; a signal ends the process
  }
}

}  // namespace rendr::tun
