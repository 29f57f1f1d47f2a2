// SPDX-License-Identifier: Apache-2.0
// rendr-agent: embedder sessions - tracked flows, exports (also late ones), adoption.
#include "agent_internal.hpp"

namespace rendr::agents {

void Agent::on_session_message(AppSession& s, Packet& p) {
  const Message& m = p.msg;
  switch (m.type()) {
    case MsgType::track: {
      auto id = m.u64(Tag::conn_id);
      auto ts = m.str(Tag::tuple);
      auto t = ts ? FourTuple::parse(*ts) : Result<FourTuple>(ts.error());
      if (!id || !t) {
        log_.warn("session " + std::to_string(s.id) + ": malformed track");
        return;
      }
      FlowRec r;
      r.tuple = *t;
      r.session = sessions_[s.id];
      r.conn_id = *id;
      r.service = s.service;
      // A connection the userstack keeper serves (tracked again after this agent restarted).
      r.userstack = us_tuples_.contains(t->to_string());
      flows_[t->to_string()] = std::move(r);
      s.conns[*id] = t->to_string();
      return;
    }
    case MsgType::untrack: {
      if (auto id = m.u64(Tag::conn_id); id) {
        conn_gone(s, *id, "closed by the server");
      }
      return;
    }
    case MsgType::exported:
    case MsgType::export_refused: {
      auto id = m.u64(Tag::conn_id);
      if (!id) {
        return;
      }
      auto it = s.pending.find(*id);
      if (it == s.pending.end()) {
        // A refusal after an untrack of the same connection is the usual order when a
        // connection closes while its batch exports (the untrack already ended it).
        const LateExport what = late_export(m.type() == MsgType::export_refused, p.fd.valid(),
                                            s.conns.count(*id) != 0);
        if (what == LateExport::ignore_refusal) {
          log_.debug("session " + std::to_string(s.id) + ": late refusal of conn " +
                     std::to_string(*id));
        } else if (what == LateExport::hand_back) {
          // An export that came after its batch gave up waiting (step timeout): the server
          // no longer serves it, and closing the fd here would end the connection. Hand it back.
          log_.warn("session " + std::to_string(s.id) + ": late export of conn " +
                    std::to_string(*id) + ": returned to the server");
          Message rt(MsgType::returned);
          rt.add_u64(Tag::conn_id, *id);
          if (const auto* st = m.get(Tag::state); st != nullptr) {
            rt.add(Tag::state, *st);
          }
          (void)send_packet(s.sock->native_handle(), rt, p.fd.get());
        } else {
          log_.warn("session " + std::to_string(s.id) + ": unrequested export of conn " +
                    std::to_string(*id));
        }
        return;
      }
      ExportSlot* slot = it->second;
      s.pending.erase(it);
      slot->done = true;
      if (m.type() == MsgType::exported) {
        if (!p.fd.valid()) {
          slot->error = "exported without an fd";
        } else {
          slot->fd = std::move(p.fd);
          const auto* st = m.get(Tag::state);
          if (st != nullptr) {
            slot->state = *st;
          }
        }
      } else {
        slot->refused = true;
        slot->error = "the server refused: " + m.str_or(Tag::text, "(no reason)");
      }
      if (s.export_notify != nullptr) {
        s.export_notify->cancel();
      }
      return;
    }
    case MsgType::reclaim:
      on_reclaim(s, p);
      return;
    default:
      log_.warn("session " + std::to_string(s.id) + ": unexpected " + to_string(m.type()));
  }
}

void Agent::conn_gone(AppSession& s, std::uint64_t id, const std::string& why) {
  auto it = s.conns.find(id);
  if (it != s.conns.end()) {
    auto f = flows_.find(it->second);
    if (f != flows_.end() && f->second.conn_id == id && f->second.session.lock().get() == &s) {
      if (f->second.migrating) {
        f->second.ended = true;
        f->second.ended_why = why;
      } else {
        flows_.erase(f);
      }
    }
    s.conns.erase(it);
  }
  auto p = s.pending.find(id);
  if (p != s.pending.end()) {
    p->second->done = true;
    p->second->ended = true;
    p->second->error = why;
    s.pending.erase(p);
    if (s.export_notify != nullptr) {
      s.export_notify->cancel();
    }
  }
}

std::size_t Agent::reap_closed_flows() {
  bool checkable = false;
  for (const auto& [k, f] : flows_) {
    auto s = f.session.lock();
    if (!f.migrating && (!s || !s->alive || s->same_netns)) {
      checkable = true;
      break;
    }
  }
  if (!checkable) {
    return 0;
  }
  std::vector<FourTuple> ask;
  for (const auto& [k, f] : flows_) {
    ask.push_back(f.tuple);
  }
  auto held = held_tcp_sockets(ask);
  if (!held) {
    log_.warn("cannot check tracked flows against their sockets: " + held.error().message());
  }
  std::size_t n = 0;
  for (auto it = flows_.begin(); it != flows_.end();) {
    auto s = it->second.session.lock();
    // A userstack flow has no kernel socket here (the server holds a bridge fd): it is
    // forgotten when its bridge ends (us_reap) or its server goes.
    const bool gone = !it->second.migrating &&
                      (!s || !s->alive ||
                       (held && s->same_netns && !it->second.userstack &&
                        held->count(it->first) == 0));
    if (!gone) {
      ++it;
      continue;
    }
    log_.info("forgetting " + it->first + " (conn " + std::to_string(it->second.conn_id) +
              "): " + (s && s->alive ? "no process holds its socket" : "its server is gone"));
    if (s) {
      s->conns.erase(it->second.conn_id);
    }
    it = flows_.erase(it);
    ++n;
  }
  metrics_.flows_reaped += n;
  return n;
}

void Agent::drop_session(AppSession& s) {
  s.alive = false;
  for (auto& [id, slot] : s.pending) {
    slot->done = true;
    slot->error = "the server's session closed";
  }
  s.pending.clear();
  if (s.export_notify != nullptr) {
    s.export_notify->cancel();
  }
  for (const auto& [id, key] : s.conns) {
    auto f = flows_.find(key);
    if (f != flows_.end() && !f->second.migrating) {
      flows_.erase(f);
    }
  }
  log_.info("service " + s.service + " session " + std::to_string(s.id) + " closed");
  sessions_.erase(s.id);
}

std::uint64_t Agent::new_adopt_id(const AppSession& s) {
  // A server that registered again after an agent restart tracks its adopted connections
  // under the ids an earlier agent gave them: never hand out one of those twice.
  std::uint64_t id = 0;
  do {
    id = (1ULL << 63) | next_adopt_id_++;
  } while (s.conns.count(id) != 0);
  return id;
}

void Agent::adopt_or_queue(const std::string& service, Orphan o) {
  for (auto& [sid, s] : sessions_) {
    if (s->service != service || !s->alive) {
      continue;
    }
    const std::uint64_t id = new_adopt_id(*s);
    Message a(MsgType::adopt);
    a.add_u64(Tag::conn_id, id).add(Tag::tuple, o.tuple.to_string()).add(Tag::state, o.state);
    if (send_packet(s->sock->native_handle(), a, o.fd.get()).ok()) {
      FlowRec r;
      r.tuple = o.tuple;
      r.session = s;
      r.conn_id = id;
      r.service = service;
      r.userstack = o.userstack;
      flows_[o.tuple.to_string()] = std::move(r);
      s->conns[id] = o.tuple.to_string();
      return;
    }
  }
  log_.warn("no server registered for " + service + ": holding " + o.tuple.to_string() +
            " until one registers");
  orphans_[service].push_back(std::move(o));
}

}  // namespace rendr::agents
