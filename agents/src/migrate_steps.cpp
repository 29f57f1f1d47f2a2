// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the forward steps of a source batch, one method per SrcAction. Each does its I/O
// and says how it went; SourceMigration decides what comes next (migrate_source.cpp).
#include "source_batch.hpp"

#include <rendr/agents/drain.hpp>

#include <linux/sockios.h>
#include <sys/ioctl.h>

namespace rendr::agents {

using A = SrcAction;

awaitable<StepResult> Agent::src_connect(SourceBatch& b, SrcAction which) {
  // Channels first: a TLS handshake must not happen while traffic is frozen.
  const std::string& name = which == A::connect_target ? b.to : cfg_.gateway;
  const auto tc = Clock::now();
  auto c = co_await take_live(name);
  b.step_ms[which == A::connect_target ? "channel_target" : "channel_gateway"] = ms_since(tc);
  if (!c) {
    co_return step_failed(which, c.error().message());
  }
  if (which == A::connect_target) {
    b.chan = std::move(*c);
  } else {
    b.gw = std::move(*c);
  }
  co_return step_ok(which);
}

awaitable<StepResult> Agent::src_steer_check(SourceBatch& b, Clock::time_point deadline) {
  const auto tc = Clock::now();
  struct Took {
    SourceBatch& b;
    Clock::time_point t;
    ~Took() { b.step_ms["steer_check"] = ms_since(t); }
  } took{b, tc};
  // Ask before anything is frozen whether the gateway can steer every flow to the target (a
  // VIP it steers, a backend it knows): a flow it cannot steer would be restored on the target
  // and then reset by this host.
  auto cr = co_await rpc(*b.gw, b.steer_msg(b.to, MsgType::steer_check), deadline);
  if (!cr) {
    co_return step_failed(A::steer_check, cr.error().message());
  }
  if (cr->type() != MsgType::steered) {
    co_return step_failed(
        A::steer_check,
        error_of(*cr, "gateway " + cfg_.gateway + " cannot steer this batch").message(),
        Outcome::refused);
  }
  co_return step_ok(A::steer_check);
}

awaitable<StepResult> Agent::src_export(SourceBatch& b, Clock::time_point export_deadline) {
  b.step_ms["connect"] = ms_since(b.t0);
  // Each server stops using its connections and hands over fd + state.
  auto te = Clock::now();
  std::size_t n = b.n;
  std::string error;
  asio::steady_timer notify(io_);
  std::map<std::uint64_t, std::vector<std::uint64_t>> by_session;
  std::vector<std::shared_ptr<AppSession>> sess(n);
  for (std::size_t i = 0; i < n; ++i) {
    sess[i] = b.sel[i]->session.lock();
    if (b.sel[i]->ended) {  // untracked while the channels were set up
      b.slots[i].done = true;
      b.slots[i].ended = true;
      b.slots[i].error = b.sel[i]->ended_why;
      continue;
    }
    if (!sess[i] || !sess[i]->alive) {
      b.slots[i].done = true;
      b.slots[i].error = "the server's session closed";
      continue;
    }
    sess[i]->pending[b.sel[i]->conn_id] = &b.slots[i];
    sess[i]->export_notify = &notify;
    by_session[sess[i]->id].push_back(b.sel[i]->conn_id);
  }
  for (auto& [sid, ids] : by_session) {
    Message er(MsgType::export_request);
    er.add_u64(Tag::mig, b.mig);
    for (auto id : ids) {
      er.add_u64(Tag::conn_id, id);
    }
    auto s = sessions_.find(sid);
    if (s == sessions_.end() || !send_packet(s->second->sock->native_handle(), er).ok()) {
      error = "export request to the " + b.service + " server failed";
    }
  }
  while (error.empty()) {
    bool all_done = std::all_of(b.slots.begin(), b.slots.end(), [](auto& s) { return s.done; });
    if (all_done || Clock::now() >= export_deadline) {
      break;
    }
    notify.expires_at(export_deadline);
    co_await notify.async_wait(as_tuple_aw);
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (sess[i]) {
      sess[i]->export_notify = nullptr;
      sess[i]->pending.erase(b.sel[i]->conn_id);
    }
  }
  // Connections that ended before or while they were exported leave the batch; the rest
  // moves on (judge_exports). Which sockets some process still holds is asked only when a
  // server refused.
  std::optional<std::set<std::string>> held;
  if (std::any_of(b.slots.begin(), b.slots.end(), [](auto& sl) { return sl.refused; })) {
    std::vector<FourTuple> ask;
    for (std::size_t i = 0; i < n; ++i) {
      if (b.slots[i].refused) {
        ask.push_back(b.tuples[i]);
      }
    }
    if (auto h = held_tcp_sockets(ask); h) {
      held = std::move(*h);
    }
  }
  std::vector<FlowExport> fe(n);
  for (std::size_t i = 0; i < n; ++i) {
    const ExportSlot& sl = b.slots[i];
    fe[i].tuple = b.tuples[i].to_string();
    fe[i].done = sl.done;
    fe[i].refused = sl.refused;
    fe[i].ended = sl.ended;
    fe[i].has_fd = sl.fd.valid();
    fe[i].socket_closed = sl.fd.valid() && socket_closed(sl.fd.get());
    fe[i].no_holder = sl.refused && sess[i] && sess[i]->same_netns && held &&
                      held->count(fe[i].tuple) == 0;
    fe[i].error = sl.error;
  }
  ExportVerdict v = judge_exports(std::move(fe), error, b.service, cfg_.step_timeout_ms);
  std::size_t kept = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!v.ended[i]) {
      if (kept != i) {
        b.sel[kept] = b.sel[i];
        b.tuples[kept] = b.tuples[i];
        b.slots[kept] = std::move(b.slots[i]);
      }
      ++kept;
      continue;
    }
    b.ended.push_back(b.tuples[i].to_string() + ": " + v.ended_why[i]);
    if (sess[i] && sess[i]->alive) {
      if (b.slots[i].fd.valid()) {
        // The server gave it away already: the connection left it; the dead socket closes.
        (void)send_packet(sess[i]->sock->native_handle(),
                          Message(MsgType::export_done).add_u64(Tag::conn_id, b.sel[i]->conn_id));
      }
      sess[i]->conns.erase(b.sel[i]->conn_id);
    }
    if (auto f = flows_.find(b.tuples[i].to_string());
        f != flows_.end() && &f->second == b.sel[i]) {
      flows_.erase(f);
    }
  }
  n = kept;
  b.keep_first(n);
  b.step_ms["export"] = ms_since(te);
  if (!v.error.empty()) {
    co_return step_failed(A::export_flows, v.error);
  }
  co_await drain_send_queues(b);
  read_export_options(b);
  co_return step_ok(A::export_flows, n);
}

