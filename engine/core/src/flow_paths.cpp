// SPDX-License-Identifier: Apache-2.0
// FlowCore path management: creating the flow, attaching carriers (HELLO, BRIDGE_TAG),
// path death with replay of orphaned frames, failover, planned switches, mode changes.
#include "flow_impl.hpp"

#include <rendr/engine/core/listener_key.hpp>

namespace rendr::engine {

Result<FlowCore::Impl::Path*> FlowCore::Impl::new_path(const PathOptions& opts, PathState st,
                                                       TimePoint now) {
  if (paths.size() >= kMaxPaths || used_slots == ~std::uint64_t{0}) {
    return make_error(errc::too_many_paths, "flow already has 64 paths");
  }
  if (opts.max_frame != 0 && opts.max_frame < kHeaderSize + cfg.max_payload) {
    return make_error(errc::invalid_config,
                      "path max_frame " + std::to_string(opts.max_frame) + " < " +
                          std::to_string(kHeaderSize + cfg.max_payload) +
                          " (8 + the flow's max_payload)");
  }
  const auto slot = static_cast<unsigned>(std::countr_one(used_slots));
  used_slots |= std::uint64_t{1} << slot;
  Path p;
  p.id = next_path_id++;
  p.slot = slot;
  p.framing = opts.framing;
  p.name = opts.name;
  p.state = st;
  p.last_rx = now;
  p.next_probe = now;
  p.attached_at = now;
  auto [it, inserted] = paths.emplace(p.id, std::move(p));
  (void)inserted;
  if (st == PathState::ready) {
    probe_first(it->second, now);
  }
  return &it->second;
}

void FlowCore::Impl::replay_orphans(TimePoint now) {
  const std::uint64_t live = live_mask();
  if (live == 0) {
    return;
  }
  for (auto& e : ledger.entries()) {
    if (!covered(e, live) && !rto_owned(e, live)) {
      dispatch(e, now);
      counters.replayed_frames += 1;
    }
  }
}

void FlowCore::Impl::activate(PathId to, MigrateCause cause, TimePoint now) {
  const PathId from = active != 0 ? active : last_active;
  active = to;
  if (state == FlowState::migrating) {
    state = FlowState::active;
    budget_deadline.reset();
  }
  counters.migration_count += 1;
  prime.note_switch(now, cause == MigrateCause::quality);
  events.emplace_back(EvMigrated{from, to, cause});
  if (cause == MigrateCause::death) {
    if (last_death_migration && now - *last_death_migration > cfg.zombie_cooldown) {
      zombie_left = cfg.zombie_max_migrations;
    }
    zombie_left -= 1;
    last_death_migration = now;
    if (zombie_left <= 0) {
      fail_flow(make_error(errc::zombie, "flow migrated " +
                                             std::to_string(cfg.zombie_max_migrations) +
                                             " times after path deaths with no payload flowing"),
                ByeReason::zombie, now);
    }
  }
}

void FlowCore::Impl::enter_migrating(TimePoint now) {
  last_active = active;
  active = 0;
  if (state == FlowState::active) {
    state = FlowState::migrating;
  }
  if (!budget_deadline) {
    silent_deadline = side == Side::server && !heard && cfg.silent_budget > Duration::zero();
    budget_deadline = now + (silent_deadline ? cfg.silent_budget : cfg.migration_budget);
  }
}

void FlowCore::Impl::kill_path(PathId id, Error reason, TimePoint now) {
  auto it = paths.find(id);
  if (it == paths.end()) {
    return;
  }
  const std::uint64_t bit = it->second.bit();
  const PathState was = it->second.state;
  used_slots &= ~bit;
  for (auto& e : ledger.entries()) {
    e.queued_mask &= ~bit;
    e.reliable_mask &= ~bit;
  }
  counters.paths_lost += 1;
  counters.last_path_down = "path " + std::to_string(id) + ": " + reason.message();
  paths.erase(it);
  events.emplace_back(EvPathDown{id, std::move(reason)});
  if (state == FlowState::dead) {
    return;
  }
  if (was == PathState::hello) {
    // The handshake carrier died: retry HELLO on the next carrier, if any.
    state = FlowState::init;
    for (auto& [pid, p] : paths) {
      if (p.state == PathState::pending) {
        start_hello(p, now);
        break;
      }
    }
    return;
  }
  if (!established()) {
    return;
  }
  if (id == active || (active == 0 && state != FlowState::migrating)) {
    const auto sc = scores();
    if (auto to = PrimeSelector::best_for_failover(sc)) {
      last_active = id;
      active = 0;
      activate(*to, MigrateCause::death, now);
    } else {
      active = id;
      enter_migrating(now);
    }
  }
  if (state != FlowState::dead) {
    replay_orphans(now);
  }
}

void FlowCore::Impl::start_hello(Path& p, TimePoint now) {
  p.state = PathState::hello;
  p.attached_at = now;
  arm_handshake_repeat(p, now);
  state = FlowState::handshaking;
  send_hello(p, now);
}

void FlowCore::Impl::arm_handshake_repeat(Path& p, TimePoint now) {
  p.handshake_backoff = kHandshakeRepeat;
  p.next_handshake_tx = now + kHandshakeRepeat;
}

void FlowCore::Impl::send_hello(Path& p, TimePoint now) {
  Hello h;
  h.flow_id = flow_id;
  h.instance_id = instance_id;
  h.caps = cfg.caps;
  if (!p.name.empty()) {
    h.path_name = p.name.substr(0, kMaxName);
  }
  queue_first_frame(p, std::move(h), now);
}

void FlowCore::Impl::queue_first_frame(Path& p, FirstFrame f, TimePoint now) {
  if (cfg.listener_key.empty()) {
    queue_ctrl(p, std::visit([](auto x) { return Frame{std::move(x)}; }, std::move(f)), now);
    return;
  }
  if (p.ctrl.size() >= kMaxCtrlQueue) {
    return;
  }
  const auto wall = wall_base + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                    now - wall_steady);
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(wall.time_since_epoch());
  std::array<std::uint8_t, 8> nonce{};
  key_nonce += 1;
  for (std::size_t i = 0; i < nonce.size(); ++i) {
    nonce[i] = static_cast<std::uint8_t>(key_nonce >> (8 * (7 - i)));
  }
  auto sealed = seal_first_frame(std::move(f), cfg.listener_key,
                                 static_cast<std::uint32_t>(secs.count()), nonce);
  if (!sealed.ok()) {
    return;  // validate_config bounds the key: not reached
  }
  p.ctrl.push_back(std::move(sealed).value());
  mark_waiting(p, now);
}

