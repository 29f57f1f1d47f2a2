// SPDX-License-Identifier: Apache-2.0
// rendr-agent: reclaim - finish a move an earlier run of this agent froze and then died on. The
// server's Session hands such a connection over when it registers again (MsgType::reclaim, the
// socket still in repair mode); the I/O-free Reclaim core (reclaim.hpp) decides, this file runs
// its steps: QUERY every host peer by tuple, steer back, thaw and return, or release.
#include "agent_internal.hpp"

#include <rendr/agents/reclaim.hpp>

#include "us_keeper.hpp"

namespace rendr::agents {

namespace {

constexpr auto kReclaimBudget = std::chrono::seconds(30);
constexpr auto kReclaimRetry = std::chrono::seconds(1);

}  // namespace

void Agent::on_reclaim(AppSession& s, Packet& p) {
  const Message& m = p.msg;
  auto id = m.u64(Tag::conn_id);
  if (!id || !p.fd.valid()) {
    log_.warn("session " + std::to_string(s.id) + ": malformed reclaim");
    return;
  }
  auto t = FourTuple::of_socket(p.fd.get());
  if (!t) {
    log_.warn("session " + std::to_string(s.id) + ": reclaim of conn " + std::to_string(*id) +
              ": " + t.error().message());
    return;  // the server keeps its duplicate: nothing changes for it
  }
  const std::string key = t->to_string();
  if (reclaiming_.contains(key)) {
    return;  // already on it (a server that registered twice)
  }
  std::vector<std::byte> state;
  if (const auto* st = m.get(Tag::state); st != nullptr) {
    state = *st;
  }
  auto frozen = repairer_.adopt_frozen(std::move(p.fd));
  if (!frozen) {
    log_.warn("reclaim " + key + ": " + frozen.error().message() +
              (tcp_repair_ok_ ? "" : " (this agent cannot use TCP_REPAIR: " +
                                         tcp_repair_error_ + "; the server keeps it frozen)"));
    return;
  }
  auto sit = sessions_.find(s.id);
  if (sit == sessions_.end()) {
    return;
  }
  reclaiming_.insert(key);
  ++metrics_.reclaims;
  log_.info("reclaim " + key + " (conn " + std::to_string(*id) +
            "): frozen by an earlier run of this agent; asking the peers where its move got to");
  asio::co_spawn(io_,
                 run_reclaim(sit->second, *id, *t, std::move(*frozen), std::move(state)),
                 asio::detached);
}

awaitable<PeerVerdict> Agent::query_tuple(const std::string& peer, const FourTuple& t) {
  const auto deadline = Clock::now() + ms(cfg_.step_timeout_ms);
  auto c = co_await take_live(peer);
  if (!c) {
    log_.warn("reclaim " + t.to_string() + ": peer " + peer + ": " + c.error().message());
    co_return PeerVerdict::unreachable;
  }
  auto r = co_await rpc(**c, Message(MsgType::query).add(Tag::tuple, t.to_string()), deadline);
  if (!r || r->type() != MsgType::mig_state) {
    log_.warn("reclaim " + t.to_string() + ": peer " + peer + ": " +
              (r ? error_of(*r, "query").message() : r.error().message()));
    co_return PeerVerdict::unreachable;
  }
  give_back(std::move(*c));
  const std::string st = r->str_or(Tag::text, "unknown");
  log_.info("reclaim " + t.to_string() + ": peer " + peer + " says " + st);
  if (st == "committed") {
    co_return PeerVerdict::committed;
  }
  // Staged there by another agent: not ours to decide; asked again until the budget ends.
  co_return st == "aborted" || st == "unknown" ? PeerVerdict::not_here : PeerVerdict::unreachable;
}

awaitable<std::string> Agent::reclaim_steps(FourTuple t, std::function<Status()> thaw,
                                            std::function<void()> release) {
  const std::string key = t.to_string();
  std::vector<std::string> hosts;
  for (const auto& [name, addr] : cfg_.peers) {
    if (name != cfg_.gateway) {
      hosts.push_back(name);
    }
  }
  Reclaim core(hosts.size(), !cfg_.gateway.empty(), Clock::now(), kReclaimBudget, kReclaimRetry);
  while (!core.done()) {
    const Reclaim::Next n = core.next();
    switch (n.step) {
      case ReclaimStep::query_peers: {
        std::vector<PeerVerdict> v;
        for (const auto& h : hosts) {
          PeerVerdict pv = co_await query_tuple(h, t);
          v.push_back(pv);
        }
        core.on_answers(v, Clock::now());
        break;
      }
      case ReclaimStep::wait: {
        asio::steady_timer w(io_, n.deadline);
        co_await w.async_wait(as_tuple_aw);
        core.on_waited(Clock::now());
        break;
      }
      case ReclaimStep::steer_back: {
        Result<Message> g = make_error(std::errc::not_connected, "no gateway");
        auto gw = co_await take_peer(cfg_.gateway);
        if (gw) {
          Message sr(MsgType::steer);
          sr.add_u64(Tag::mig, 0).add(Tag::backend, cfg_.name).add(Tag::tuple, key);
          g = co_await rpc(**gw, sr, Clock::now() + ms(cfg_.step_timeout_ms));
        } else {
          g = std::move(gw).take_error();
        }
        const bool ok = g && g->type() == MsgType::steered;
        if (ok && gw) {
          give_back(std::move(*gw));
        }
        core.on_steer(ok, ok ? std::string() : g ? error_of(*g, "steer").message()
                                                 : g.error().message(),
                      Clock::now());
        break;
      }
      case ReclaimStep::thaw: {
        const Status st = thaw();
        core.on_thaw(st.ok(), st ? std::string() : st.error().message());
        break;
      }
      case ReclaimStep::release:
        release();
        core.on_released();
        break;
      case ReclaimStep::hold:
      case ReclaimStep::finished:
        break;
    }
  }
  log_.info("reclaim " + key + ": " + core.outcome() + " after " +
            std::to_string(core.queries()) + " query round(s)");
  co_return core.outcome();
}

awaitable<void> Agent::run_reclaim(std::shared_ptr<AppSession> session, std::uint64_t conn_id,
                                   FourTuple t, repair::RepairSocket sock,
                                   std::vector<std::byte> state) {
  const std::string key = t.to_string();
  const std::string service = session ? session->service : std::string();
  std::weak_ptr<AppSession> ws = session;
  session.reset();
  // Nothing leaves or reaches the socket while the peers are asked (the restarted freeze
  // filters dropped the previous run's entries).
  if (freezer_) {
    cancel_freeze(t);
    (void)freezer_->freeze(t);
  }
  UniqueFd live;
  std::function<Status()> thaw = [&]() -> Status {
    auto fd = repairer_.thaw(std::move(sock));
    if (fd) {
      live = std::move(*fd);
    }
    if (freezer_) {
      cancel_freeze(t);
    }
    return fd ? Status{} : Status(fd.error());
  };
  std::function<void()> release = [&] {
    repairer_.release(std::move(sock));
    schedule_unfreeze(t);
  };
  const std::string outcome = co_await reclaim_steps(t, thaw, release);
  reclaiming_.erase(key);
  auto s = ws.lock();
  const bool to_server = s && s->alive;
  if (outcome == "released") {
    ++metrics_.reclaims_released;
    if (to_server) {
      (void)send_packet(s->sock->native_handle(),
                        Message(MsgType::export_done).add_u64(Tag::conn_id, conn_id));
    }
  } else if (live.valid()) {
    ++metrics_.reclaims_returned;
    Message rt(MsgType::returned);
    rt.add_u64(Tag::conn_id, conn_id).add(Tag::state, state);
    if (to_server && send_packet(s->sock->native_handle(), rt, live.get()).ok()) {
      FlowRec r;
      r.tuple = t;
      r.session = s;
      r.conn_id = conn_id;
      r.service = s->service;
      flows_[key] = std::move(r);
      s->conns[conn_id] = key;
    } else if (!to_server) {
      adopt_or_queue(service, Orphan{t, std::move(live), std::move(state)});
    }
  } else {
    // Held (indeterminate) or lost: the server keeps its duplicate (ours closes silently, the
    // socket is still in repair mode) and the freeze stays: nothing may answer for a
    // connection that may live elsewhere. A later run of this agent reclaims it again.
    ++metrics_.reclaims_held;
  }
}

awaitable<void> Agent::run_us_reclaim(FourTuple t) {
  const std::string key = t.to_string();
  if (reclaiming_.contains(key)) {
    co_return;
  }
  reclaiming_.insert(key);
  ++metrics_.reclaims;
  log_.info("reclaim " + key + ": captured in the userstack keeper by an unfinished move of an "
            "earlier run; asking the peers where the move got to");
  bool thawed = false;
  std::function<Status()> thaw = [&]() -> Status {
    if (!keeper_) {
      return make_error(std::errc::connection_reset, "the userstack keeper is gone");
    }
    auto r = keeper_->call(Message(keeper::kThaw).add(Tag::tuple, key));
    if (!r) {
      return r.error();
    }
    (void)keeper_->call(Message(keeper::kUnfreeze).add(Tag::tuple, key));
    thawed = true;
    return {};
  };
  std::function<void()> release = [&] {
    if (keeper_) {
      (void)keeper_->call(Message(keeper::kRelease).add(Tag::tuple, key));
    }
  };
  const std::string outcome = co_await reclaim_steps(t, thaw, release);
  reclaiming_.erase(key);
  if (outcome == "released") {
    // It lives on a peer: its server here reads EOF on its end of the bridge.
    ++metrics_.reclaims_released;
    us_tuples_.erase(key);
  } else if (thawed) {
    ++metrics_.reclaims_returned;  // its server kept the fd: the bridge pumps again
    us_tuples_.insert(key);
    if (auto f = flows_.find(key); f != flows_.end()) {
      f->second.userstack = true;
    }
  } else {
    ++metrics_.reclaims_held;  // stays captured in the keeper; a later run tries again
  }
}

}  // namespace rendr::agents
