// SPDX-License-Identifier: Apache-2.0
#include "tun_udp.hpp"

#include <rendr/engine/errors.hpp>
#include <rendr/userstack/udp_packet.hpp>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <vector>

namespace rendr::tun {

struct UdpIngress::Flow {
  UdpKey key;
  engine::L3Identity id;
  std::string name;
  std::shared_ptr<FlowEntry> entry;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::vector<std::byte>> q;  // (mu) datagrams for the engine flow
  std::size_t q_bytes = 0;               // (mu)
  bool closing = false;                  // (mu) reaped: close the engine flow
  std::atomic<bool> refused{false};
  std::atomic<userstack::Unreachable> why{userstack::Unreachable::host};
};

namespace {

using Clock = std::chrono::steady_clock;

engine::L3Identity identity_of(const UdpKey& k) {
  engine::L3Identity id;
  id.proto = 17;
  id.family = k.app.family == IpFamily::v4 ? 4 : 6;
  id.src = k.app.addr;
  id.src_port = k.app.port;
  id.dst = k.dst.addr;
  id.dst_port = k.dst.port;
  return id;
}

// unreachable_for: what the app's socket is told for a refusal reason.
userstack::Unreachable unreachable_for(const std::string& reason) {
  if (reason == "flow_denied") {
    return userstack::Unreachable::prohibited;
  }
  if (reason == "missing_egress") {
    return userstack::Unreachable::port;
  }
  return userstack::Unreachable::host;
}

}  // namespace

UdpIngress::UdpIngress(const IngressOptions& o, Dialers& dialers, TunStatus& status,
                       userstack::Stack& stack)
    : o_(o),
      dialers_(dialers),
      status_(status),
      stack_(stack),
      table_(o.udp.max_flows, o.udp.idle_timeout) {
  janitor_ = std::thread([this] { janitor(); });
}

UdpIngress::~UdpIngress() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  janitor_.join();
}

void UdpIngress::on_datagram(const userstack::UdpDatagram& d) {
  const UdpKey key{d.src, d.dst};
  FlowPtr f;
  bool created = false;
  {
    std::lock_guard lk(mu_);
    const auto l = table_.lookup(key, Clock::now(), [&key] {
      auto n = std::make_shared<Flow>();
      n->key = key;
      n->id = identity_of(key);
      n->name = engine::to_string(n->id);
      return n;
    });
    if (l.value == nullptr) {
      status_.count("udp_dropped_table_full");
      return;
    }
    f = *l.value;
    created = l.outcome == UdpTable<FlowPtr>::Outcome::created;
  }
  if (created) {
    status_.count("udp_flows");
    std::thread([this, f] { run_flow(f); }).detach();
  }
  if (f->refused.load()) {
    status_.count("udp_dropped_refused");
    unreachable(*f);
    return;
  }
  {
    std::lock_guard lk(f->mu);
    if (f->q.size() >= o_.udp.queue_packets || f->q_bytes + d.payload.size() > o_.udp.queue_bytes) {
      status_.count("udp_dropped_queue_full");
      return;
    }
    f->q.emplace_back(d.payload.begin(), d.payload.end());
    f->q_bytes += d.payload.size();
  }
  f->cv.notify_one();
}

void UdpIngress::unreachable(const Flow& f) {
  auto pkt = userstack::build_unreachable(f.key.app, f.key.dst, f.why.load());
  if (pkt && stack_.inject(*pkt)) {
    status_.count("udp_icmp_sent");
  }
}

void UdpIngress::fail(const FlowPtr& f, const std::string& reason) {
  if (f->refused.exchange(true)) {
    return;
  }
  f->why.store(unreachable_for(reason));
  status_.count("udp_refused_" + reason);
  std::size_t dropped = 0;
  {
    std::lock_guard lk(f->mu);
    dropped = f->q.size();
    f->q.clear();
    f->q_bytes = 0;
  }
  f->cv.notify_all();
  if (dropped != 0) {
    status_.count("udp_dropped_refused", dropped);
  }
  std::fprintf(stderr, "rendr-tun: %s: refused: %s\n", f->name.c_str(), reason.c_str());
  unreachable(*f);
}

