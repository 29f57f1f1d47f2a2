// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the source side of one migration batch.
#include "agent_internal.hpp"

namespace rendr::agents {

// ---------------------------------------------------------------------------------------------
// migration (source side)

awaitable<Message> Agent::migrate(const std::shared_ptr<seqp::socket>& ctl, const Message& req,
                                  bool one_batch) {
  const auto t0 = Clock::now();
  MigrationFsm fsm;
  const std::uint64_t mig = mig_prefix_ | (next_mig_++ & 0xffffffffu);
  auto to = req.str(Tag::to);
  if (!to || to->empty()) {
    co_return fail_msg("--to AGENT is required");
  }
  if (*to == cfg_.name) {
    co_return fail_msg("the flows are already on " + cfg_.name);
  }
  if (!tcp_repair_ok_) {
    co_return fail_msg("TCP_REPAIR unavailable here: " + tcp_repair_error_);
  }
  if (!freezer_ && !cfg_.no_freeze) {
    co_return fail_msg("the eBPF freeze is not loaded here (" + freeze_error_ +
                       "); without it the source could answer the peer mid-migration");
  }
  // Select the flows.
  std::vector<FlowRec*> sel;
  std::vector<std::string> ended;  // flows that ended before they could move: "tuple: why"
  const bool all = req.get(Tag::all) != nullptr;
  const std::string svc = req.str_or(Tag::service, "");
  for (const auto& ts : req.strs(Tag::tuple)) {
    auto t = FourTuple::parse(ts);
    if (!t) {
      co_return fail_msg(t.error());
    }
    auto it = flows_.find(t->to_string());
    if (it == flows_.end() && one_batch) {
      ended.push_back(t->to_string() + ": closed by the server (before its batch)");
      continue;
    }
    if (it == flows_.end()) {
      co_return fail_msg("no tracked flow " + t->to_string() + " on " + cfg_.name +
                         " (see `rendrctl flows`)");
    }
    sel.push_back(&it->second);
  }
  if (all || !svc.empty()) {
    for (auto& [k, f] : flows_) {
      if (!f.migrating && (all || f.service == svc)) {
        sel.push_back(&f);
      }
    }
  }
  std::sort(sel.begin(), sel.end());
  sel.erase(std::unique(sel.begin(), sel.end()), sel.end());
  if (sel.empty() && ended.empty()) {
    co_return fail_msg("no flows selected");
  }
  // Flows that ended before the batch starts are not moved but reported, with why: entries
  // whose server went away, or whose socket no process holds (closed without an untrack).
  {
    std::optional<std::set<std::string>> held;
    if (std::any_of(sel.begin(), sel.end(), [](FlowRec* f) {
          auto s = f->session.lock();
          return s && s->same_netns && !f->migrating;
        })) {
      if (auto h = held_tcp_sockets(); h) {
        held = std::move(*h);
      } else {
        log_.warn("migrate: cannot check the flows against their sockets: " +
                  h.error().message());
      }
    }
    std::erase_if(sel, [&](FlowRec* f) {
      if (f->migrating) {
        return false;  // refused below
      }
      auto s = f->session.lock();
      std::string why;
      if (!s || !s->alive) {
        why = "its server is gone";
      } else if (held && s->same_netns && held->count(f->tuple.to_string()) == 0) {
        why = "closed (no process holds its socket)";
      } else {
        return false;
      }
      const std::string key = f->tuple.to_string();
      ended.push_back(key + ": " + why);
      if (s) {
        s->conns.erase(f->conn_id);
      }
      flows_.erase(key);
      return true;
    });
  }
  std::string service = sel.empty() ? req.str_or(Tag::service, "") : sel.front()->service;
  for (auto* f : sel) {
    if (f->migrating) {
      co_return fail_msg(f->tuple.to_string() + " is already migrating");
    }
    if (f->service != service) {
      co_return fail_msg("one batch moves flows of one service (" + service + " and " +
                         f->service + " selected)");
    }
  }
  if (!one_batch && !sel.empty()) {
    const FdRoom room = fd_room();
    if (room.flows == 0) {
      co_return fail_msg("no room for a batch under this agent's descriptor limit "
                         "(RLIMIT_NOFILE " + std::to_string(room.limit) + ", " +
                         std::to_string(room.open) + " open, 2 needed per connection); "
                         "raise the agent's limit");
    }
    if (sel.size() > room.flows) {
      std::vector<std::string> keys;
      for (auto* f : sel) {
        keys.push_back(f->tuple.to_string());
      }
      co_return co_await migrate_in_batches(ctl, *to, service, std::move(keys), std::move(ended));
    }
  }
  // Set when every selected flow ended before it could move: nothing is frozen or moved.
  bool empty_batch = sel.empty();
  std::size_t n = sel.size();
  std::vector<FourTuple> tuples;
  for (auto* f : sel) {
    f->migrating = true;
    tuples.push_back(f->tuple);
  }
  progress(ctl, "migration " + std::to_string(mig) + ": " + std::to_string(n) + " flow(s) of " +
                    service + " from " + cfg_.name + " to " + *to);

  // Channels first: a TLS handshake must not happen while traffic is frozen.
  std::unique_ptr<PeerConn> chan;
  std::unique_ptr<PeerConn> gw;
  std::string error;
  std::vector<ExportSlot> slots(n);
  std::vector<std::vector<std::byte>> encoded(n);
  std::vector<repair::RepairSocket> frozen(n);
  std::vector<bool> have_frozen(n, false);
  std::vector<bool> froze(n, false);
  std::uint64_t bytes_carried = 0;
  double frozen_ms = 0;
  Clock::time_point freeze_t0{};
  std::map<std::string, double> step_ms;
  std::uint64_t replayed_total = 0;  // packets the freeze dropped, shipped for replay on B
  bool steer_sent = false;
  // steer_msg asks the gateway to send every flow of this migration to |backend|.
  auto steer_msg = [&](const std::string& backend, MsgType type = MsgType::steer) {
    Message sr(type);
    sr.add_u64(Tag::mig, mig).add(Tag::backend, backend);
    for (const auto& t : tuples) {
      sr.add(Tag::tuple, t.to_string());
    }
    return sr;
  };
  std::string commit_warnings;
  auto step_deadline = [&] { return Clock::now() + ms(cfg_.step_timeout_ms); };

  fsm.on(MigEvent::start);
  // take_live: a pooled channel, checked with a HELLO round trip (a peer may have restarted),
  // else a fresh one.
  auto take_live = [&](const std::string& name) -> awaitable<Result<std::unique_ptr<PeerConn>>> {
    auto c = co_await take_peer(name);
    if (c) {
      auto h = co_await rpc(**c, Message(MsgType::hello).add(Tag::name, cfg_.name),
                            Clock::now() + ms(cfg_.step_timeout_ms));
      if (h && h->type() == MsgType::hello) {
        co_return std::move(*c);
      }
      c = co_await connect_peer(name);
    }
    co_return std::move(c);
  };
  do {
    if (empty_batch) {
      break;
    }
    auto c = co_await take_live(*to);
    if (!c) {
      error = c.error().message();
      break;
    }
    chan = std::move(*c);
    if (!cfg_.gateway.empty()) {
      auto g = co_await take_live(cfg_.gateway);
      if (!g) {
        error = g.error().message();
        break;
      }
      gw = std::move(*g);
      // Ask before anything is frozen whether the gateway can steer every flow to the target
      // (a VIP it steers, a backend it knows): a flow it cannot steer would be restored on the
      // target and then reset by this host.
      auto cr = co_await rpc(*gw, steer_msg(*to, MsgType::steer_check), step_deadline());
      if (!cr) {
        error = cr.error().message();
        break;
      }
      if (cr->type() != MsgType::steered) {
        error = error_of(*cr, "gateway " + cfg_.gateway + " cannot steer this batch").message();
        break;
      }
    }
    step_ms["connect"] = ms_since(t0);

    // 1. Export: each server stops using its connections and hands over fd + state.
    auto te = Clock::now();
    asio::steady_timer notify(io_);
    std::map<std::uint64_t, std::vector<std::uint64_t>> by_session;
    std::vector<std::shared_ptr<AppSession>> sess(n);
    for (std::size_t i = 0; i < n; ++i) {
      sess[i] = sel[i]->session.lock();
      if (sel[i]->ended) {  // untracked while the channels were set up
        slots[i].done = true;
        slots[i].ended = true;
        slots[i].error = sel[i]->ended_why;
        continue;
      }
      if (!sess[i] || !sess[i]->alive) {
        slots[i].done = true;
        slots[i].error = "the server's session closed";
        continue;
      }
      sess[i]->pending[sel[i]->conn_id] = &slots[i];
      sess[i]->export_notify = &notify;
      by_session[sess[i]->id].push_back(sel[i]->conn_id);
    }
    for (auto& [sid, ids] : by_session) {
      Message er(MsgType::export_request);
      er.add_u64(Tag::mig, mig);
      for (auto id : ids) {
        er.add_u64(Tag::conn_id, id);
      }
      auto s = sessions_.find(sid);
      if (s == sessions_.end() || !send_packet(s->second->sock->native_handle(), er).ok()) {
        error = "export request to the " + service + " server failed";
      }
    }
    const auto export_deadline = step_deadline();
    while (error.empty()) {
      bool all_done = std::all_of(slots.begin(), slots.end(), [](auto& s) { return s.done; });
      if (all_done || Clock::now() >= export_deadline) {
        break;
      }
      notify.expires_at(export_deadline);
      co_await notify.async_wait(as_tuple_aw);
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (sess[i]) {
        sess[i]->export_notify = nullptr;
        sess[i]->pending.erase(sel[i]->conn_id);
      }
    }
    // Connections that ended before or while they were exported leave the batch; the rest
    // moves on. A refusal counts as such when no process holds the socket any more (the
    // server had closed it without an untrack); any other refusal aborts the batch.
    if (std::any_of(slots.begin(), slots.end(), [](auto& sl) { return sl.refused; })) {
      auto held = held_tcp_sockets();
      for (std::size_t i = 0; held && i < n; ++i) {
        if (slots[i].refused && sess[i] && sess[i]->same_netns &&
            held->count(tuples[i].to_string()) == 0) {
          slots[i].ended = true;
          slots[i].error += "; no process holds its socket";
        }
      }
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (slots[i].fd.valid() && socket_closed(slots[i].fd.get())) {
        slots[i].ended = true;
        slots[i].error = "closed (reset by the peer, or both sides closed it) before it moved";
      }
      if (slots[i].ended) {
        continue;
      }
      if (error.empty() && !slots[i].done) {
        error = "the " + service + " server did not export " + tuples[i].to_string() +
                " within " + std::to_string(cfg_.step_timeout_ms) + " ms";
      } else if (error.empty() && !slots[i].error.empty()) {
        error = tuples[i].to_string() + ": " + slots[i].error;
      }
    }
    std::size_t kept = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (!slots[i].ended) {
        if (kept != i) {
          sel[kept] = sel[i];
          tuples[kept] = tuples[i];
          slots[kept] = std::move(slots[i]);
        }
        ++kept;
        continue;
      }
      ended.push_back(tuples[i].to_string() + ": " + slots[i].error);
      if (sess[i] && sess[i]->alive) {
        if (slots[i].fd.valid()) {
          // The server gave it away already: the connection left it; the dead socket closes.
          (void)send_packet(sess[i]->sock->native_handle(),
                            Message(MsgType::export_done).add_u64(Tag::conn_id, sel[i]->conn_id));
        }
        sess[i]->conns.erase(sel[i]->conn_id);
      }
      if (auto f = flows_.find(tuples[i].to_string()); f != flows_.end() && &f->second == sel[i]) {
        flows_.erase(f);
      }
    }
    n = kept;
    sel.resize(n);
    tuples.resize(n);
    slots.resize(n);
    encoded.resize(n);
    frozen.resize(n);
    have_frozen.resize(n);
    froze.resize(n);
    fsm.on(MigEvent::exported);
    step_ms["export"] = ms_since(te);
    if (!error.empty()) {
      break;
    }
    if (n == 0) {
      empty_batch = true;
      break;
    }

    // 2. Freeze + checkpoint.
    freeze_t0 = Clock::now();
    for (std::size_t i = 0; i < n && error.empty(); ++i) {
      if (freezer_) {
        cancel_freeze(tuples[i]);
        if (auto fz = freezer_->freeze(tuples[i]); !fz) {
          error = "freeze " + tuples[i].to_string() + ": " + fz.error().message();
          break;
        }
        froze[i] = true;
      }
      auto cp = repairer_.checkpoint(slots[i].fd.get());
      if (!cp) {
        error = cp.error().message();
        break;
      }
      frozen[i] = std::move(cp->socket);
      have_frozen[i] = true;
      bytes_carried += cp->snapshot.send_queue.size() + cp->snapshot.recv_queue.size();
      encoded[i] = encode_snapshot(cp->snapshot);
      if (fault("tamper_snapshot")) {
        encoded[i][encoded[i].size() / 2] ^= std::byte{0x40};
      } else if (fault("truncate_snapshot")) {
        encoded[i].resize(encoded[i].size() - 7);
      }
    }
    step_ms["freeze_checkpoint"] = ms_since(freeze_t0);
    if (!error.empty()) {
      break;
    }
    fsm.on(MigEvent::checkpointed);

    // 3. Ship.
    auto ts = Clock::now();
    Message offer(MsgType::offer);
    offer.add_u64(Tag::mig, mig).add(Tag::service, service);
    for (std::size_t i = 0; i < n; ++i) {
      offer.add_u64(Tag::conn_id, sel[i]->conn_id);
      offer.add(Tag::snapshot, std::move(encoded[i]));
      offer.add(Tag::state, slots[i].state);
      offer.add_u64(Tag::peer_ack, peer_ack_hint(tuples[i]));
    }
    if (fault("cut_during_ship")) {
      auto bytes = offer.encode_framed();
      co_await asio::async_write(chan->stream, asio::buffer(bytes.data(), bytes.size() / 2),
                                 as_tuple_aw);
      asio::error_code ec;
      chan->stream.lowest_layer().close(ec);
      chan->broken = true;
      error = "channel to " + *to + " cut during ship (fault injection)";
      break;
    }
    auto w = co_await write_msg(*chan, offer, step_deadline());
    if (!w) {
      error = w.error().message();
      break;
    }
    fsm.on(MigEvent::shipped);
    step_ms["ship_write"] = ms_since(ts);
    auto rr = co_await read_msg(*chan, step_deadline());
    if (!rr) {
      error = rr.error().message();
      break;
    }
    if (rr->type() != MsgType::ready) {
      error = error_of(*rr, "agent " + *to + " refused the migration").message();
      break;
    }
    fsm.on(MigEvent::ready);
    step_ms["ship_restore"] = ms_since(ts);

    // 4. Steer.
    auto tst = Clock::now();
    if (gw) {
      steer_sent = true;
      auto g = co_await rpc(*gw, steer_msg(*to), step_deadline());
      if (!g) {
        error = g.error().message();
        break;
      }
      if (g->type() != MsgType::steered) {
        error = error_of(*g, "gateway " + cfg_.gateway + " refused to steer").message();
        break;
      }
    }
    fsm.on(MigEvent::steered);
    step_ms["steer"] = ms_since(tst);

    // 5. Commit. From here on A never thaws unless B says it did not commit.
    auto tc = Clock::now();
    Message commit(MsgType::commit);
    commit.add_u64(Tag::mig, mig);
    // What the peer acknowledged while frozen: lets B resend at once only what the peer lacks.
    std::size_t replayed = 0;
    for (std::size_t i = 0; i < tuples.size(); ++i) {
      commit.add_u64(Tag::peer_ack, peer_ack_hint(tuples[i]));
      if (!freezer_) {
        continue;
      }
      // What the peer sent into the freeze: B replays it instead of waiting for a retransmit.
      if (auto pk = freezer_->take_dropped(tuples[i]); pk) {
        for (const auto& p : *pk) {
          std::vector<std::byte> v(4 + p.size());
          const auto idx = static_cast<std::uint32_t>(i);
          v[0] = static_cast<std::byte>(idx >> 24);
          v[1] = static_cast<std::byte>(idx >> 16);
          v[2] = static_cast<std::byte>(idx >> 8);
          v[3] = static_cast<std::byte>(idx);
          std::memcpy(v.data() + 4, p.data(), p.size());
          commit.add(Tag::replay, std::move(v));
          ++replayed;
        }
      }
    }
    replayed_total = replayed;
    auto cw = co_await write_msg(*chan, commit, step_deadline());
    fsm.on(MigEvent::commit_sent);
    std::string commit_error;
    if (cw) {
      auto cr = co_await read_msg(*chan, step_deadline());
      if (cr && cr->type() == MsgType::committed) {
        auto adopted = cr->u64(Tag::adopted);
        if (!adopted || *adopted != n) {
          commit_warnings = "target activated " + (adopted ? std::to_string(*adopted) : "?") +
                            " of " + std::to_string(n) + " connections: " +
                            cr->str_or(Tag::text, "");
        }
        fsm.on(MigEvent::committed);
      } else if (cr) {
        // B answered but did not commit (e.g. it already self-aborted).
        commit_error = error_of(*cr, "commit").message();
        fsm.on(MigEvent::b_aborted);
      } else {
        commit_error = cr.error().message();
        fsm.on(MigEvent::failure);
      }
    } else {
      commit_error = cw.error().message();
      fsm.on(MigEvent::failure);
    }
    // Channel broke after COMMIT: ask B on fresh channels until it answers or time runs out.
    const auto resolve_deadline = Clock::now() + ms(cfg_.commit_resolve_ms);
    while (fsm.state() == MigState::committing && Clock::now() < resolve_deadline) {
      progress(ctl, "commit unconfirmed (" + commit_error + "); asking " + *to);
      auto q = co_await connect_peer(*to);
      if (q) {
        auto a = co_await rpc(**q, Message(MsgType::query).add_u64(Tag::mig, mig),
                              step_deadline());
        if (a && a->type() == MsgType::mig_state) {
          std::string st = a->str_or(Tag::text, "unknown");
          if (st == "committed") {
            fsm.on(MigEvent::committed);
          } else if (st == "aborted") {
            fsm.on(MigEvent::b_aborted);
          } else if (st == "unknown") {
            // B lost its memory (restart): its staged sockets died silently with it, or it had
            // committed. Never thaw here: presume commit (flagged indeterminate).
            fsm.on(MigEvent::b_unreachable);
          } else {
            // Still staged: the COMMIT never arrived; B will self-abort; tell it now.
            (void)co_await rpc(**q, Message(MsgType::abort).add_u64(Tag::mig, mig),
                               step_deadline());
            fsm.on(MigEvent::b_aborted);
          }
          break;
        }
      }
      asio::steady_timer backoff(io_, ms(200));
      co_await backoff.async_wait(as_tuple_aw);
    }
    if (fsm.state() == MigState::committing) {
      fsm.on(MigEvent::b_unreachable);  // presumed commit: never run two copies
    }
    step_ms["commit"] = ms_since(tc);
    if (fsm.state() == MigState::aborting) {
      error = commit_error.empty() ? "agent " + *to + " did not commit" : commit_error;
    }
  } while (false);

