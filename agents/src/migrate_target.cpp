// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the target side of a migration - offers staged here, COMMIT, ABORT, expiry.
// StagedMigration (rendr/agents/target_migration.hpp) decides what each of them does; this file
// does the restores, activations and releases it names.
#include "agent_internal.hpp"

namespace rendr::agents {

Message Agent::on_offer(PeerConn& c, const Message& m) {
  auto mig = m.u64(Tag::mig);
  auto svc = m.str(Tag::service);
  auto ids = m.u64s(Tag::conn_id);
  auto snaps = m.all(Tag::snapshot);
  auto states = m.all(Tag::state);
  auto reject = [&](const std::string& why) {
    ++metrics_.offers_rejected;
    log_.warn("offer from " + c.peer_name + " rejected: " + why);
    Message f(MsgType::peer_fail);
    if (mig) {
      f.add_u64(Tag::mig, *mig);
    }
    return f.add(Tag::text, why);
  };
  OfferShape shape;
  shape.has_mig = mig.ok();
  shape.has_service = svc.ok();
  if (ids) {
    shape.conn_ids = ids->size();
  }
  shape.snapshots = snaps.size();
  shape.states = states.size();
  std::optional<std::string> staged_from;
  if (mig) {
    if (auto it = staged_.find(*mig); it != staged_.end()) {
      staged_from = it->second->core.from();
    }
  }
  // A userstack target restores into its lwIP; a native one needs TCP_REPAIR.
  if (std::string why = check_offer(shape, cfg_.name, tcp_repair_ok_ || keeper_ != nullptr,
                                    tcp_repair_error_,
                                    mig ? *mig : 0, staged_from);
      !why.empty()) {
    return reject(why);
  }
  // Decode everything before touching the kernel: a tampered or truncated snapshot rejects
  // the whole offer (OfferIntake gives the order).
  OfferIntake intake(snaps.size());
  const auto t_decode = Clock::now();
  std::vector<TcpSnapshot> decoded;
  decoded.reserve(snaps.size());
  IntakeNext next = intake.start();
  while (next.action == IntakeAction::decode) {
    auto s = decode_snapshot(*snaps[next.index]);
    if (!s) {
      next = intake.on_decoded(s.error().message());
      continue;
    }
    decoded.push_back(std::move(*s));
    next = intake.on_decoded({});
  }
  if (next.action == IntakeAction::reject) {
    return reject(next.why);
  }
  const auto t_stage = Clock::now();
  std::vector<std::unique_ptr<StagedFlow>> sockets;
  std::vector<std::vector<std::byte>> app_states;
  // Optional (older sources send none): one peer_ack hint per connection.
  std::vector<std::uint64_t> hints;
  if (auto h = m.u64s(Tag::peer_ack); h && h->size() == decoded.size()) {
    hints = std::move(*h);
  }
  // Optional too: what the source's freeze dropped from the server, per connection.
  std::vector<std::uint64_t> dropped;
  if (auto d = m.u64s(Tag::server_dropped); d && d->size() == decoded.size()) {
    dropped = std::move(*d);
  }
  while (next.action == IntakeAction::restore) {
    const std::size_t i = next.index;
    // A flow that left this host earlier may still have its grace freeze: lift it first.
    cancel_freeze(decoded[i].tuple);
    repair::RestoreOptions ro;
    if (i < hints.size()) {
      ro.peer_ack = decode_peer_ack(hints[i]);
    }
    ro.sent_into_freeze = i < dropped.size() && dropped[i] != 0;
    Result<std::unique_ptr<StagedFlow>> st =
        make_error(std::errc::io_error, "restore failed (fault injected)");
    if (!(i == 1 && fault("fail_second_restore"))) {
      st = keeper_ ? us_staged_flow(std::move(decoded[i]), *svc, ro.peer_ack)
                  : native_staged_flow(std::move(decoded[i]), ro);
    }
    if (!st) {
      ++metrics_.restores_failed;
      for (auto& s : sockets) {
        s->release();  // silent; lifts what froze here
      }
      sockets.clear();
      next = intake.on_restored(st.error().message());
      continue;
    }
    sockets.push_back(std::move(*st));
    app_states.push_back(*states[i]);
    next = intake.on_restored({});
  }
  if (next.action == IntakeAction::reject) {
    // The flows restored before the failing one were released above (their freeze here
    // lifted, or their tuples would stay blackholed: the connection lives on at the source).
    return reject(next.why);
  }
  auto sm = std::make_unique<StagedMig>(
      StagedMigration(*mig, c.peer_name, Clock::now(), ms(cfg_.staged_timeout_ms)));
  sm->service = *svc;
  sm->channel = &c;
  sm->sockets = std::move(sockets);
  sm->states = std::move(app_states);
  sm->expiry = std::make_unique<asio::steady_timer>(io_, sm->core.deadline());
  std::uint64_t id = *mig;
  sm->expiry->async_wait([this, id](asio::error_code ec) {
    if (ec) {
      return;
    }
    auto it = staged_.find(id);
    if (it != staged_.end() && it->second->core.on_timer(Clock::now()) == TargetVerdict::release) {
      abort_staged(*it->second, "no commit within the staged timeout");
    }
  });
  log_.info("migration " + std::to_string(id) + " from " + c.peer_name + ": staged " +
            std::to_string(sm->sockets.size()) + " socket(s) for " + *svc + " (decode " +
            fmt_ms(t_decode, t_stage) + " ms, restore " + fmt_ms(t_stage, Clock::now()) + " ms)");
  staged_[id] = std::move(sm);
  return Message(MsgType::ready).add_u64(Tag::mig, id);
}

void Agent::abort_staged(StagedMig& sm, const std::string& why) {
  log_.warn("migration " + std::to_string(sm.core.mig()) + " aborted here: " + why);
  for (auto& s : sm.sockets) {
    moved_in_.remember(s->tuple().to_string(), "aborted");
    s->release_staged();
  }
  sm.sockets.clear();
  remember_outcome(sm.core.mig(), "aborted");
  std::uint64_t id = sm.core.mig();
  asio::post(io_, [this, id] { staged_.erase(id); });
}

Message Agent::on_abort(std::uint64_t mig, const std::string& why) {
  auto it = staged_.find(mig);
  if (it != staged_.end() && it->second->core.on_abort() == TargetVerdict::release) {
    abort_staged(*it->second, why);
  }
  return Message(MsgType::aborted).add_u64(Tag::mig, mig);
}

Message Agent::on_commit(const Message& m) {
  auto mig = m.u64(Tag::mig);
  if (!mig) {
    return fail_msg(mig.error());
  }
  auto it = staged_.find(*mig);
  if (it == staged_.end()) {
    return Message(MsgType::peer_fail)
        .add_u64(Tag::mig, *mig)
        .add(Tag::text, commit_refusal_unknown(*mig));
  }
  if (it->second->core.on_commit() != TargetVerdict::activate) {
    return Message(MsgType::peer_fail)
        .add_u64(Tag::mig, *mig)
        .add(Tag::text, it->second->core.commit_refusal());
  }
  StagedMig& sm = *it->second;
  sm.expiry->cancel();
  std::uint64_t adopted = 0;
  std::string warnings;
  // Optional (older sources send none): one peer_ack hint per connection, in offer order.
  std::vector<std::uint64_t> hints;
  if (auto h = m.u64s(Tag::peer_ack); h && h->size() == sm.sockets.size()) {
    hints = std::move(*h);
  }
  // Replay packets from the source, per connection, oldest first.
  std::vector<std::vector<std::vector<std::byte>>> replay(sm.sockets.size());
  for (const auto* v : m.all(Tag::replay)) {
    if (v->size() <= 4) {
      continue;
    }
    const std::uint32_t idx = (static_cast<std::uint32_t>((*v)[0]) << 24) |
                              (static_cast<std::uint32_t>((*v)[1]) << 16) |
                              (static_cast<std::uint32_t>((*v)[2]) << 8) |
                              static_cast<std::uint32_t>((*v)[3]);
    if (idx < replay.size()) {
      replay[idx].emplace_back(v->begin() + 4, v->end());
    }
  }
  for (std::size_t i = 0; i < sm.sockets.size(); ++i) {
    FourTuple t = sm.sockets[i]->tuple();
    moved_in_.remember(t.to_string(), "committed");
    std::optional<std::uint32_t> peer_acked;
    if (i < hints.size()) {
      if (auto pa = decode_peer_ack(hints[i])) {
        peer_acked = pa->ack;
      }
    }
    {
      const auto& snap = sm.sockets[i]->snapshot();
      log_.info("activate " + t.to_string() + ": " + std::to_string(snap.send_unacked()) +
                " bytes unacked, " +
                std::to_string(snap.send_queue.size() - snap.send_unacked()) +
                " unsent, peer ack (source) " +
                (peer_acked ? std::to_string(static_cast<std::int32_t>(*peer_acked - snap.send_seq)) +
                                  " past snd_una"
                            : std::string("unknown")));
    }
    auto fd = sm.sockets[i]->activate(
        i < hints.size() ? decode_peer_ack(hints[i]) : std::nullopt, std::move(replay[i]));
    if (!fd) {
      // Past repair-off nothing can be undone; report it loudly.
      warnings += fd.error().message() + "; ";
      continue;
    }
    ++adopted;
    adopt_or_queue(sm.service,
                   Orphan{t, std::move(*fd), std::move(sm.states[i]), keeper_ != nullptr});
  }
  sm.sockets.clear();
  remember_outcome(sm.core.mig(), "committed");
  metrics_.flows_adopted += adopted;
  log_.info("migration " + std::to_string(sm.core.mig()) + " committed: " + std::to_string(adopted) +
            " connection(s) live here" + (warnings.empty() ? "" : " (errors: " + warnings + ")"));
  std::uint64_t id = sm.core.mig();
  asio::post(io_, [this, id] { staged_.erase(id); });
  Message r(MsgType::committed);
  r.add_u64(Tag::mig, id).add_u64(Tag::adopted, adopted);
  if (!warnings.empty()) {
    r.add(Tag::text, warnings);
  }
  return r;
}

Message Agent::on_query_tuple(const PeerConn& c, const FourTuple& t) {
  const std::string key = t.to_string();
  for (auto& [id, sm] : staged_) {
    for (const auto& s : sm->sockets) {
      if (s->tuple().to_string() != key) {
        continue;
      }
      if (sm->core.from() != c.peer_name) {
        return Message(MsgType::mig_state).add(Tag::text, "staged");
      }
      // The source that staged it restarted and reclaims the connection: the move cannot
      // commit any more (that run is gone), so it ends here before the answer.
      if (sm->core.on_abort() == TargetVerdict::release) {
        abort_staged(*sm, "the source restarted and reclaims " + key);
      }
      return Message(MsgType::mig_state).add_u64(Tag::mig, id).add(Tag::text, "aborted");
    }
  }
  // A connection a server here tracks lives here, whatever this run remembers: after a
  // restart of this agent too (its servers track their connections again on their own).
  if (auto f = flows_.find(key); f != flows_.end() && !f->second.ended) {
    return Message(MsgType::mig_state).add(Tag::text, "committed");
  }
  return Message(MsgType::mig_state).add(Tag::text, moved_in_.state_of(key));
}

}  // namespace rendr::agents