void Agent::read_export_options(SourceBatch& b) {
  // The servers no longer touch these sockets, so their options are final and their tuples fixed:
  // read them (and take the checkpoint's duplicate) now, while the flows run, and keep those calls
  // out of the frozen window (a failure is not an error here: the checkpoint does it all again
  // and reports it). The duplicate counts in FdRoom's two descriptors per flow as before.
  b.pre_freeze.clear();
  b.pre_freeze.resize(b.n);
  for (std::size_t i = 0; i < b.n; ++i) {
    if (b.slots[i].fd.valid() && !b.sel[i]->userstack) {
      const int fd = b.slots[i].fd.get();
      auto o = repairer_.read_options(fd);
      auto t = o ? FourTuple::of_socket(fd) : Result<FourTuple>(o.error());
      auto d = t ? UniqueFd::dup(fd) : Result<UniqueFd>(t.error());
      if (o && t && d) {
        b.pre_freeze[i] = PreFreeze{std::move(*o), *t, std::move(*d)};
      }
    }
  }
}

awaitable<void> Agent::drain_send_queues(SourceBatch& b) {
  // The servers write no more to exported sockets; what their send queues hold still goes out
  // while the peers' windows allow. Waiting a little for that shrinks the checkpoint, the ship
  // and the restore, and so the time the flows stay frozen (drain.hpp).
  const auto t0 = Clock::now();
  DrainOptions o;
  o.max = ms(cfg_.drain_ms);
  DrainPlan plan(o, b.n, t0);
  asio::steady_timer t(io_);
  std::optional<DrainStop> stop;
  while (!stop) {
    std::uint64_t queued = 0;
    for (std::size_t i = 0; i < b.n; ++i) {
      int q = 0;
      if (b.slots[i].fd.valid() && ::ioctl(b.slots[i].fd.get(), SIOCOUTQ, &q) == 0 && q > 0) {
        queued += static_cast<std::uint64_t>(q);
      }
    }
    stop = plan.observe(queued, Clock::now());
    if (!stop) {
      t.expires_after(o.poll);
      co_await t.async_wait(as_tuple_aw);
    }
  }
  b.step_ms["drain"] = ms_since(t0);
  b.drained_bytes = plan.first();
  b.drain_stop = to_string(*stop);
}