  if (fsm.state() == MigState::committed) {
    frozen_ms = ms_since(freeze_t0);
    for (std::size_t i = 0; i < n; ++i) {
      repairer_.release(std::move(frozen[i]));
      schedule_unfreeze(tuples[i]);
      if (auto s = sel[i]->session.lock(); s && s->alive) {
        (void)send_packet(s->sock->native_handle(),
                          Message(MsgType::export_done).add_u64(Tag::conn_id, sel[i]->conn_id));
        s->conns.erase(sel[i]->conn_id);
      }
      flows_.erase(tuples[i].to_string());
    }
    ++metrics_.migrations_committed;
    if (fsm.indeterminate()) {
      ++metrics_.migrations_indeterminate;
    }
    metrics_.flows_migrated_out += n;
    metrics_.frozen_ms_sum += frozen_ms;
    metrics_.frozen_ms_last = frozen_ms;
    metrics_.frozen_ms_max = std::max(metrics_.frozen_ms_max, frozen_ms);
    if (chan && !chan->broken) {
      give_back(std::move(chan));
    }
  } else if (empty_batch) {
    // Every flow ended before anything was frozen: nothing to move, nothing to undo.
    if (chan && !chan->broken) {
      give_back(std::move(chan));
    }
    if (gw && !gw->broken) {
      give_back(std::move(gw));
    }
  } else {
    // Abort: undo in the order the state machine prescribes.
    if (fsm.state() != MigState::aborting) {
      fsm.on(MigEvent::failure);
    }
    std::string undo_errors;
    std::vector<UndoAction> plan = abort_plan(fsm.failed_in());
    // A steer request that failed or went unanswered may have moved some flows already.
    if (steer_sent && std::find(plan.begin(), plan.end(), UndoAction::steer_back) == plan.end()) {
      plan.insert(plan.begin(), UndoAction::steer_back);
    }
    for (UndoAction a : plan) {
      switch (a) {
        case UndoAction::steer_back: {
          if (!gw || gw->broken) {
            auto g = co_await take_peer(cfg_.gateway);
            if (g) {
              gw = std::move(*g);
            }
          }
          // if/else, not ?: : GCC 12 miscompiles a conditional whose arm is a co_await
          // (the awaited temporaries were destroyed twice: the source agent crashed here).
          Result<Message> g = make_error(std::errc::not_connected, "no gateway");
          if (gw) {
            g = co_await rpc(*gw, steer_msg(cfg_.name), step_deadline());
          }
          if (!g || g->type() != MsgType::steered) {
            undo_errors += "steer back failed: " +
                           (g ? error_of(*g, "steer").message() : g.error().message()) + "; ";
          }
          break;
        }
        case UndoAction::tell_b_abort: {
          if (!chan || chan->broken) {
            auto c = co_await connect_peer(*to);
            if (c) {
              chan = std::move(*c);
            } else {
              break;  // B gone: its staged sockets closed silently with it / self-abort
            }
          }
          (void)co_await rpc(*chan, Message(MsgType::abort).add_u64(Tag::mig, mig).add(
                                        Tag::text, error),
                             step_deadline());
          break;
        }
        case UndoAction::thaw:
          for (std::size_t i = 0; i < n; ++i) {
            if (have_frozen[i]) {
              auto fd = repairer_.thaw(std::move(frozen[i]));
              if (!fd) {
                undo_errors += fd.error().message() + "; ";
              }
              // The exported fd is the same socket; the thawed duplicate is closed here.
            }
          }
          break;
        case UndoAction::unfreeze:
          for (std::size_t i = 0; i < n; ++i) {
            if (froze[i] && freezer_) {
              (void)freezer_->unfreeze(tuples[i]);
            }
          }
          break;
        case UndoAction::return_fds:
          for (std::size_t i = 0; i < n; ++i) {
            if (!slots[i].fd.valid()) {
              continue;
            }
            auto s = sel[i]->session.lock();
            if (s && s->alive) {
              Message rt(MsgType::returned);
              rt.add_u64(Tag::conn_id, sel[i]->conn_id).add(Tag::state, slots[i].state);
              if (!send_packet(s->sock->native_handle(), rt, slots[i].fd.get()).ok()) {
                undo_errors += "could not return " + tuples[i].to_string() + "; ";
              }
            } else {
              adopt_or_queue(service, Orphan{tuples[i], std::move(slots[i].fd),
                                             std::move(slots[i].state)});
            }
          }
          break;
      }
    }
    fsm.on(MigEvent::undone);
    for (std::size_t i = 0; i < n; ++i) {
      sel[i]->migrating = false;
      sel[i]->ended = false;
      // A flow whose server went away and whose fd no other server took is not served here.
      if (auto s = sel[i]->session.lock(); !s || !s->alive) {
        flows_.erase(tuples[i].to_string());
      }
    }
    ++metrics_.migrations_aborted;
    if (!undo_errors.empty()) {
      error += " (undo: " + undo_errors + ")";
    }
  }

