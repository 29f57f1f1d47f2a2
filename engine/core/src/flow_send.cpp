// SPDX-License-Identifier: Apache-2.0
// FlowCore send path: the application's writes into the replay ledger (the send window),
// scheduling frames onto paths by mode, carrier output (copied or gathered), retransmission.
#include "flow_impl.hpp"

namespace rendr::engine {

void FlowCore::Impl::dispatch(detail::LedgerEntry& e, TimePoint now) {
  if (!established()) {
    return;
  }
  if (mode == Mode::race) {
    for (auto& [id, p] : paths) {
      if (p.state == PathState::ready) {
        queue_data(p, e, now);
      }
    }
    return;
  }
  if (mode == Mode::bond) {
    std::vector<BondPath> bp;
    for (const auto& [id, p] : paths) {
      if (p.state == PathState::ready) {
        bp.push_back({id, p.est.clean_rtt()});
      }
    }
    if (bp.empty()) {
      return;
    }
    queue_data(*find(bond.next(bp)), e, now);
    // A stuck verdict rests on one clean sample, and the next regular probe may be a second
    // away: a skipped path drains, so probe it again soon; its next clean round trip confirms
    // or lifts the verdict (one high sample at a path's start cost the lab's bond gate ~1 s
    // of a path: 1.65-1.80x instead of 2.0x).
    for (const auto& b : bp) {
      if (bond.stuck(b, bp)) {
        Path& sp = *find(b.id);
        const Duration recheck =
            std::clamp<Duration>(2 * *b.rtt, kBondRecheckMin, cfg.probe_interval);
        if (sp.next_probe > now + recheck) {
          sp.next_probe = now + recheck;
        }
      }
    }
    return;
  }
  Path* a = find(active);
  if (a != nullptr && a->state == PathState::ready) {
    queue_data(*a, e, now);
  }
}

void FlowCore::Impl::retransmit(detail::LedgerEntry& e, TimePoint now) {
  e.last_on_datagram = false;  // re-armed when the re-send is committed
  e.retransmits += 1;
  counters.retransmits += 1;
  dispatch(e, now);
}

std::size_t FlowCore::Impl::transmit(Path& p, std::vector<std::byte>& out, std::size_t max_bytes,
                                     TimePoint now, std::vector<GatherPiece>* gather) {
  const bool stream = p.framing == Framing::stream;
  const std::size_t overhead = stream ? kStreamPrefixSize : 0;
  std::size_t written = 0;
  std::size_t frames = 0;
  const auto fits = [&](std::size_t n) { return written + overhead + n <= max_bytes; };
  const auto owned_piece = [&](std::size_t from) {
    if (gather == nullptr || out.size() == from) {
      return;
    }
    if (!gather->empty() && gather->back().frame == nullptr &&
        gather->back().off + gather->back().len == from) {
      gather->back().len += out.size() - from;  // adjacent owned bytes: one piece
    } else {
      gather->push_back(GatherPiece{nullptr, from, out.size() - from});
    }
  };
  const auto count = [&](std::size_t size) {
    written += overhead + size;
    frames += 1;
    p.counters.frames_tx += 1;
    p.counters.bytes_tx += size;
  };
  const auto emit = [&](std::span<const std::byte> frame) {
    const std::size_t from = out.size();
    if (stream) {
      append_stream_prefix(frame.size(), out);
    }
    out.insert(out.end(), frame.begin(), frame.end());
    owned_piece(from);
    count(frame.size());
  };
  const auto emit_ledger = [&](const std::vector<std::byte>& frame) {
    if (gather == nullptr) {
      emit(frame);
      return;
    }
    const std::size_t from = out.size();
    append_stream_prefix(frame.size(), out);
    owned_piece(from);
    gather->push_back(GatherPiece{frame.data(), 0, frame.size()});
    pins[frame.data()] += 1;
    pinned_by_path[p.id].push_back(frame.data());
    count(frame.size());
  };
  const auto more = [&] { return stream || frames == 0; };
  // Our own unacknowledged bytes on this carrier sit in its buffers ahead of a probe sent now:
  // such a probe measures our queue (self-load), not the path.
  const bool backlogged = p.unacked_bytes >= cfg.self_load_bytes;

  // A coalesced ACK that is owed (ack_deadline) rides with whatever this stream path sends now
  // instead of leaving on its own when the deadline comes: a request/response flow's ACKs go
  // with its next frames (one carrier segment less per exchange). The ACK is cumulative, so one
  // path carrying it is enough; if that path dies, the peer's replay brings duplicates, and
  // duplicates are acknowledged at once.
  if (stream && ack_deadline && !p.ack_pending && p.state == PathState::ready &&
      (!p.ctrl.empty() || p.probe_due || !p.data.empty())) {
    p.ack_pending = true;
    ack_deadline.reset();
    ack_owed_bytes = 0;
    ack_owed_frames = 0;
  }
  while (more() && !p.ctrl.empty() && fits(p.ctrl.front().size())) {
    emit(p.ctrl.front());
    p.ctrl.pop_front();
  }
  if (more() && p.ack_pending && p.ctrl.empty()) {
    auto f = encode(Ack{reorder.expected()});
    if (fits(f.size())) {
      emit(f);
      p.ack_pending = false;
      last_ack_sent = reorder.expected();
    }
  }
  if (more() && p.probe_due && p.ctrl.empty() && !p.ack_pending) {
    const std::uint64_t id = next_probe_id++;
    auto f = encode(Probe{ns_since_epoch(now), id});
    if (fits(f.size())) {
      emit(f);
      p.probe_due = false;
      // A path's first probe is answered through set-up work (the peer's accept, a thread's
      // first wake-up: 3 ms on the loaded lab against 0.1 ms later) and is never clean.
      p.probes.push_back({id, now, backlogged, p.unacked_bytes == 0 && p.est.has_rtt()});
      if (!p.silent_probe || *p.silent_probe < p.last_rx) {
        p.silent_probe = now;
      }
      if (p.probes.size() > kMaxOutstandingProbes) {
        if (!p.probes.front().loaded) {
          p.est.on_probe_outcome(false);
        }
        p.probes.pop_front();
      }
    }
  }
  while (more() && p.ctrl.empty() && !p.ack_pending && !p.probe_due && !p.data.empty()) {
    detail::LedgerEntry* e = ledger.find(p.data.front());
    if (e == nullptr) {  // acknowledged while queued
      p.data.pop_front();
      continue;
    }
    if (!fits(e->frame.size())) {
      break;
    }
    emit_ledger(e->frame);
    e->last_sent = now;
    e->last_on_datagram = !stream;
    e->last_path = p.id;
    e->queued_mask &= ~p.bit();
    if (stream) {
      e->reliable_mask |= p.bit();
    }
    if (e->counted_path != p.id) {
      uncount(*e);
      if (p.unacked_bytes == 0) {
        p.inflight_since = now;
      }
      p.unacked_bytes += e->frame.size();
      e->counted_path = p.id;
    }
    p.data.pop_front();
  }
  if (!p.has_output()) {
    p.tx_waiting_since.reset();
  } else if (frames > 0) {
    p.tx_waiting_since = now;  // progress: the stall clock restarts
  }
  return written;
}

std::size_t FlowCore::poll_transmit(PathId path, std::vector<std::byte>& out,
                                    std::size_t max_bytes, TimePoint now) {
  auto& m = *impl_;
  Impl::Path* p = m.find(path);
  if (p == nullptr) {
    return 0;
  }
  return m.transmit(*p, out, max_bytes, now);
}

std::size_t FlowCore::poll_transmit_gather(PathId path, TxGather& out, std::size_t max_bytes,
                                           TimePoint now) {
  auto& m = *impl_;
  out.clear();
  Impl::Path* p = m.find(path);
  if (p == nullptr) {
    return 0;
  }
  if (p->framing != Framing::stream) {
    const std::size_t n = m.transmit(*p, out.owned, max_bytes, now);
    if (n > 0) {
      out.pieces.emplace_back(out.owned);
      out.bytes = n;
    }
    return n;
  }
  auto& pieces = m.gather_scratch;
  pieces.clear();
  const std::size_t n = m.transmit(*p, out.owned, max_bytes, now, &pieces);
  // |owned| no longer grows: its pieces can point into it now.
  for (const auto& g : pieces) {
    out.pieces.push_back(g.frame != nullptr ? std::span<const std::byte>(g.frame, g.len)
                                            : std::span<const std::byte>(out.owned).subspan(
                                                  g.off, g.len));
  }
  out.bytes = n;
  return n;
}

void FlowCore::transmit_done(PathId path) {
  auto& m = *impl_;
  auto it = m.pinned_by_path.find(path);
  if (it == m.pinned_by_path.end()) {
    return;
  }
  for (const std::byte* f : it->second) {
    auto pin = m.pins.find(f);
    if (pin == m.pins.end() || --pin->second > 0) {
      continue;
    }
    m.pins.erase(pin);
    if (auto r = m.released_pinned.find(f); r != m.released_pinned.end()) {
      m.pool.give(std::move(r->second));
      m.released_pinned.erase(r);
    }
  }
  m.pinned_by_path.erase(it);
}

bool FlowCore::wants_transmit(PathId path) const {
  const Impl::Path* p = impl_->find(path);
  return p != nullptr && p->has_output();
}

namespace {
// The checks write() and reserve_write() make before taking bytes.
Status check_writable(FlowState state, bool closing, bool packet,
                      const std::optional<Error>& close_error, bool write_shut) {
  if (state == FlowState::dead) {
    return close_error.value_or(make_error(errc::closed, "write: flow is dead"));
  }
  if (state == FlowState::closing || closing) {
    return make_error(errc::closed, "write after close");
  }
  if (write_shut) {
    return make_error(errc::closed, "write after shutdown_write");
  }
  if (state == FlowState::init) {
    return make_error(errc::not_ready, "write: no path added yet");
  }
  if (packet) {
    return make_error(errc::wrong_mode, "write on a packet flow (use write_packet)");
  }
  return {};
}
}  // namespace

Result<std::size_t> FlowCore::write(std::span<const std::byte> data, TimePoint now) {
  auto& m = *impl_;
  if (auto st = check_writable(m.state, m.our_bye_seq.has_value(), m.packet(), m.close_error,
                                m.write_shut);
      !st) {
    return std::move(st).take_error();
  }
  std::size_t taken = 0;
  bool blocked = false;
  while (taken < data.size()) {
    const std::size_t n = std::min({m.cfg.max_payload, data.size() - taken, m.window_room()});
    if (n == 0) {
      blocked = true;
      break;
    }
    const std::uint64_t seq = m.ledger.next_seq();
    if (seq > kMaxSeq) {
      if (taken == 0) {
        return make_error(errc::sequence_exhausted, "write: 2^48-1 frames sent");
      }
      break;
    }
    std::vector<std::byte> frame = m.pool.take(kHeaderSize + n);
    encode_data_header(seq, frame);
    const auto chunk = data.subspan(taken, n);
    frame.insert(frame.end(), chunk.begin(), chunk.end());
    auto& e = m.ledger.push(std::move(frame), true);
    m.dispatch(e, now);
    taken += n;
  }
  if (blocked) {
    m.counters.backpressure_events += 1;
  }
  return taken;
}


Result<std::size_t> FlowCore::reserve_write(std::size_t n, std::vector<BufferLoan>& loans) {
  auto& m = *impl_;
  loans.clear();
  if (auto st = check_writable(m.state, m.our_bye_seq.has_value(), m.packet(), m.close_error,
                                m.write_shut);
      !st) {
    return std::move(st).take_error();
  }
  std::size_t left = std::min(n, writable());
  std::size_t total = 0;
  while (left > 0) {
    BufferLoan l;
    l.payload = std::min(left, m.cfg.max_payload);
    l.buf = m.pool.take(kHeaderSize + l.payload);
    l.buf.resize(kHeaderSize);
    left -= l.payload;
    total += l.payload;
    loans.push_back(std::move(l));
  }
  if (total == 0 && n > 0) {
    m.counters.backpressure_events += 1;
  }
  return total;
}

Result<std::size_t> FlowCore::commit_write(std::vector<BufferLoan>& loans, TimePoint now) {
  auto& m = *impl_;
  if (auto st = check_writable(m.state, m.our_bye_seq.has_value(), m.packet(), m.close_error,
                                m.write_shut);
      !st) {
    recycle(loans);
    return std::move(st).take_error();
  }
  std::size_t taken = 0;
  std::vector<std::byte> hdr;
  hdr.reserve(kHeaderSize);
  for (auto& l : loans) {
    if (l.buf.size() != kHeaderSize + l.payload) {
      recycle(loans);
      return make_error(errc::invalid_config, "commit_write: a loan was not filled");
    }
    const std::uint64_t seq = m.ledger.next_seq();
    if (seq > kMaxSeq) {
      if (taken == 0) {
        recycle(loans);
        return make_error(errc::sequence_exhausted, "write: 2^48-1 frames sent");
      }
      break;
    }
    hdr.clear();
    encode_data_header(seq, hdr);
    std::copy(hdr.begin(), hdr.end(), l.buf.begin());
    taken += l.payload;
    auto& e = m.ledger.push(std::move(l.buf), true);
    m.dispatch(e, now);
  }
  recycle(loans);
  return taken;
}

Result<bool> FlowCore::write_packet(std::span<const std::byte> packet, TimePoint now) {
  auto& m = *impl_;
  if (!m.packet()) {
    return make_error(errc::wrong_mode, "write_packet on a stream flow (use write)");
  }
  if (packet.size() > m.cfg.max_payload) {
    return make_error(errc::packet_too_large, "packet of " + std::to_string(packet.size()) +
                                                  " bytes > max_payload " +
                                                  std::to_string(m.cfg.max_payload));
  }
  if (m.state == FlowState::dead) {
    return m.close_error.value_or(make_error(errc::closed, "write_packet: flow is dead"));
  }
  if (m.state == FlowState::closing || m.our_bye_seq) {
    return make_error(errc::closed, "write_packet after close");
  }
  if (m.write_shut) {
    return make_error(errc::closed, "write_packet after shutdown_write");
  }
  if (m.state == FlowState::init) {
    return make_error(errc::not_ready, "write_packet: no path added yet");
  }
  if (m.ledger.next_seq() > kMaxSeq) {
    return make_error(errc::sequence_exhausted, "write_packet: 2^48-1 frames sent");
  }
  // A packet is never split: it needs window for all of it (an empty ledger always fits one).
  if (m.ledger.data_frames() > 0 && m.window_room() < std::max<std::size_t>(packet.size(), 1)) {
    m.counters.backpressure_events += 1;
    return false;
  }
  std::vector<std::byte> frame = m.pool.take(kHeaderSize + packet.size());
  encode_data_header(m.ledger.next_seq(), frame);
  frame.insert(frame.end(), packet.begin(), packet.end());
  auto& e = m.ledger.push(std::move(frame), true);
  m.dispatch(e, now);
  return true;
}

std::size_t FlowCore::writable() const {
  const auto& m = *impl_;
  if (m.state == FlowState::dead || m.state == FlowState::closing || m.state == FlowState::init ||
      m.our_bye_seq || m.write_shut) {
    return 0;
  }
  if (m.window_room() == 0) {
    return 0;
  }
  const auto& l = m.ledger;
  // Bytes left under both bounds (ledger and unsent), less one header per frame they need.
  const std::size_t unsent = m.unsent_bytes();
  const std::size_t room = std::min(l.max_bytes() - std::min(l.max_bytes(), l.bytes()),
                                    m.cfg.unsent_max_bytes - std::min(m.cfg.unsent_max_bytes, unsent));
  const std::size_t per = m.cfg.max_payload + kHeaderSize;
  const std::size_t frames = (room + per - 1) / per;
  const std::size_t payload = room - std::min(room, frames * kHeaderSize);
  const std::size_t frames_left = l.max_frames() - std::min(l.max_frames(), l.data_frames());
  const std::size_t n = std::min(payload, frames_left * m.cfg.max_payload);
  // An empty window always takes one maximal frame.
  return l.data_frames() == 0 ? std::max(n, m.cfg.max_payload) : n;
}

std::size_t FlowCore::write_wake_bytes() const {
  const auto& m = *impl_;
  const std::size_t cap = std::min(m.ledger.max_bytes(), m.cfg.unsent_max_bytes);
  return std::max<std::size_t>(1, std::min(cap / 2, cap - std::min(cap, m.cfg.max_payload + kHeaderSize)));
}

bool FlowCore::write_ready(std::size_t want) const {
  const auto& m = *impl_;
  if (m.state == FlowState::dead || m.state == FlowState::closing || m.our_bye_seq ||
      m.write_shut) {
    return true;  // the write fails now
  }
  return writable() >= std::max<std::size_t>(want, 1);
}

Status FlowCore::shutdown_write(TimePoint now) {
  auto& m = *impl_;
  if (m.state == FlowState::dead) {
    return m.close_error.value_or(make_error(errc::closed, "shutdown_write: flow is dead"));
  }
  if (m.state == FlowState::closing || m.our_bye_seq) {
    return make_error(errc::closed, "shutdown_write after close");
  }
  if (!m.established()) {
    return make_error(errc::not_ready, "shutdown_write before the handshake");
  }
  if (!m.half_close()) {
    // Never fall back to closing both directions: the caller decides.
    return make_error(errc::peer_unsupported,
                      "shutdown_write: the peer did not negotiate half-close (HELLO caps bit 13); "
                      "nothing was closed");
  }
  if (m.write_shut) {
    return {};
  }
  const std::uint64_t seq = m.ledger.next_seq();
  if (seq > kMaxSeq) {
    return make_error(errc::sequence_exhausted, "shutdown_write: no SEQ left");
  }
  auto& e = m.ledger.push(encode(ShutdownWrite{seq}), false);
  m.write_shut = true;
  m.dispatch(e, now);
  return {};
}

}  // namespace rendr::engine
