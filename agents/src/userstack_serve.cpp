// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the userstack method. One userstack::Stack on the pre-provisioned TUN terminates
// every TCP connection routed into it. Each connection to a port of a registered service
// (--service-port NAME=PORT) is bridged (userstack::Bridge: one end of a socketpair) and handed
// to that service's server with the same adopt message a migrated-in connection gets, with an
// empty state (a new connection), already tracked: the server never learns the method. Other
// connections are reset. The Stack's reader thread only queues accepted connections; the io
// thread takes them (us_take_accepted), so agent state stays single-threaded.
#include "agent_internal.hpp"

namespace rendr::agents {

Status Agent::start_userstack() {
  userstack::StackOptions so;
  so.tun.name = cfg_.tun;
  if (!cfg_.tun_clone.empty()) {
    so.tun.clone_path = cfg_.tun_clone;
  }
  auto st = userstack::Stack::start(so);
  if (!st) {
    return std::move(st).take_error();
  }
  stack_ = std::move(*st);
  stack_->set_accept_handler([this](userstack::ConnectionPtr c) {
    bool first = false;
    {
      std::lock_guard lk(us_mu_);
      first = us_accepted_.empty();
      us_accepted_.push_back(std::move(c));
    }
    if (first) {
      asio::post(io_, [this] { us_take_accepted(); });
    }
  });
  log_.info("userstack: serving connections routed into TUN device " + cfg_.tun);
  return {};
}

void Agent::us_take_accepted() {
  std::vector<userstack::ConnectionPtr> batch;
  {
    std::lock_guard lk(us_mu_);
    batch.swap(us_accepted_);
  }
  for (auto& c : batch) {
    us_accept(std::move(c));
  }
}

void Agent::us_accept(userstack::ConnectionPtr c) {
  const FourTuple t = c->tuple();
  const std::string key = t.to_string();
  auto sp = cfg_.service_ports.find(t.local.port);
  std::shared_ptr<AppSession> server;
  if (sp != cfg_.service_ports.end()) {
    for (auto& [sid, s] : sessions_) {
      if (s->service == sp->second && s->alive) {
        server = s;
        break;
      }
    }
  }
  if (!server || flows_.count(key) != 0) {
    log_.info("userstack: " + key + " reset: " +
              (sp == cfg_.service_ports.end()
                   ? "no service for port " + std::to_string(t.local.port) + " (--service-port)"
                   : server ? "the tuple is already served here"
                            : "no server of service " + sp->second + " is registered"));
    ++metrics_.us_refused;
    c->abort();
    return;
  }
  auto b = userstack::Bridge::start(std::move(c));
  if (!b) {
    log_.warn("userstack: " + key + ": " + b.error().message());
    ++metrics_.us_refused;
    return;  // the Connection went with the failed start: closed
  }
  UniqueFd fd = (*b)->take_fd();
  const std::uint64_t id = new_adopt_id(*server);
  Message a(MsgType::adopt);
  a.add_u64(Tag::conn_id, id).add(Tag::tuple, key).add(Tag::state, std::vector<std::byte>{});
  if (auto s = send_packet(server->sock->native_handle(), a, fd.get()); !s) {
    log_.warn("userstack: " + key + ": handing it to service " + sp->second + ": " +
              s.error().message());
    ++metrics_.us_refused;
    return;  // the Bridge goes: its connection is closed
  }
  FlowRec r;
  r.tuple = t;
  r.session = server;
  r.conn_id = id;
  r.service = sp->second;
  r.userstack = true;
  flows_[key] = std::move(r);
  server->conns[id] = key;
  us_flows_[key] = UsFlow{std::move(*b), sp->second};
  ++metrics_.us_accepted;
  log_.debug("userstack: " + key + " handed to service " + sp->second + " as conn " +
             std::to_string(id));
}

std::size_t Agent::us_reap() {
  std::size_t n = 0;
  for (auto it = us_flows_.begin(); it != us_flows_.end();) {
    const auto st = it->second.bridge->stats();
    if (!st.done && !st.reset) {
      ++it;
      continue;
    }
    auto f = flows_.find(it->first);
    if (f != flows_.end() && f->second.userstack && !f->second.migrating) {
      if (auto s = f->second.session.lock(); s) {
        s->conns.erase(f->second.conn_id);
      }
      flows_.erase(f);
    }
    log_.debug("userstack: " + it->first + (st.reset ? " reset" : " finished"));
    it = us_flows_.erase(it);
    ++n;
  }
  metrics_.us_finished += n;
  return n;
}

awaitable<void> Agent::us_reap_loop() {
  if (!stack_) {
    co_return;
  }
  asio::steady_timer t(io_);
  for (;;) {
    t.expires_after(ms(200));
    auto [ec] = co_await t.async_wait(as_tuple_aw);
    if (ec || !stack_) {
      co_return;
    }
    (void)us_reap();
  }
}

void Agent::us_status(JsonWriter& j) {
  if (!stack_) {
    return;
  }
  const auto c = stack_->counters();
  j.begin_object("userstack");
  j.kv("tun", cfg_.tun);
  j.kv("accepted", metrics_.us_accepted);
  j.kv("refused", metrics_.us_refused);
  j.kv("finished", metrics_.us_finished);
  j.kv("rx_packets", c.rx_packets);
  j.kv("tx_packets", c.tx_packets);
  j.kv("rx_held", c.rx_held);
  j.kv("rx_hold_dropped", c.rx_hold_dropped);
  j.kv("listeners", c.listeners);
  j.begin_array("flows");
  for (const auto& [key, f] : us_flows_) {
    j.begin_object();
    j.kv("tuple", key);
    j.kv("service", f.service);
    const auto bs = f.bridge->stats();
    if (auto ci = f.bridge->info(); ci) {
      j.kv("state", std::string(to_string(ci->state)));
      j.kv("send_queue", static_cast<std::uint64_t>(ci->send_queue));
      j.kv("recv_queue", static_cast<std::uint64_t>(ci->recv_queue));
      j.kv("mss", static_cast<std::uint64_t>(ci->mss));
    }
    j.kv("to_server", bs.to_server);
    j.kv("from_server", bs.from_server);
    j.end_object();
  }
  j.end_array();
  j.end_object();
}

void Agent::us_stop() {
  if (!stack_) {
    return;
  }
  // New connections are reset from now on; bridges (and their connections) go before the
  // Stack.
  stack_->set_accept_handler([](userstack::ConnectionPtr c) { c->abort(); });
  {
    std::lock_guard lk(us_mu_);
    us_accepted_.clear();
  }
  us_flows_.clear();
  stack_.reset();
}

}  // namespace rendr::agents
