// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the undo steps of an aborted source batch, in the order SourceMigration gives
// (MigrationFsm's abort_plan). Each reports what it could not undo; the core appends that to
// the batch's error.
#include "source_batch.hpp"

namespace rendr::agents {

using A = SrcAction;

namespace {

StepResult undo_result(SrcAction step, std::string errors) {
  if (errors.empty()) {
    return step_ok(step);
  }
  return step_failed(step, std::move(errors));
}

}  // namespace

awaitable<StepResult> Agent::src_undo_steer_back(SourceBatch& b, Clock::time_point deadline) {
  if (!b.gw || b.gw->broken) {
    auto g = co_await take_peer(cfg_.gateway);
    if (g) {
      b.gw = std::move(*g);
    }
  }
  // if/else, not ?: : GCC 12 miscompiles a conditional whose arm is a co_await
  // (the awaited temporaries were destroyed twice: the source agent crashed here).
  Result<Message> g = make_error(std::errc::not_connected, "no gateway");
  if (b.gw) {
    g = co_await rpc(*b.gw, b.steer_msg(cfg_.name), deadline);
  }
  std::string errors;
  if (!g || g->type() != MsgType::steered) {
    errors = "steer back failed: " + (g ? error_of(*g, "steer").message() : g.error().message()) +
             "; ";
  }
  co_return undo_result(A::undo_steer_back, std::move(errors));
}

awaitable<StepResult> Agent::src_undo_tell_b_abort(SourceBatch& b, const std::string& why,
                                                   Clock::time_point deadline) {
  if (!b.chan || b.chan->broken) {
    auto c = co_await connect_peer(b.to);
    if (!c) {
      // B gone: its staged sockets closed silently with it / it self-aborts.
      co_return step_ok(A::undo_tell_b_abort);
    }
    b.chan = std::move(*c);
  }
  (void)co_await rpc(*b.chan, Message(MsgType::abort).add_u64(Tag::mig, b.mig).add(Tag::text, why),
                     deadline);
  co_return step_ok(A::undo_tell_b_abort);
}

StepResult Agent::src_undo_thaw(SourceBatch& b) {
  std::string errors;
  for (std::size_t i = 0; i < b.n; ++i) {
    if (b.moving[i] && b.moving[i]->captured()) {
      if (auto st = b.moving[i]->thaw(); !st) {
        errors += st.error().message() + "; ";
      }
    }
  }
  return undo_result(A::undo_thaw, std::move(errors));
}

StepResult Agent::src_undo_unfreeze(SourceBatch& b) {
  for (std::size_t i = 0; i < b.n; ++i) {
    if (b.moving[i]) {
      b.moving[i]->unfreeze();
    }
  }
  return step_ok(A::undo_unfreeze);
}

StepResult Agent::src_undo_return_fds(SourceBatch& b) {
  std::string errors;
  for (std::size_t i = 0; i < b.n; ++i) {
    if (!b.slots[i].fd.valid()) {
      continue;
    }
    auto s = b.sel[i]->session.lock();
    if (s && s->alive) {
      Message rt(MsgType::returned);
      rt.add_u64(Tag::conn_id, b.sel[i]->conn_id).add(Tag::state, b.slots[i].state);
      if (!send_packet(s->sock->native_handle(), rt, b.slots[i].fd.get()).ok()) {
        errors += "could not return " + b.tuples[i].to_string() + "; ";
      }
    } else {
      adopt_or_queue(b.service, Orphan{b.tuples[i], std::move(b.slots[i].fd),
                                       std::move(b.slots[i].state)});
    }
  }
  return undo_result(A::undo_return_fds, std::move(errors));
}

}  // namespace rendr::agents