StepResult Agent::src_freeze_checkpoint(SourceBatch& b) {
  std::string error;
  std::vector<std::size_t> gone;  // flows whose connection ended before their checkpoint
  b.freeze_t0 = Clock::now();
  for (std::size_t i = 0; i < b.n && error.empty(); ++i) {
    auto pre = i < b.pre_freeze.size() ? std::move(b.pre_freeze[i]) : std::nullopt;
    b.moving[i] = b.sel[i]->userstack
                      ? us_source_flow(b.tuples[i], b.slots[i].fd.get())
                      : native_source_flow(b.tuples[i], b.slots[i].fd.get(), std::move(pre));
    auto cp = b.moving[i]->checkpoint();
    if (!cp) {
      if (!b.sel[i]->userstack && socket_closed(b.slots[i].fd.get())) {
        // The connection ended after its export (the peer reset or closed it): it leaves the
        // batch like one that ends while exporting; the rest moves.
        b.moving[i]->unfreeze();
        gone.push_back(i);
        continue;
      }
      error = cp.error().message();
      break;
    }
    b.bytes_carried += cp->send_queue.size() + cp->recv_queue.size();
    b.encoded[i] = encode_snapshot(*cp);
    if (fault("tamper_snapshot")) {
      b.encoded[i][b.encoded[i].size() / 2] ^= std::byte{0x40};
    } else if (fault("truncate_snapshot")) {
      b.encoded[i].resize(b.encoded[i].size() - 7);
    }
  }
  b.step_ms["freeze_checkpoint"] = ms_since(b.freeze_t0);
  if (!error.empty()) {
    return step_failed(A::freeze_checkpoint, error);
  }
  if (gone.empty()) {
    return step_ok(A::freeze_checkpoint);
  }
  drop_ended_flows(b, gone);
  return step_ok(A::freeze_checkpoint, b.n);
}

void Agent::drop_ended_flows(SourceBatch& b, const std::vector<std::size_t>& gone) {
  std::size_t kept = 0;
  std::size_t g = 0;
  for (std::size_t i = 0; i < b.n; ++i) {
    if (g < gone.size() && gone[g] == i) {
      ++g;
      b.ended.push_back(b.tuples[i].to_string() + ": the connection ended before its checkpoint");
      if (auto s = b.sel[i]->session.lock(); s && s->alive) {
        (void)send_packet(s->sock->native_handle(),
                          Message(MsgType::export_done).add_u64(Tag::conn_id, b.sel[i]->conn_id));
        s->conns.erase(b.sel[i]->conn_id);
      }
      if (auto f = flows_.find(b.tuples[i].to_string());
          f != flows_.end() && &f->second == b.sel[i]) {
        flows_.erase(f);
      }
      continue;
    }
    if (kept != i) {
      b.sel[kept] = b.sel[i];
      b.tuples[kept] = b.tuples[i];
      b.slots[kept] = std::move(b.slots[i]);
      b.encoded[kept] = std::move(b.encoded[i]);
      b.moving[kept] = std::move(b.moving[i]);
      if (i < b.pre_freeze.size()) {
        b.pre_freeze[kept] = std::move(b.pre_freeze[i]);
      }
    }
    ++kept;
  }
  b.keep_first(kept);
}