  metrics_.flows_ended += ended.size();
  const char* result = fsm.state() == MigState::committed ? "committed"
                       : empty_batch                     ? "empty"
                                                         : "aborted";
  JsonWriter j;
  j.begin_object();
  j.kv("migration", mig);
  j.kv("result", result);
  j.kv("indeterminate", fsm.indeterminate());
  j.kv("from", cfg_.name);
  j.kv("to", *to);
  j.kv("service", service);
  j.kv("flows", static_cast<std::uint64_t>(n));
  j.kv("ended", static_cast<std::uint64_t>(ended.size()));
  j.begin_array("ended_flows");  // the first 100, "tuple: why"
  for (std::size_t i = 0; i < ended.size() && i < 100; ++i) {
    j.value(ended[i]);
  }
  j.end_array();
  j.kv("frozen_ms", frozen_ms);
  j.kv("total_ms", ms_since(t0));
  j.kv("bytes_carried", bytes_carried);
  j.kv("replayed_packets", replayed_total);
  j.begin_object("steps_ms");
  for (const auto& [k, v] : step_ms) {
    j.kv(k, v);
  }
  j.end_object();
  j.kv("failed_in", fsm.state() == MigState::committed || empty_batch
                        ? ""
                        : to_string(fsm.failed_in()));
  if (!error.empty()) {
    j.kv("error", error);
  }
  if (!commit_warnings.empty()) {
    j.kv("warnings", commit_warnings);
  }
  j.begin_array("trace");
  for (const auto& t : fsm.trace()) {
    j.value(t);
  }
  j.end_array();
  j.end_object();
  log_.info("migration " + std::to_string(mig) + ": " +
            (fsm.state() == MigState::committed || empty_batch ? std::string(result)
                                                               : "aborted: " + error) +
            (ended.empty() ? "" : " (" + std::to_string(ended.size()) + " ended before moving)"));
  recent_reports_.push_back(j.str());
  if (recent_reports_.size() > 16) {
    recent_reports_.erase(recent_reports_.begin());
  }
  co_return Message(MsgType::json).add(Tag::text, j.str());
}

}  // namespace rendr::agents
