// SPDX-License-Identifier: Apache-2.0
// FlowCore lifecycle: construction, timers (probes, freshness, stalls, RTO, migration budget,
// graceful close), the end of the flow (fail, peer BYE, close, abort), events and stats.
#include "flow_impl.hpp"

namespace rendr::engine {

void FlowCore::Impl::trim_pool_if_idle(TimePoint now) {
  const bool idle = ledger.empty() && delivered.empty() && reorder.frames() == 0;
  if (!idle) {
    pool_idle_since.reset();
    return;
  }
  if (!pool_idle_since || pool.takes() != pool_takes_at_idle) {
    pool_idle_since = now;
    pool_takes_at_idle = pool.takes();
    return;
  }
  if (now - *pool_idle_since >= kPoolIdle) {
    pool.trim();
  }
}

void FlowCore::Impl::fail_flow(Error err, std::optional<ByeReason> bye, TimePoint now) {
  if (state == FlowState::dead) {
    return;
  }
  if (bye && established() && ledger.next_seq() <= kMaxSeq) {
    // Best effort: tell the peer why, on every usable path, bypassing the window.
    auto& e = ledger.push(encode(Bye{ledger.next_seq(), *bye}), false);
    for (auto& [id, p] : paths) {
      if (p.state == PathState::ready) {
        queue_data(p, e, now);
      }
    }
  }
  state = FlowState::dead;
  close_error = err;
  budget_deadline.reset();
  close_deadline.reset();
  events.emplace_back(EvClosed{std::move(err)});
}

void FlowCore::Impl::handle_peer_bye(ByeReason reason, TimePoint now) {
  peer_bye = reason;
  schedule_ack(now);  // the terminal ACK: shell flushes it after EvClosed
  switch (reason) {
    case ByeReason::normal:
      close_error = make_error(errc::closed, "peer closed the flow");
      finish_clean();
      break;
    case ByeReason::migration_budget:
      fail_flow(make_error(errc::migration_budget_exceeded, "peer: migration budget exhausted"),
                std::nullopt, now);
      break;
    case ByeReason::zombie:
      fail_flow(make_error(errc::zombie, "peer declared the flow a zombie"), std::nullopt, now);
      break;
    case ByeReason::proto_version:
      fail_flow(make_error(errc::peer_proto_version, "peer: protocol version"), std::nullopt,
                now);
      break;
    case ByeReason::app_request:
      fail_flow(make_error(errc::peer_closed, "peer application closed the flow"), std::nullopt,
                now);
      break;
  }
}

void FlowCore::Impl::handle_peer_refuse(const detail::RecvItem& item, TimePoint now) {
  Refusal r;
  r.code = static_cast<RefusalCode>(item.code);
  const auto d = item.payload.bytes();
  r.detail.assign(reinterpret_cast<const char*>(d.data()), d.size());
  std::string why = "peer refused the flow: " + to_string(r.code);
  if (!r.detail.empty()) {
    why += " (" + r.detail + ")";
  }
  Error err = make_error(errc::flow_refused, std::move(why));
  err.reason = static_cast<std::uint32_t>(r.code);  // as data: engine::refusal_code
  peer_refusal = std::move(r);
  schedule_ack(now);  // the terminal ACK lets the refusing side finish at once
  fail_flow(std::move(err), std::nullopt, now);
}

bool FlowCore::Impl::silent_now(PathId id, Path& p, TimePoint now,
                                const FlowCore::TimerContext& ctx) {
  const auto fu = first_unanswered(p);
  if (!fu) {
    return false;
  }
  if (p.silence_hold && p.silence_hold_for == *fu && now < *p.silence_hold) {
    return false;  // a postponed verdict: judged again at the hold
  }
  SilenceInput in;
  in.now = now;
  in.first_unanswered = fu;
  in.window = fresh(p);
  in.own_lateness = ctx.lateness;
  if (now >= *fu + in.window && ctx.pending_input) {
    in.pending_bytes = ctx.pending_input(id);  // asked only when the window ran out
  }
  const SilenceVerdict v = judge_silence(in);
  if (v.kind == SilenceKind::pending || v.kind == SilenceKind::starved) {
    (v.kind == SilenceKind::pending ? counters.silence_pending_reprieves
                                    : counters.silence_starved_reprieves) += 1;
    p.silence_hold = v.recheck;
    p.silence_hold_for = *fu;
  }
  return v.kind == SilenceKind::silent;
}

std::optional<std::string> FlowCore::Impl::transport_silent(PathId id, Path& p, TimePoint now,
                                                            const FlowCore::TimerContext& ctx) {
  const auto due = transport_due(id, p);
  if (!due || now < *due) {
    return std::nullopt;
  }
  p.next_transport_check = now + kTransportCheck;
  const std::optional<TransportAck> ta =
      ctx.transport_ack ? ctx.transport_ack(id) : std::optional<TransportAck>{};
  if (!ta) {
    p.transport_blind = true;  // this carrier cannot tell: the other rules judge the path
    return std::nullopt;
  }
  if (ta->in_flight_packets == 0) {
    return std::nullopt;
  }
  // The transport may have been idle before our oldest frame in flight was handed to it: its
  // silence counts from then at the most.
  const Duration silent = std::min(ta->since_ack, now - *p.inflight_since);
  Duration bound = std::max(cfg.ack_silence_min, 2 * ta->srtt + 4 * ta->rttvar);
  if (ta->in_flight_packets < kDelayedAckPackets) {
    bound = std::max(bound, kDelayedAckMax + cfg.ack_silence_min);  // a delayed ACK
  }
  if (silent < bound) {
    return std::nullopt;
  }
  const auto ms = [](Duration d) {
    return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
  };
  return "no transport acknowledgement for " + ms(silent) + " ms with " +
         std::to_string(ta->in_flight_packets) + " packet(s) in flight (bound " + ms(bound) +
         " ms)";
}

void FlowCore::Impl::run_timers(TimePoint now, const FlowCore::TimerContext& ctx) {
  if (state == FlowState::dead) {
    return;
  }
  if (budget_deadline && now >= *budget_deadline) {
    const auto ms = [](Duration d) {
      return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
    };
    fail_flow(make_error(errc::migration_budget_exceeded,
                         silent_deadline
                             ? "no frame after the HELLO and no carrier for " +
                                   ms(cfg.silent_budget) + " ms"
                             : "no path came back within " + ms(cfg.migration_budget) + " ms"),
              std::nullopt, now);
    return;
  }
  if (close_deadline && now >= *close_deadline) {
    fail_flow(make_error(errc::graceful_close_timeout, "BYE not acknowledged"), std::nullopt,
              now);
    return;
  }
  trim_pool_if_idle(now);
  if (ack_deadline && now >= *ack_deadline) {
    schedule_ack(now);  // coalesced ACK: nothing more came within kAckDelay
  }
  std::vector<std::pair<PathId, Error>> dead;
  for (auto& [id, p] : paths) {
    if ((p.state == PathState::hello || p.state == PathState::bridging) &&
        now - p.attached_at >= cfg.handshake_timeout) {
      dead.emplace_back(id, make_error(errc::path_dead,
                                       "path " + std::to_string(id) + ": no " +
                                           (p.state == PathState::hello ? "HELLO_ACK"
                                                                        : "BRIDGE_ACK") +
                                           " within the handshake timeout"));
      continue;
    }
    if ((p.state == PathState::hello || p.state == PathState::bridging) &&
        p.framing == Framing::datagram && now >= p.next_handshake_tx) {
      if (p.state == PathState::hello) {
        send_hello(p, now);
      } else {
        send_bridge_tag(p, now);
      }
      p.handshake_backoff = std::min<Duration>(2 * p.handshake_backoff, kHandshakeRepeatMax);
      p.next_handshake_tx = now + p.handshake_backoff;
    }
    if (p.state != PathState::ready) {
      continue;
    }
    // Silent death: a committed probe that nothing at all followed within the window.
    const Duration fw = fresh(p);
    if (silent_now(id, p, now, ctx)) {
      dead.emplace_back(id, make_error(errc::path_dead,
                                       "path " + std::to_string(id) +
                                           ": silent for the freshness window (" +
                                           std::to_string(fw.count() / 1000000) + " ms)"));
      continue;
    }
    // Never the last path standing: not when the other ready ones are failing in this round.
    const PathId self = id;  // (a structured binding cannot be captured before C++20's clang 16)
    const bool another_stays = std::any_of(paths.begin(), paths.end(), [&](const auto& kv) {
      return kv.first != self && kv.second.state == PathState::ready &&
             std::none_of(dead.begin(), dead.end(),
                          [&](const auto& d) { return d.first == kv.first; });
    });
    if (auto why = another_stays ? transport_silent(id, p, now, ctx) : std::nullopt) {
      counters.transport_silence_deaths += 1;
      dead.emplace_back(id, make_error(errc::path_dead, "path " + std::to_string(id) + ": " + *why));
      continue;
    }
    // Overdue probes on a path that otherwise talks count as lost.
    // A probe that waited behind our own backlog and expired says nothing about loss.
    while (!p.probes.empty() && now - p.probes.front().sent >= fw) {
      if (!p.probes.front().loaded) {
        p.est.on_probe_outcome(false);
      }
      p.late.push_back(p.probes.front());
      p.probes.pop_front();
      if (p.late.size() > kMaxOutstandingProbes) {
        p.late.pop_front();
      }
    }
    // A write stall only moves traffic to another ready path: the last one is kept (its
    // output has nowhere else to go, and a receiver starved of CPU looks just like this);
    // silence still ends it.
    if (p.tx_waiting_since && other_ready_path(id) &&
        now - *p.tx_waiting_since >= p.est.stall_timeout(cfg.stall_min, cfg.stall_max)) {
      dead.emplace_back(id, make_error(errc::path_dead,
                                       "path " + std::to_string(id) + ": output stalled"));
      continue;
    }
    if (now >= p.next_probe) {
      if (!p.probe_due) {
        p.probe_due = true;
        mark_waiting(p, now);
      }
      p.next_probe = now + cfg.probe_interval;
    }
  }
  for (auto& [id, err] : dead) {
    kill_path(id, std::move(err), now);
    if (state == FlowState::dead) {
      return;
    }
  }
  // prime quality switches
  if (next_tick && now >= *next_tick) {
    next_tick = now + cfg.sched_tick;
    if (mode == Mode::prime && state == FlowState::active && active != 0) {
      const auto sc = scores();
      if (sc.size() >= 2) {
        if (auto to = prime.tick(active, sc, now)) {
          planned_switch(*to, MigrateCause::quality, now);
        }
      }
    }
  } else if (!next_tick) {
    next_tick = now + cfg.sched_tick;
  }
  // Retransmission timeout for the oldest unacknowledged frame when it went over an
  // unreliable carrier. Only the head: ACKs are cumulative, so later frames are most likely
  // sitting in the receiver's reorder buffer; once the head is repaired the ACK jumps and the
  // next hole (if any) becomes the head, already overdue.
  if (!ledger.empty()) {
    auto& e = ledger.entries().front();
    if (e.last_on_datagram && !covered(e, live_mask()) && now - e.last_sent >= rto_for(e)) {
      retransmit(e, now);
    }
  }
}

std::optional<FlowCore::Deadline> FlowCore::Impl::deadline() const {
  std::optional<FlowCore::Deadline> d;
  const auto take = [&d](TimePoint t, DeadlineKind k) {
    if (!d || t < d->at) {
      d = FlowCore::Deadline{t, k};
    }
  };
  if (state == FlowState::dead) {
    return std::nullopt;
  }
  if (budget_deadline) {
    take(*budget_deadline, DeadlineKind::budget);
  }
  if (close_deadline) {
    take(*close_deadline, DeadlineKind::close);
  }
  if (ack_deadline) {
    take(*ack_deadline, DeadlineKind::ack);
  }
  for (const auto& [id, p] : paths) {
    if (p.state == PathState::hello || p.state == PathState::bridging) {
      take(p.attached_at + cfg.handshake_timeout, DeadlineKind::handshake);
      if (p.framing == Framing::datagram) {
        take(p.next_handshake_tx, DeadlineKind::handshake_repeat);
      }
    }
    if (p.state != PathState::ready) {
      continue;
    }
    if (!p.probe_due) {
      take(p.next_probe, DeadlineKind::probe);
    }
    const Duration fw = fresh(p);
    if (!p.probes.empty()) {
      take(p.probes.front().sent + fw, DeadlineKind::probe_expiry);
    }
    if (auto due = silence_due(p)) {
      take(*due, DeadlineKind::silence);
    }
    if (p.tx_waiting_since && other_ready_path(id)) {
      take(*p.tx_waiting_since + p.est.stall_timeout(cfg.stall_min, cfg.stall_max),
           DeadlineKind::stall);
    }
    if (auto due = transport_due(id, p)) {
      take(*due, DeadlineKind::transport);
    }
  }
  if (mode == Mode::prime && paths.size() >= 2) {
    take(next_tick.value_or(TimePoint{}), DeadlineKind::sched_tick);
  }
  if (!ledger.empty()) {
    const auto& e = ledger.entries().front();
    if (e.last_on_datagram && !covered(e, live_mask())) {
      take(e.last_sent + rto_for(e), DeadlineKind::rto);
    }
  }
  return d;
}

// ------------------------------------------------------------------ FlowCore

FlowCore::FlowCore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FlowCore::FlowCore(FlowCore&&) noexcept = default;
FlowCore& FlowCore::operator=(FlowCore&&) noexcept = default;
FlowCore::~FlowCore() = default;

bool FlowCore::has_events() const { return !impl_->events.empty(); }

std::optional<FlowEvent> FlowCore::poll_event() {
  auto& ev = impl_->events;
  if (ev.empty()) {
    return std::nullopt;
  }
  FlowEvent e = std::move(ev.front());
  ev.pop_front();
  return e;
}

std::optional<TimePoint> FlowCore::next_deadline() const {
  const auto d = impl_->deadline();
  return d ? std::optional<TimePoint>(d->at) : std::nullopt;
}

std::optional<FlowCore::Deadline> FlowCore::next_deadline_why() const {
  return impl_->deadline();
}

void FlowCore::on_timeout(TimePoint now) {
  impl_->run_timers(now, TimerContext{});
}

void FlowCore::on_timeout(TimePoint now, const TimerContext& ctx) {
  impl_->run_timers(now, ctx);
}

void FlowCore::close(TimePoint now) {
  auto& m = *impl_;
  switch (m.state) {
    case FlowState::init:
      m.close_error = make_error(errc::closed, "closed before any path was added");
      m.finish_clean();
      return;
    case FlowState::handshaking:  // BYE queues behind buffered writes, sent after HELLO_ACK
    case FlowState::active:
    case FlowState::migrating: {
      if (m.ledger.next_seq() > kMaxSeq) {
        m.fail_flow(make_error(errc::sequence_exhausted, "close: no SEQ left for BYE"),
                    std::nullopt, now);
        return;
      }
      const std::uint64_t seq = m.ledger.next_seq();
      auto& e = m.ledger.push(encode(Bye{seq, ByeReason::normal}), false);
      m.our_bye_seq = seq;
      m.dispatch(e, now);
      if (m.state != FlowState::handshaking) {
        m.state = FlowState::closing;
      }
      m.close_deadline = now + std::min(m.cfg.migration_budget, m.cfg.graceful_close_timeout);
      return;
    }
    case FlowState::closing:
    case FlowState::dead:
      return;
  }
}

Status FlowCore::refuse(RefusalCode code, std::string_view detail, TimePoint now) {
  auto& m = *impl_;
  if (m.state == FlowState::dead || m.state == FlowState::closing || m.our_bye_seq) {
    return {};  // already ending: nothing more to say
  }
  std::string why = "refused: " + to_string(code);
  if (!m.established() || !m.refuse_ok() || m.ledger.next_seq() > kMaxSeq) {
    // No REFUSE to send: the peer still learns that the flow was ended on purpose.
    m.fail_flow(make_error(errc::closed, std::move(why)), ByeReason::app_request, now);
    return {};
  }
  Refuse x;
  x.seq = m.ledger.next_seq();
  x.code = static_cast<std::uint8_t>(code);
  if (!detail.empty()) {
    x.detail = std::string(detail.substr(0, kMaxName));
  }
  auto& e = m.ledger.push(encode(x), false);
  m.our_bye_seq = x.seq;
  m.dispatch(e, now);
  m.state = FlowState::closing;
  m.close_error = make_error(errc::closed, std::move(why));
  m.close_deadline = now + std::min(m.cfg.migration_budget, m.cfg.graceful_close_timeout);
  return {};
}

void FlowCore::abort(Error why, TimePoint now) {
  impl_->fail_flow(std::move(why), ByeReason::app_request, now);
}

FlowState FlowCore::state() const { return impl_->state; }
Side FlowCore::side() const { return impl_->side; }
Mode FlowCore::mode() const { return impl_->mode; }
PathId FlowCore::active_path() const { return impl_->active; }
const Id128& FlowCore::flow_id() const { return impl_->flow_id; }
const std::optional<Error>& FlowCore::close_error() const { return impl_->close_error; }

const std::optional<L3Identity>& FlowCore::l3_identity() const { return impl_->l3_id; }

bool FlowCore::l3_identity_pending() const {
  const auto& m = *impl_;
  return m.l3_expected && !m.l3_id && m.state != FlowState::dead;
}

FlowStats FlowCore::stats() const {
  const auto& m = *impl_;
  FlowStats s = m.counters;
  s.flow_id = m.flow_id;
  s.side = m.side;
  s.state = m.state;
  s.mode = m.mode;
  s.active_path = m.active;
  s.peer_caps = m.peer_caps;
  s.peer_instance_id = m.peer_instance;
  s.l3_identity = m.l3_id;
  s.peer_refusal = m.peer_refusal;
  s.write_shut = m.write_shut;
  s.peer_write_shut = m.peer_fin;
  s.recv_queue_hwm = m.reorder.frames_high_water();
  s.bond_stuck_skips = m.bond.stuck_skips();
  s.ledger_frames = m.ledger.frames();
  s.ledger_bytes = m.ledger.bytes();
  s.ledger_frames_high_water = m.ledger.frames_high_water();
  s.ledger_bytes_high_water = m.ledger.bytes_high_water();
  s.published_next = m.ledger.next_seq();
  s.ack_next = m.ledger.ack_next();
  s.recv_next = m.reorder.expected();
  s.reorder_frames = m.reorder.frames();
  s.delivered_unread = m.delivered_bytes;
  s.pooled_buffers = m.pool.size();
  s.recv_chunk_bytes = m.rx_pinned->load(std::memory_order_relaxed);
  for (const auto& [id, p] : m.paths) {
    PathInfo i = p.counters;
    i.id = id;
    i.name = p.name;
    i.framing = p.framing;
    i.state = p.state;
    i.active = id == m.active;
    i.has_rtt = p.est.has_rtt();
    i.srtt = p.est.srtt();
    i.jitter = p.est.jitter();
    i.clean_rtt = p.est.clean_rtt();
    i.loss_ppt = p.est.loss_ppt();
    i.queued_frames = p.data.size() + p.ctrl.size();
    s.paths.push_back(std::move(i));
  }
  return s;
}

}  // namespace rendr::engine
