// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the userstack method. The TUN device, lwIP and the pumps live in the userstack
// keeper (us_keeper.hpp), a process of their own, so the connections outlive this agent. Each
// connection the keeper accepts arrives here as an event with the server's end of its pump;
// one to a port of a registered service (--service-port NAME=PORT) is handed to that service's
// server with the same adopt message a migrated-in connection gets, with an empty state (a new
// connection), already tracked: the server never learns the method. Other connections are
// reset. A restarted agent finds the keeper again: the connections it serves are tracked again
// as their servers register, and moves its predecessor left captured are reclaimed.
#include "agent_internal.hpp"

#include "us_keeper.hpp"

namespace rendr::agents {

Status Agent::start_userstack() {
  KeeperOptions ko;
  ko.tun = cfg_.tun;
  ko.tun_clone = cfg_.tun_clone;
  ko.freeze_grace_ms = static_cast<std::uint64_t>(cfg_.freeze_grace_ms);
  std::vector<FourTuple> serving;
  std::vector<FourTuple> held;
  std::string how;
  auto k = KeeperClient::open(ko, serving, held, how);
  if (!k) {
    return std::move(k).take_error();
  }
  keeper_ = std::make_unique<KeeperClient>(std::move(*k));
  for (const auto& t : serving) {
    us_tuples_.insert(t.to_string());
  }
  us_held_ = std::move(held);
  log_.info("userstack: " + how + ": serving connections routed into TUN device " + cfg_.tun +
            (serving.empty() ? std::string()
                             : "; " + std::to_string(serving.size()) +
                                   " connection(s) served since before this run") +
            (us_held_.empty() ? std::string()
                              : "; " + std::to_string(us_held_.size()) +
                                    " left captured by an unfinished move: reclaiming"));
  return {};
}

awaitable<void> Agent::us_event_loop() {
  if (!keeper_) {
    co_return;
  }
  for (const auto& t : us_held_) {
    asio::co_spawn(io_, run_us_reclaim(t), asio::detached);
  }
  us_held_.clear();
  seqp::socket ev(io_);
  {
    asio::error_code ec;
    ev.assign(seqp(AF_UNIX, 0), keeper_->take_events().release(), ec);
    if (ec) {
      log_.error("userstack keeper events: " + ec.message());
      co_return;
    }
  }
  for (;;) {
    auto [ec] = co_await ev.async_wait(asio::socket_base::wait_read, as_tuple_aw);
    if (ec) {
      co_return;  // shut down
    }
    auto p = recv_packet(ev.native_handle());
    if (!p && p.error().code == std::errc::resource_unavailable_try_again) {
      continue;
    }
    if (!p) {
      log_.error("userstack: the keeper of " + cfg_.tun + " is gone (" + p.error().message() +
                 "): its connections are lost; new ones are not served until an agent "
                 "restarts it");
      keeper_.reset();
      co_return;
    }
    auto ts = p->msg.str(Tag::tuple);
    auto t = ts ? FourTuple::parse(*ts) : Result<FourTuple>(ts.error());
    if (!t) {
      continue;
    }
    if (p->msg.type() == keeper::kAccepted && p->fd.valid()) {
      us_accept(*t, std::move(p->fd));
    } else if (p->msg.type() == keeper::kEnded) {
      us_ended(*t, p->msg.str_or(Tag::text, "finished"));
    }
  }
}

void Agent::us_accept(const FourTuple& t, UniqueFd fd) {
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
  const auto reset = [&](const std::string& why) {
    log_.info("userstack: " + key + " reset: " + why);
    ++metrics_.us_refused;
    fd.reset();
    if (keeper_) {
      (void)keeper_->call(Message(keeper::kReset).add(Tag::tuple, key));
    }
  };
  if (!server || flows_.count(key) != 0) {
    reset(sp == cfg_.service_ports.end()
              ? "no service for port " + std::to_string(t.local.port) + " (--service-port)"
          : server ? "the tuple is already served here"
                   : "no server of service " + sp->second + " is registered");
    return;
  }
  const std::uint64_t id = new_adopt_id(*server);
  Message a(MsgType::adopt);
  a.add_u64(Tag::conn_id, id).add(Tag::tuple, key).add(Tag::state, std::vector<std::byte>{});
  if (auto s = send_packet(server->sock->native_handle(), a, fd.get()); !s) {
    reset("handing it to service " + sp->second + ": " + s.error().message());
    return;
  }
  FlowRec r;
  r.tuple = t;
  r.session = server;
  r.conn_id = id;
  r.service = sp->second;
  r.userstack = true;
  flows_[key] = std::move(r);
  server->conns[id] = key;
  us_tuples_.insert(key);
  ++metrics_.us_accepted;
  log_.debug("userstack: " + key + " handed to service " + sp->second + " as conn " +
             std::to_string(id));
}

void Agent::us_ended(const FourTuple& t, const std::string& how) {
  const std::string key = t.to_string();
  if (us_tuples_.erase(key) == 0) {
    return;
  }
  auto f = flows_.find(key);
  if (f != flows_.end() && f->second.userstack && !f->second.migrating) {
    if (auto s = f->second.session.lock(); s) {
      s->conns.erase(f->second.conn_id);
    }
    flows_.erase(f);
  }
  ++metrics_.us_finished;
  log_.debug("userstack: " + key + " " + how);
}

void Agent::us_status(JsonWriter& j) {
  if (method_ != "userstack") {
    return;
  }
  JsonWriter a;
  a.begin_object();
  a.kv("tun", cfg_.tun);
  a.kv("keeper", keeper_ != nullptr);
  a.kv("accepted", metrics_.us_accepted);
  a.kv("refused", metrics_.us_refused);
  a.kv("finished", metrics_.us_finished);
  a.kv("connections", static_cast<std::uint64_t>(us_tuples_.size()));
  a.end_object();
  std::string doc = a.str();
  if (keeper_) {
    // The keeper's counters and flows (lwIP state, queues, bytes each way), in the same object.
    if (auto r = keeper_->call(Message(keeper::kStatus)); r) {
      const std::string k = r->msg.str_or(Tag::text, "{}");
      if (k.size() > 2 && k.front() == '{') {
        doc.pop_back();
        doc += "," + k.substr(1);
      }
    }
  }
  j.raw("userstack", doc);
}

void Agent::us_stop() {
  // The keeper and its connections stay: a later run of the agent finds them again.
  keeper_.reset();
}

}  // namespace rendr::agents