void FlowCore::Impl::start_bridge(Path& p, TimePoint now) {
  p.state = PathState::bridging;
  p.attached_at = now;
  arm_handshake_repeat(p, now);
  send_bridge_tag(p, now);
}

void FlowCore::Impl::send_bridge_tag(Path& p, TimePoint now) {
  BridgeTag t;
  t.bridge_id = flow_id;
  t.instance_id = instance_id;
  t.expected_peer_instance_id = peer_instance;
  if (!p.name.empty()) {
    t.path_name = p.name.substr(0, kMaxName);
  }
  queue_first_frame(p, std::move(t), now);
}

void FlowCore::Impl::path_became_ready(Path& p, TimePoint now) {
  p.state = PathState::ready;
  probe_first(p, now);
  p.last_rx = now;
  events.emplace_back(EvPathReady{p.id});
  if (state == FlowState::migrating || (established() && active == 0)) {
    activate(p.id, MigrateCause::death, now);
  }
  if (state != FlowState::dead) {
    replay_orphans(now);
  }
}

void FlowCore::Impl::planned_switch(PathId to, MigrateCause cause, TimePoint now) {
  Path* np = find(to);
  if (np == nullptr || to == active) {
    return;
  }
  if (Path* old = find(active); old != nullptr && mode == Mode::prime) {
    // Frames still queued on the old path are about to be replayed on the new one.
    old->data.clear();
    for (auto& e : ledger.entries()) {
      e.queued_mask &= ~old->bit();
    }
  }
  for (auto& e : ledger.entries()) {
    queue_data(*np, e, now);
    counters.replayed_frames += 1;
  }
  activate(to, cause, now);
}