awaitable<StepResult> Agent::src_ship(SourceBatch& b, Clock::time_point deadline) {
  b.ship_t0 = Clock::now();
  Message offer(MsgType::offer);
  offer.add_u64(Tag::mig, b.mig).add(Tag::service, b.service);
  for (std::size_t i = 0; i < b.n; ++i) {
    offer.add_u64(Tag::conn_id, b.sel[i]->conn_id);
    offer.add(Tag::snapshot, std::move(b.encoded[i]));
    offer.add(Tag::state, b.slots[i].state);
    const auto [ack, dropped] = b.moving[i]->freeze_hints();
    offer.add_u64(Tag::peer_ack, ack);
    offer.add_u64(Tag::server_dropped, dropped);
  }
  if (fault("cut_during_ship")) {
    auto bytes = offer.encode_framed();
    co_await asio::async_write(b.chan->stream, asio::buffer(bytes.data(), bytes.size() / 2),
                               as_tuple_aw);
    asio::error_code ec;
    b.chan->stream.lowest_layer().close(ec);
    b.chan->broken = true;
    co_return step_failed(A::ship_offer,
                          "channel to " + b.to + " cut during ship (fault injection)");
  }
  auto w = co_await write_msg(*b.chan, offer, deadline);
  if (!w) {
    co_return step_failed(A::ship_offer, w.error().message());
  }
  b.step_ms["ship_write"] = ms_since(b.ship_t0);
  co_return step_ok(A::ship_offer);
}

awaitable<StepResult> Agent::src_await_ready(SourceBatch& b, Clock::time_point deadline) {
  auto rr = co_await read_msg(*b.chan, deadline);
  if (!rr) {
    co_return step_failed(A::await_ready, rr.error().message());
  }
  if (rr->type() != MsgType::ready) {
    co_return step_failed(A::await_ready,
                          error_of(*rr, "agent " + b.to + " refused the migration").message(),
                          Outcome::refused);
  }
  b.step_ms["ship_restore"] = ms_since(b.ship_t0);
  if (!b.gw) {
    b.step_ms["steer"] = 0;  // no gateway: nothing to steer
  }
  co_return step_ok(A::await_ready);
}

awaitable<StepResult> Agent::src_steer(SourceBatch& b, Clock::time_point deadline) {
  auto tst = Clock::now();
  auto g = co_await rpc(*b.gw, b.steer_msg(b.to), deadline);
  if (!g) {
    co_return step_failed(A::steer, g.error().message());
  }
  if (g->type() != MsgType::steered) {
    co_return step_failed(A::steer,
                          error_of(*g, "gateway " + cfg_.gateway + " refused to steer").message(),
                          Outcome::refused);
  }
  b.step_ms["steer"] = ms_since(tst);
  co_return step_ok(A::steer);
}

awaitable<StepResult> Agent::src_send_commit(SourceBatch& b, Clock::time_point deadline) {
  // From here on this host never thaws unless the target says it did not commit.
  b.commit_t0 = Clock::now();
  Message commit(MsgType::commit);
  commit.add_u64(Tag::mig, b.mig);
  // What the peer acknowledged while frozen: lets B resend at once only what the peer lacks.
  std::size_t replayed = 0;
  std::uint64_t unrecorded = 0;
  std::uint64_t replayed_bytes = 0;
  for (std::size_t i = 0; i < b.tuples.size(); ++i) {
    commit.add_u64(Tag::peer_ack, b.moving[i]->peer_ack_hint());
    // What the peer sent into the freeze: B replays it instead of waiting for a retransmit.
    {
      for (const auto& p : b.moving[i]->take_held()) {
        std::vector<std::byte> v(4 + p.size());
        const auto idx = static_cast<std::uint32_t>(i);
        v[0] = static_cast<std::byte>(idx >> 24);
        v[1] = static_cast<std::byte>(idx >> 16);
        v[2] = static_cast<std::byte>(idx >> 8);
        v[3] = static_cast<std::byte>(idx);
        std::memcpy(v.data() + 4, p.data(), p.size());
        commit.add(Tag::replay, std::move(v));
        ++replayed;
        replayed_bytes += p.size();
      }
    }
    unrecorded += b.moving[i]->unrecorded();
  }
  b.replayed_total = replayed;
  b.unrecorded_total = unrecorded;
  b.replayed_bytes = replayed_bytes;
  auto cw = co_await write_msg(*b.chan, commit, deadline);
  if (!cw) {
    co_return step_failed(A::send_commit, cw.error().message());
  }
  co_return step_ok(A::send_commit);
}

