// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the source side of one migration batch. migrate() checks the request, selects
// the flows, then drives SourceMigration (rendr/agents/source_migration.hpp): it runs the step
// the core names (source_step: migrate_steps.cpp, migrate_undo.cpp), feeds the result back and
// reports how the batch ended. The core decides every transition, abort and timeout.
#include "source_batch.hpp"

namespace rendr::agents {

namespace {

// The steps between COMMIT and its resolution (step_ms["commit"] covers them all).
bool commit_phase(SrcAction a) {
  return a == SrcAction::send_commit || a == SrcAction::await_commit ||
         a == SrcAction::query_target || a == SrcAction::abort_staged_target ||
         a == SrcAction::backoff;
}

}  // namespace

awaitable<Message> Agent::migrate(const std::shared_ptr<seqp::socket>& ctl, const Message& req,
                                  bool one_batch) {
  const auto t0 = Clock::now();
  const std::uint64_t mig = mig_prefix_ | (next_mig_++ & 0xffffffffu);
  auto to = req.str(Tag::to);
  if (!to || to->empty()) {
    co_return fail_msg("--to AGENT is required");
  }
  if (*to == cfg_.name) {
    co_return fail_msg("the flows are already on " + cfg_.name);
  }
  if (method_ == "userstack") {
    // userstack flows move with the Stack's own freeze and snapshot (userstack_flow.cpp).
  } else if (!tcp_repair_ok_) {
    co_return fail_msg("TCP_REPAIR unavailable here: " + tcp_repair_error_);
  }
  if (method_ != "userstack" && !freezer_ && !cfg_.no_freeze) {
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
      std::vector<FourTuple> ask;
      for (FlowRec* f : sel) {
        ask.push_back(f->tuple);
      }
      if (auto h = held_tcp_sockets(ask); h) {
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
      } else if (held && s->same_netns && !f->userstack &&
                 held->count(f->tuple.to_string()) == 0) {
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

  SourceBatch b;
  b.ctl = ctl;
  b.mig = mig;
  b.to = *to;
  b.service = service;
  b.t0 = t0;
  b.step_ms["select"] = ms_since(t0);  // choosing the flows (and checking their sockets)
  b.ended = std::move(ended);
  b.sel = std::move(sel);
  b.n = b.sel.size();
  for (auto* f : b.sel) {
    f->migrating = true;
    b.tuples.push_back(f->tuple);
  }
  progress(ctl, "migration " + std::to_string(mig) + ": " + std::to_string(b.n) +
                    " flow(s) of " + service + " from " + cfg_.name + " to " + *to);
  b.slots.resize(b.n);
  b.encoded.resize(b.n);
  b.moving.resize(b.n);

  SourceConfig sc;
  sc.target = *to;
  sc.gateway = !cfg_.gateway.empty();
  sc.flows = b.n;
  sc.step_timeout = ms(cfg_.step_timeout_ms);
  sc.commit_resolve = ms(cfg_.commit_resolve_ms);
  SourceMigration core(sc);
  // Every selected flow may have ended before the batch: then nothing is frozen or moved.
  SrcNext next = core.start(Clock::now(), b.sel.empty());
  while (next.action != SrcAction::finish) {
    const SrcAction was = next.action;
    StepResult r = co_await source_step(b, core, next);
    next = core.on(Clock::now(), r);
    if (commit_phase(was) && !commit_phase(next.action)) {
      b.step_ms["commit"] = ms_since(b.commit_t0);
    }
  }

  const std::size_t n = b.n;
  if (core.result() == SrcResult::empty) {
    // Every flow ended before anything was frozen: nothing to move, nothing to undo.
    if (b.chan && !b.chan->broken) {
      give_back(std::move(b.chan));
    }
  } else if (core.result() == SrcResult::aborted) {
    for (std::size_t i = 0; i < n; ++i) {
      b.sel[i]->migrating = false;
      b.sel[i]->ended = false;
      // A flow whose server went away and whose fd no other server took is not served here.
      if (auto s = b.sel[i]->session.lock(); !s || !s->alive) {
        flows_.erase(b.tuples[i].to_string());
      }
    }
    ++metrics_.migrations_aborted;
  }

  // The gateway channel goes back to the pool whatever the result (a timed-out or cut one is
  // marked broken and closed): the next batch reuses it instead of a new TLS handshake, whose
  // CPU (~10 ms on two cores) delays every other flow on this host.
  give_back(std::move(b.gw));

  metrics_.flows_ended += b.ended.size();
  const bool committed = core.result() == SrcResult::committed;
  const bool empty_batch = core.result() == SrcResult::empty;
  const char* result = to_string(core.result());
  const std::string& error = core.error();
  JsonWriter j;
  j.begin_object();
  j.kv("migration", mig);
  j.kv("result", result);
  j.kv("indeterminate", core.indeterminate());
  j.kv("from", cfg_.name);
  j.kv("to", *to);
  j.kv("service", service);
  j.kv("flows", static_cast<std::uint64_t>(n));
  j.kv("ended", static_cast<std::uint64_t>(b.ended.size()));
  j.begin_array("ended_flows");  // the first 100, "tuple: why"
  for (std::size_t i = 0; i < b.ended.size() && i < 100; ++i) {
    j.value(b.ended[i]);
  }
  j.end_array();
  j.kv("frozen_ms", b.frozen_ms);
  j.kv("total_ms", ms_since(t0));
  j.kv("bytes_carried", b.bytes_carried);
  j.kv("drained_from_bytes", b.drained_bytes);
  j.kv("drain", b.drain_stop);
  j.kv("replayed_packets", b.replayed_total);
  j.kv("replayed_bytes", b.replayed_bytes);
  j.kv("replay_unrecorded", b.unrecorded_total);
  j.begin_object("steps_ms");
  for (const auto& [k, v] : b.step_ms) {
    j.kv(k, v);
  }
  j.end_object();
  j.kv("failed_in", core.failed_in());
  if (!error.empty()) {
    j.kv("error", error);
  }
  if (!core.commit_warning().empty()) {
    j.kv("warnings", core.commit_warning());
  }
  j.begin_array("trace");
  for (const auto& t : core.fsm().trace()) {
    j.value(t);
  }
  j.end_array();
  j.end_object();
  log_.info("migration " + std::to_string(mig) + ": " +
            (committed || empty_batch ? std::string(result) : "aborted: " + error) +
            (b.ended.empty() ? ""
                             : " (" + std::to_string(b.ended.size()) + " ended before moving)"));
  recent_reports_.push_back(j.str());
  if (recent_reports_.size() > 16) {
    recent_reports_.erase(recent_reports_.begin());
  }
  co_return Message(MsgType::json).add(Tag::text, j.str());
}

awaitable<void> Agent::stall_if(const char* f) {
  if (fault(f)) {
    // Test hook: a 3 s pause at that step; the death tests kill the agent inside it.
    asio::steady_timer t(io_, std::chrono::seconds(3));
    co_await t.async_wait(as_tuple_aw);
  }
}

awaitable<StepResult> Agent::source_step(SourceBatch& b, const SourceMigration& core,
                                         SrcNext next) {
  using A = SrcAction;
  const Clock::time_point deadline = next.deadline;
  // One co_await per statement (GCC 12: never inside ?:, && or ||).
  switch (next.action) {
    case A::connect_target:
    case A::connect_gateway:
      co_return co_await src_connect(b, next.action);
    case A::steer_check:
      co_return co_await src_steer_check(b, deadline);
    case A::export_flows:
      co_return co_await src_export(b, deadline);
    case A::freeze_checkpoint:
      co_await stall_if("stall_before_freeze");  // the exports are in, nothing is frozen yet
      co_return src_freeze_checkpoint(b);
    case A::ship_offer:
      co_await stall_if("stall_before_ship");  // frozen and captured, nothing sent
      co_return co_await src_ship(b, deadline);
    case A::await_ready:
      co_return co_await src_await_ready(b, deadline);
    case A::steer:
      co_return co_await src_steer(b, deadline);
    case A::send_commit:
      co_await stall_if("stall_before_commit");  // staged on the target, steered to it
      co_return co_await src_send_commit(b, deadline);
    case A::await_commit:
      co_return co_await src_await_commit(b, deadline);
    case A::query_target:
      co_return co_await src_query(b, core.commit_error(), deadline);
    case A::abort_staged_target:
      co_return co_await src_abort_staged(b, deadline);
    case A::backoff:
      co_return co_await src_backoff(deadline);
    case A::release:
      co_await stall_if("stall_before_release");  // committed on the target, not released here
      co_return src_release(b, core.indeterminate());
    case A::undo_steer_back:
      co_return co_await src_undo_steer_back(b, deadline);
    case A::undo_tell_b_abort:
      co_return co_await src_undo_tell_b_abort(b, core.error(), deadline);
    case A::undo_thaw:
      co_return src_undo_thaw(b);
    case A::undo_unfreeze:
      co_return src_undo_unfreeze(b);
    case A::undo_return_fds:
      co_return src_undo_return_fds(b);
    case A::finish:
      break;
  }
  co_return step_ok(next.action);
}

}  // namespace rendr::agents