Result<FlowCore> FlowCore::client(const FlowConfig& cfg, const Id128& flow_id,
                                  const Id128& instance_id) {
  RENDR_TRY_CTX(validate_config(cfg), "flow config");
  FlowConfig c = cfg;
  c.caps |= kCapsHalfClose | kCapsRefuse;  // this side reads SHUTDOWN_WRITE and REFUSE
  if (!cfg.l3_identity) {
    return FlowCore(std::make_unique<Impl>(c, Side::client, flow_id, instance_id));
  }
  // The record takes SEQ 1, ahead of anything the application writes; it leaves with the
  // first data once the HELLO_ACK echoed caps bits 1 + 14 (handle_hello_ack).
  auto record = encode_l3_identity(*cfg.l3_identity);
  if (!record) {
    return std::move(record).take_error();
  }
  c.caps |= kCapsL3Identity | kCapsL3Record;
  auto impl = std::make_unique<Impl>(c, Side::client, flow_id, instance_id);
  impl->l3_id = cfg.l3_identity;
  impl->ledger.push(encode(L3IdentityFrame{1, *record}), false);
  return FlowCore(std::move(impl));
}

Result<FlowCore> FlowCore::server(const FlowConfig& cfg, const Hello& hello,
                                  const Id128& instance_id, const PathOptions& first_path,
                                  TimePoint now) {
  RENDR_TRY_CTX(validate_config(cfg), "flow config");
  auto impl = std::make_unique<Impl>(cfg, Side::server, hello.flow_id, instance_id);
  impl->peer_instance = hello.instance_id;
  impl->peer_caps = hello.caps;
  auto p = impl->new_path(first_path, PathState::ready, now);
  if (!p.ok()) {
    return std::move(p).take_error();
  }
  HelloAck ack;
  ack.flow_id = hello.flow_id;
  ack.instance_id = instance_id;
  ack.caps = impl->hello_ack_caps(hello.caps);
  impl->l3_expected = Impl::l3_negotiated(ack.caps);
  impl->queue_ctrl(**p, ack, now);
  impl->state = FlowState::active;
  impl->active = (*p)->id;
  impl->events.emplace_back(EvHandshakeDone{});
  impl->events.emplace_back(EvPathReady{(*p)->id});
  return FlowCore(std::move(impl));
}

Result<PathId> FlowCore::add_path(const PathOptions& opts, TimePoint now) {
  auto& m = *impl_;
  if (m.side != Side::client) {
    return make_error(errc::wrong_side, "add_path: servers attach paths with accept_bridge");
  }
  // A closing flow still takes paths: its BYE may need one to reach the peer.
  if (m.state == FlowState::dead) {
    return make_error(errc::closed, "add_path: flow is dead");
  }
  auto p = m.new_path(opts, PathState::pending, now);
  if (!p.ok()) {
    return std::move(p).take_error();
  }
  m.wall_base = opts.wall;
  m.wall_steady = now;
  Impl::Path& path = **p;
  if (m.state == FlowState::init) {
    m.start_hello(path, now);
  } else if (m.state != FlowState::handshaking) {
    m.start_bridge(path, now);
  }
  return path.id;
}

Result<PathId> FlowCore::accept_bridge(const BridgeTag& tag, const PathOptions& opts,
                                       TimePoint now) {
  auto& m = *impl_;
  if (m.side != Side::server) {
    return make_error(errc::wrong_side, "accept_bridge on a client flow");
  }
  if (m.state == FlowState::dead) {
    return make_error(errc::closed, "accept_bridge: flow is dead");
  }
  if (tag.bridge_id != m.flow_id) {
    return make_error(errc::flow_mismatch, "bridge_tag for another flow_id");
  }
  if (!tag.legacy && (tag.expected_peer_instance_id != m.instance_id ||
                      tag.instance_id != m.peer_instance)) {
    return make_error(errc::instance_mismatch, "bridge_tag names another rendr instance");
  }
  auto p = m.new_path(opts, PathState::ready, now);
  if (!p.ok()) {
    return std::move(p).take_error();
  }
  BridgeAck ack;
  ack.bridge_id = m.flow_id;
  ack.instance_id = m.instance_id;
  ack.code = BridgeAckCode::ok;
  m.queue_ctrl(**p, ack, now);
  const PathId id = (*p)->id;
  m.path_became_ready(**p, now);
  return id;
}