awaitable<StepResult> Agent::src_await_commit(SourceBatch& b, Clock::time_point deadline) {
  auto cr = co_await read_msg(*b.chan, deadline);
  if (!cr) {
    co_return step_failed(A::await_commit, cr.error().message());
  }
  if (cr->type() != MsgType::committed) {
    // B answered but did not commit (e.g. it already self-aborted).
    co_return step_failed(A::await_commit, error_of(*cr, "commit").message(), Outcome::refused);
  }
  std::optional<std::uint64_t> adopted;
  if (auto a = cr->u64(Tag::adopted); a) {
    adopted = *a;
  }
  StepResult r = step_ok(A::await_commit, adopted);
  r.text = cr->str_or(Tag::text, "");
  co_return r;
}

awaitable<StepResult> Agent::src_query(SourceBatch& b, const std::string& commit_error,
                                       Clock::time_point deadline) {
  // The channel broke after COMMIT: ask B on a fresh channel.
  progress(b.ctl, "commit unconfirmed (" + commit_error + "); asking " + b.to);
  b.query.reset();
  auto q = co_await connect_peer(b.to);
  if (!q) {
    co_return step_failed(A::query_target, q.error().message());
  }
  auto a = co_await rpc(**q, Message(MsgType::query).add_u64(Tag::mig, b.mig), deadline);
  if (!a) {
    co_return step_failed(A::query_target, a.error().message());
  }
  if (a->type() != MsgType::mig_state) {
    co_return step_failed(A::query_target, error_of(*a, "query").message());
  }
  StepResult r = step_ok(A::query_target);
  r.peer_state = a->str_or(Tag::text, "unknown");
  if (r.peer_state != "committed" && r.peer_state != "aborted" && r.peer_state != "unknown") {
    b.query = std::move(*q);  // still staged: the abort goes on this channel
  }
  co_return r;
}

awaitable<StepResult> Agent::src_abort_staged(SourceBatch& b, Clock::time_point deadline) {
  if (b.query) {
    (void)co_await rpc(*b.query, Message(MsgType::abort).add_u64(Tag::mig, b.mig), deadline);
    b.query.reset();
  }
  co_return step_ok(A::abort_staged_target);
}

awaitable<StepResult> Agent::src_backoff(Clock::time_point until) {
  asio::steady_timer backoff(io_, until);
  co_await backoff.async_wait(as_tuple_aw);
  co_return step_ok(A::backoff);
}

StepResult Agent::src_release(SourceBatch& b, bool indeterminate) {
  b.frozen_ms = ms_since(b.freeze_t0);
  for (std::size_t i = 0; i < b.n; ++i) {
    b.moving[i]->release();
    if (auto s = b.sel[i]->session.lock(); s && s->alive) {
      (void)send_packet(s->sock->native_handle(),
                        Message(MsgType::export_done).add_u64(Tag::conn_id, b.sel[i]->conn_id));
      s->conns.erase(b.sel[i]->conn_id);
    }
    flows_.erase(b.tuples[i].to_string());
    moved_in_.forget(b.tuples[i].to_string());  // it left: a QUERY by tuple no longer finds it
  }
  ++metrics_.migrations_committed;
  if (indeterminate) {
    ++metrics_.migrations_indeterminate;
  }
  metrics_.flows_migrated_out += b.n;
  metrics_.frozen_ms_sum += b.frozen_ms;
  metrics_.frozen_ms_last = b.frozen_ms;
  metrics_.frozen_ms_max = std::max(metrics_.frozen_ms_max, b.frozen_ms);
  if (b.chan && !b.chan->broken) {
    give_back(std::move(b.chan));
  }
  return step_ok(A::release);
}

}  // namespace rendr::agents