void UdpIngress::run_flow(const FlowPtr& f) {
  f->entry = status_.add(f->id);
  struct Unregister {
    TunStatus& s;
    const std::shared_ptr<FlowEntry>& e;
    ~Unregister() { s.remove(e); }
  } unregister{status_, f->entry};

  const FlowDecision d = o_.decide ? o_.decide(f->id) : FlowDecision{true, {}};
  if (d.deny || d.peers.empty()) {
    f->entry->state.store("refused");
    fail(f, "flow_denied");
    return;
  }
  auto dialer = dialers_.get(d.peers);
  Result<PacketConnPtr> c =
      dialer ? (*dialer)->dial_packet(f->id) : Result<PacketConnPtr>(dialer.error());
  if (!c) {
    const bool refused = c.error().code == make_error_code(engine::errc::flow_refused);
    std::fprintf(stderr, "rendr-tun: %s: dial: %s\n", f->name.c_str(), c.error().message().c_str());
    f->entry->state.store("refused");
    fail(f, refused ? reason_of(nullptr, c.error()) : std::string("dial_failed"));
    return;
  }
  PacketConn& conn = **c;
  status_.set_conn(f->entry, &conn);
  f->entry->state.store("relaying");
  std::thread rx([this, f, &conn] { receive(f, conn); });
  const std::size_t max = conn.max_packet();
  while (true) {
    std::vector<std::byte> pkt;
    {
      std::unique_lock lk(f->mu);
      f->cv.wait(lk, [&] { return !f->q.empty() || f->closing || f->refused.load(); });
      if (f->q.empty()) {
        break;  // reaped, or refused
      }
      pkt = std::move(f->q.front());
      f->q.pop_front();
      f->q_bytes -= pkt.size();
    }
    if (pkt.size() > max) {
      status_.count("udp_dropped_oversize");
      std::fprintf(stderr, "rendr-tun: %s: %zu-byte datagram over the flow's %zu: dropped\n",
                   f->name.c_str(), pkt.size(), max);
      continue;
    }
    if (auto st = conn.write(pkt); !st) {
      fail(f, reason_of(&conn, st.error()));
      break;
    }
    status_.count("udp_datagrams_up");
    f->entry->bytes_up.fetch_add(pkt.size(), std::memory_order_relaxed);
  }
  f->entry->state.store("closing");
  (void)conn.close();  // BYE: the egress reads EOF and closes its socket; ends rx's read
  rx.join();
  status_.set_conn(f->entry, nullptr);
  if (!f->refused.load()) {
    // Ended without a refusal (reaped, or the egress closed): the 5-tuple's next datagram
    // opens a new flow instead of queueing behind this finished one. A refused flow stays
    // (its datagrams get the ICMP answer) until it is reaped.
    std::lock_guard lk(mu_);
    if (FlowPtr* cur = table_.find(f->key); cur != nullptr && *cur == f) {
      table_.erase(f->key);
    }
  }
  status_.count(f->refused.load() ? "udp_flows_failed" : "udp_flows_done");
}

void UdpIngress::receive(const FlowPtr& f, PacketConn& conn) {
  std::vector<std::byte> pkt;
  while (true) {
    auto r = conn.read(pkt);
    if (!r) {
      bool closing = false;
      {
        std::lock_guard lk(f->mu);
        closing = f->closing;
      }
      if (!closing) {
        fail(f, reason_of(&conn, r.error()));
      }
      return;
    }
    if (!*r) {
      // EOF: the egress closed its end (it does so only after this side's BYE).
      std::lock_guard lk(f->mu);
      f->closing = true;
      f->cv.notify_all();
      return;
    }
    {
      std::lock_guard lk(mu_);
      table_.touch(f->key, Clock::now());
    }
    auto ip = userstack::build_udp(f->key.dst, f->key.app, pkt);
    if (!ip) {
      status_.count("udp_dropped_oversize");
      continue;
    }
    if (auto st = stack_.inject(*ip); !st) {
      status_.count("udp_inject_errors");
      continue;
    }
    status_.count("udp_datagrams_down");
    f->entry->bytes_down.fetch_add(pkt.size(), std::memory_order_relaxed);
  }
}

void UdpIngress::janitor() {
  const auto period = std::clamp(o_.udp.idle_timeout / 4, std::chrono::milliseconds(50),
                                 std::chrono::milliseconds(1000));
  std::unique_lock lk(mu_);
  while (!stop_) {
    stop_cv_.wait_for(lk, period);
    for (auto& [key, f] : table_.expire(Clock::now())) {
      status_.count("udp_idle_closed");
      {
        std::lock_guard fl(f->mu);
        f->closing = true;
      }
      f->cv.notify_all();
    }
  }
}

}  // namespace rendr::tun