Result<PathId> FlowCore::accept_hello_again(const Hello& hello, const PathOptions& opts,
                                            TimePoint now) {
  auto& m = *impl_;
  if (m.side != Side::server) {
    return make_error(errc::wrong_side, "accept_hello_again on a client flow");
  }
  if (m.state == FlowState::dead) {
    return make_error(errc::closed, "accept_hello_again: flow is dead");
  }
  if (hello.flow_id != m.flow_id || hello.instance_id != m.peer_instance) {
    return make_error(errc::flow_mismatch, "HELLO for a live flow_id from another instance");
  }
  if ((hello.caps & kCapsPacketMode) != (m.cfg.caps & kCapsPacketMode)) {
    return make_error(errc::wrong_mode, "repeated HELLO changes the packet-mode bit");
  }
  auto p = m.new_path(opts, PathState::ready, now);
  if (!p.ok()) {
    return std::move(p).take_error();
  }
  HelloAck ack;
  ack.flow_id = m.flow_id;
  ack.instance_id = m.instance_id;
  ack.caps = m.hello_ack_caps(m.peer_caps);  // the first HELLO's answer, whatever this one asks
  m.queue_ctrl(**p, ack, now);
  const PathId id = (*p)->id;
  m.path_became_ready(**p, now);
  return id;
}

Status FlowCore::path_failed(PathId path, const Error& cause, TimePoint now) {
  auto& m = *impl_;
  if (m.find(path) == nullptr) {
    return make_error(errc::unknown_path, "path_failed: path " + std::to_string(path));
  }
  m.kill_path(path, cause, now);
  return {};
}

Status FlowCore::remove_path(PathId path, TimePoint now) {
  auto& m = *impl_;
  Impl::Path* p = m.find(path);
  if (p == nullptr) {
    return make_error(errc::unknown_path, "remove_path: path " + std::to_string(path));
  }
  if (p->state == PathState::ready) {
    std::vector<PathScore> others;
    for (const auto& s : m.scores()) {
      if (s.id != path) {
        others.push_back(s);
      }
    }
    if (others.empty()) {
      return make_error(errc::last_path, "remove_path: path " + std::to_string(path) +
                                             " is the only usable path");
    }
    if (path == m.active) {
      if (auto to = PrimeSelector::best_for_failover(others)) {
        m.planned_switch(*to, MigrateCause::explicit_request, now);
      }
    }
  }
  m.kill_path(path, make_error(errc::path_dead, "path " + std::to_string(path) + " removed"),
              now);
  return {};
}

Status FlowCore::migrate(PathId path, TimePoint now) {
  auto& m = *impl_;
  Impl::Path* p = m.find(path);
  if (p == nullptr) {
    return make_error(errc::unknown_path, "migrate: path " + std::to_string(path));
  }
  if (p->state != PathState::ready || !m.established()) {
    return make_error(errc::not_ready, "migrate: path " + std::to_string(path) + " is " +
                                           std::string(to_string(p->state)) + ", flow is " +
                                           std::string(to_string(m.state)));
  }
  m.planned_switch(path, MigrateCause::explicit_request, now);
  return {};
}

Status FlowCore::set_mode(Mode mode) {
  auto& m = *impl_;
  RENDR_TRY(check_mode_switch(m.mode, mode));
  m.mode = mode;
  return {};
}

std::vector<PathId> FlowCore::path_ids() const {
  std::vector<PathId> v;
  for (const auto& [id, p] : impl_->paths) {
    v.push_back(id);
  }
  return v;
}

}  // namespace rendr::engine
