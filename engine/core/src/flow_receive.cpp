// SPDX-License-Identifier: Apache-2.0
// FlowCore receive path: carrier input (copied or read in place), frame handling, cumulative
// ACKs releasing the ledger, handshake replies, reorder and delivery, the application's reads.
#include "flow_impl.hpp"

namespace rendr::engine {

void FlowCore::Impl::handle_frame(Path& p, Frame&& f, TimePoint now) {
  p.last_rx = now;
  p.counters.frames_rx += 1;
  if (!std::holds_alternative<Hello>(f) && !std::holds_alternative<BridgeTag>(f)) {
    heard = true;
  }
  if (auto* d = std::get_if<Data>(&f)) {
    detail::RecvItem item;
    const std::byte* at = d->payload.data();
    if (rx_source && !d->payload.empty() && at >= rx_source->data() &&
        at + d->payload.size() <= rx_source->data() + rx_source->size() &&
        rx_pinned->load(std::memory_order_relaxed) <= rx_pinned_max) {
      item.payload.chunk = rx_source;
      item.payload.off = static_cast<std::size_t>(at - rx_source->data());
      item.payload.len = d->payload.size();
    } else {
      item.payload.own = pool.take(d->payload.size());
      item.payload.own.assign(d->payload.begin(), d->payload.end());
    }
    insert_sequenced(p, d->seq, std::move(item), now, true);
    return;
  }
  if (auto* b = std::get_if<Bye>(&f)) {
    detail::RecvItem item;
    item.kind = detail::RecvItem::Kind::bye;
    item.reason = b->reason;
    insert_sequenced(p, b->seq, std::move(item), now, false);
    return;
  }
  if (auto* l3 = std::get_if<L3IdentityFrame>(&f)) {
    detail::RecvItem item;
    item.kind = detail::RecvItem::Kind::l3_identity;
    item.payload.own.assign(l3->record.begin(), l3->record.end());
    insert_sequenced(p, l3->seq, std::move(item), now, false);
    return;
  }
  if (auto* x = std::get_if<Refuse>(&f)) {
    detail::RecvItem item;
    item.kind = detail::RecvItem::Kind::refuse;
    item.code = x->code;
    if (x->detail) {
      const auto* b = reinterpret_cast<const std::byte*>(x->detail->data());
      item.payload.own.assign(b, b + x->detail->size());
    }
    insert_sequenced(p, x->seq, std::move(item), now, false);
    return;
  }
  if (auto* w = std::get_if<ShutdownWrite>(&f)) {
    detail::RecvItem item;
    item.kind = detail::RecvItem::Kind::fin;
    insert_sequenced(p, w->seq, std::move(item), now, false);
    return;
  }
  if (std::holds_alternative<MigrateNotify>(f) || std::holds_alternative<PathQualityReport>(f) ||
      std::holds_alternative<Heartbeat>(f)) {
    detail::RecvItem item;
    item.kind = detail::RecvItem::Kind::other;
    insert_sequenced(p, frame_seq(f), std::move(item), now, false);
    return;
  }
  if (auto* a = std::get_if<Ack>(&f)) {
    handle_ack(a->next_seq, now);
    return;
  }
  if (auto* pr = std::get_if<Probe>(&f)) {
    queue_ctrl(p, ProbeReply{pr->ts, pr->id}, now);
    return;
  }
  if (auto* rep = std::get_if<ProbeReply>(&f)) {
    for (auto it = p.probes.begin(); it != p.probes.end(); ++it) {
      if (it->id == rep->id) {
        p.est.on_rtt_sample(now - it->sent, it->loaded);
        if (it->clean) {
          p.est.on_clean_rtt(now - it->sent);
        }
        p.est.on_probe_outcome(true);
        p.probes.erase(it);
        return;
      }
    }
    // A reply after its probe expired still tells how long the round trip really takes
    // (a backlogged carrier): the timing windows learn it; the loss record stands.
    for (auto it = p.late.begin(); it != p.late.end(); ++it) {
      if (it->id == rep->id) {
        p.est.on_rtt_sample(now - it->sent, true);
        p.late.erase(it);
        return;
      }
    }
    return;
  }
  if (auto* ha = std::get_if<HelloAck>(&f)) {
    handle_hello_ack(p, *ha, now);
    return;
  }
  if (auto* ba = std::get_if<BridgeAck>(&f)) {
    handle_bridge_ack(p, *ba, now);
    return;
  }
  // HELLO / BRIDGE_TAG repeated on its own carrier (our answer was lost on a datagram
  // carrier): answer again. Anything else there is a confused or hostile peer: ignore.
  if (side == Side::server) {
    if (const auto* h = std::get_if<Hello>(&f);
        h != nullptr && h->flow_id == flow_id && h->instance_id == peer_instance) {
      HelloAck ack;
      ack.flow_id = flow_id;
      ack.instance_id = instance_id;
      ack.caps = hello_ack_caps(peer_caps);
      queue_ctrl(p, ack, now);
      return;
    }
    if (const auto* t = std::get_if<BridgeTag>(&f);
        t != nullptr && t->bridge_id == flow_id &&
        (t->legacy || (t->instance_id == peer_instance &&
                       t->expected_peer_instance_id == instance_id))) {
      BridgeAck ack;
      ack.bridge_id = flow_id;
      ack.instance_id = instance_id;
      queue_ctrl(p, ack, now);
      return;
    }
  }
  counters.malformed_frames += 1;
}

void FlowCore::Impl::handle_ack(std::uint64_t next, TimePoint now) {
  if (next > ledger.next_seq()) {
    counters.ignored_acks += 1;  // acknowledges frames never published
    return;
  }
  if (next < ledger.ack_next()) {
    return;
  }
  if (next == ledger.ack_next()) {
    // Duplicate ACK: the receiver saw later frames but not this one (it ACKs out-of-order
    // datagram arrivals). The third one triggers a fast retransmit of the head.
    if (!ledger.empty() && ++dup_acks == kFastRetransmitDupAcks &&
        rto_owned(ledger.entries().front(), live_mask())) {
      retransmit(ledger.entries().front(), now);
    }
    return;
  }
  dup_acks = 0;
  for (auto& e : ledger.entries()) {
    if (e.seq >= next) {
      break;
    }
    uncount(e);
  }
  const auto rel = ledger.release_below(next, &released);
  if (pins.empty()) {
    pool.give_all(released);
  } else {
    for (auto& b : released) {
      if (pins.contains(b.data())) {
        released_pinned.emplace(b.data(), std::move(b));  // a carrier write still reads it
      } else {
        pool.give(std::move(b));
      }
    }
    released.clear();
  }
  if (rel.data_frames > 0) {
    refresh_zombie();
  }
  if (our_bye_seq && next > *our_bye_seq) {
    if (state == FlowState::closing) {
      finish_clean();
    }
  }
}

void FlowCore::Impl::handle_hello_ack(Path& p, const HelloAck& ha, TimePoint now) {
  if (side != Side::client || p.state != PathState::hello) {
    counters.malformed_frames += 1;
    return;
  }
  if (ha.flow_id != flow_id) {
    fail_flow(make_error(errc::flow_mismatch, "hello_ack for another flow_id"), std::nullopt,
              now);
    return;
  }
  if ((ha.caps & kCapsPacketMode) != (cfg.caps & kCapsPacketMode)) {
    fail_flow(make_error(errc::peer_protocol, "hello_ack: packet-mode bit does not match"),
              ByeReason::proto_version, now);
    return;
  }
  if (l3_id && !l3_negotiated(ha.caps)) {
    // The record is SEQ 1 and still unsent; a BYE at SEQ 1 ends the peer's flow at once.
    queue_ctrl(p, Bye{1, ByeReason::proto_version}, now);
    fail_flow(make_error(errc::peer_unsupported,
                         "the flow carries an L3 identity but the peer's HELLO_ACK does not "
                         "echo caps bits 1 and 14 (it cannot read the record)"),
              std::nullopt, now);
    return;
  }
  peer_instance = ha.instance_id;
  peer_caps = ha.caps;
  // close() during the handshake queued a BYE behind the buffered writes: keep closing.
  state = our_bye_seq ? FlowState::closing : FlowState::active;
  active = p.id;
  p.state = PathState::ready;
  probe_first(p, now);
  events.emplace_back(EvHandshakeDone{});
  events.emplace_back(EvPathReady{p.id});
  for (auto& [id, q] : paths) {
    if (q.state == PathState::pending) {
      start_bridge(q, now);
    }
  }
  replay_orphans(now);
}

void FlowCore::Impl::handle_bridge_ack(Path& p, const BridgeAck& ba, TimePoint now) {
  if (side != Side::client || p.state != PathState::bridging) {
    counters.malformed_frames += 1;
    return;
  }
  if (ba.bridge_id != flow_id || ba.code != BridgeAckCode::ok) {
    std::string why = ba.bridge_id != flow_id
                          ? std::string("bridge_ack for another flow")
                          : "bridge_ack code " + std::to_string(static_cast<int>(ba.code));
    if (ba.reason) {
      why += " (" + *ba.reason + ")";
    }
    kill_path(p.id, make_error(errc::bridge_rejected, why), now);
    return;
  }
  path_became_ready(p, now);
}

void FlowCore::Impl::deliver_packet(detail::Payload payload) {
  delivered_bytes += payload.size();
  delivered.push_back(std::move(payload));  // empty packets are packets too
}

void FlowCore::Impl::drain_reorder(TimePoint now) {
  // The head passed something other than DATA, SHUTDOWN_WRITE or the L3 record: ACK it at
  // once. A SHUTDOWN_WRITE or an L3 record is acknowledged like DATA (the answer it usually
  // brings - the peer's own SHUTDOWN_WRITE and BYE, a probe reply - carries the ACK).
  bool urgent = false;
  while (state != FlowState::dead && reorder.head_ready()) {
    const auto kind = reorder.head().kind;
    if (kind != detail::RecvItem::Kind::data && kind != detail::RecvItem::Kind::fin &&
        kind != detail::RecvItem::Kind::l3_identity) {
      urgent = true;
    }
    auto& h = reorder.head();
    if (h.kind == detail::RecvItem::Kind::l3_identity ||
        (l3_expected && !l3_id && h.kind != detail::RecvItem::Kind::bye)) {
      const std::uint64_t seq = reorder.expected();
      auto item = reorder.pop_head();
      if (item.kind != detail::RecvItem::Kind::l3_identity) {
        fail_flow(make_error(errc::bad_l3_identity,
                             "SEQ " + std::to_string(seq) +
                                 " is not the L3 identity record the HELLO announced"),
                  ByeReason::proto_version, now);
        break;
      }
      if (!take_l3_record(seq, item.payload, now)) {
        break;
      }
      continue;
    }
    if (peer_fin && (h.kind == detail::RecvItem::Kind::data ||
                     h.kind == detail::RecvItem::Kind::fin)) {
      fail_flow(make_error(errc::peer_protocol,
                           std::string(h.kind == detail::RecvItem::Kind::fin ? "a second" : "data after the") +
                               " SHUTDOWN_WRITE at SEQ " + std::to_string(reorder.expected())),
                ByeReason::proto_version, now);
      break;
    }
    if (h.kind == detail::RecvItem::Kind::fin) {
      const std::uint64_t seq = reorder.expected();
      (void)reorder.pop_head();
      if (!half_close()) {
        fail_flow(make_error(errc::peer_protocol, "SHUTDOWN_WRITE at SEQ " + std::to_string(seq) +
                                                      " without negotiating half-close (caps bit 13)"),
                  ByeReason::proto_version, now);
        break;
      }
      peer_fin = true;
      continue;
    }
    if (h.kind == detail::RecvItem::Kind::data) {
      if (!h.delivered && !room_for(h.payload.size())) {
        break;  // backpressure: the application must read first
      }
      auto item = reorder.pop_head();
      ack_owed_bytes += item.payload.size();
      ack_owed_frames += 1;
      if (item.delivered) {
        continue;
      }
      if (packet()) {
        deliver_packet(std::move(item.payload));
      } else if (!item.payload.empty()) {
        delivered_bytes += item.payload.size();
        delivered.push_back(std::move(item.payload));
      }
      continue;
    }
    auto item = reorder.pop_head();
    if (item.kind == detail::RecvItem::Kind::bye) {
      handle_peer_bye(item.reason, now);
      break;
    }
    if (item.kind == detail::RecvItem::Kind::refuse) {
      handle_peer_refuse(item, now);
      break;
    }
  }
  if (reorder.expected() != last_ack_sent) {
    ack_delivered(now, urgent);
  }
}

bool FlowCore::Impl::take_l3_record(std::uint64_t seq, const detail::Payload& record,
                                    TimePoint now) {
  const auto refuse = [&](Error e) {
    fail_flow(std::move(e), ByeReason::proto_version, now);
    return false;
  };
  if (side != Side::server || !l3_expected) {
    return refuse(make_error(errc::bad_l3_identity,
                             "an L3 identity record this side did not negotiate (caps bits 1 + 14)"));
  }
  if (l3_id || seq != 1) {
    return refuse(make_error(errc::bad_l3_identity,
                             "an L3 identity record at SEQ " + std::to_string(seq) +
                                 " (only SEQ 1 may carry it, once)"));
  }
  auto id = decode_l3_identity(record.bytes());
  if (!id) {
    return refuse(std::move(id).take_error());
  }
  l3_id = *id;
  refresh_zombie();
  return true;
}

void FlowCore::Impl::on_decode_error(Path& p, Error err, TimePoint now) {
  counters.malformed_frames += 1;
  if (p.framing == Framing::datagram && err.code != make_error_code(errc::unsupported_version)) {
    return;  // one bad datagram: drop it, keep the path
  }
  const bool version = err.code == make_error_code(errc::unsupported_version);
  const PathId id = p.id;
  kill_path(id, err.with_context("path " + std::to_string(id)), now);  // |p| is gone now
  if (version) {
    fail_flow(make_error(errc::peer_proto_version, "path " + std::to_string(id) + ": " +
                                                       err.message()),
              std::nullopt, now);
  }
}

Status FlowCore::on_receive(PathId path, std::span<const std::byte> bytes, TimePoint now) {
  auto& m = *impl_;
  Impl::Path* p = m.find(path);
  if (p == nullptr) {
    return make_error(errc::unknown_path, "on_receive: path " + std::to_string(path));
  }
  if (p->framing == Framing::datagram) {
    p->counters.bytes_rx += bytes.size();  // (stream bytes are counted by on_received)
    auto f = decode_frame(bytes);
    if (!f.ok()) {
      m.on_decode_error(*p, std::move(f).take_error(), now);
    } else {
      m.handle_frame(*p, std::move(*f), now);
    }
  } else {
    // Through the receive chunk, like a carrier read (a copy: these bytes are the caller's).
    while (!bytes.empty()) {
      auto sp = recv_space(path);
      if (sp.space.empty()) {
        break;  // the path died on the way
      }
      const std::size_t n = std::min(sp.space.size(), bytes.size());
      std::copy_n(bytes.begin(), n, sp.space.begin());
      bytes = bytes.subspan(n);
      (void)on_received(path, n, now);
    }
    return {};
  }
  m.drain_reorder(now);
  return {};
}

RecvSpace FlowCore::recv_space(PathId path) {
  auto& m = *impl_;
  Impl::Path* p = m.find(path);
  if (p == nullptr || p->framing != Framing::stream || p->rx_failed) {
    return {};
  }
  std::size_t need = kRxMinRead;  // room this read should have at least
  const std::size_t pending = p->rx_end - p->rx_parse;
  if (pending >= kStreamPrefixSize) {
    // Part of a frame is here: its whole length must fit in the chunk.
    const std::size_t len = stream_prefix_length(p->rx_chunk->data() + p->rx_parse);
    need = std::max(need, kStreamPrefixSize + len - pending);
  }
  if (p->rx_chunk && pending == 0 && p->rx_chunk.use_count() == 1) {
    p->rx_parse = p->rx_end = 0;  // nothing in it is still viewed: start it over
  }
  if (!p->rx_chunk || p->rx_chunk->size() - p->rx_end < need) {
    const std::size_t size =
        std::max(p->rx_next, std::bit_ceil(pending + need));  // a frame always fits whole
    auto fresh = detail::FrameCache::instance().make_chunk(size, m.rx_pinned);
    if (pending > 0) {
      std::copy_n(p->rx_chunk->data() + p->rx_parse, pending, fresh->data());
    }
    p->rx_chunk = std::move(fresh);
    p->rx_parse = 0;
    p->rx_end = pending;
  }
  auto& c = *p->rx_chunk;
  return RecvSpace{p->rx_chunk, std::span<std::byte>(c.data() + p->rx_end, c.size() - p->rx_end)};
}

bool FlowCore::release_recv_space(PathId path) {
  Impl::Path* p = impl_->find(path);
  if (p == nullptr || !p->rx_chunk || p->rx_end != p->rx_parse || p->rx_chunk.use_count() != 1) {
    return false;
  }
  p->rx_chunk.reset();
  p->rx_parse = p->rx_end = 0;
  return true;
}

Status FlowCore::on_received(PathId path, std::size_t n, TimePoint now) {
  auto& m = *impl_;
  Impl::Path* p = m.find(path);
  if (p == nullptr) {
    return make_error(errc::unknown_path, "on_received: path " + std::to_string(path));
  }
  if (p->framing != Framing::stream || !p->rx_chunk || n > p->rx_chunk->size() - p->rx_end) {
    return rendr::make_error(std::errc::invalid_argument,
                      "on_received: " + std::to_string(n) + " bytes do not fit recv_space");
  }
  if (p->rx_failed) {
    return {};
  }
  p->counters.bytes_rx += n;
  if (n == p->rx_chunk->size() - p->rx_end) {
    p->rx_next = std::min(p->rx_next * 2, detail::FrameCache::kChunkSize);
  }
  p->rx_end += n;
  // Hold the chunk here: handle_frame may kill this very path (bridge rejected), and the frame
  // being handled lies in it. Re-find the path after every frame.
  const auto chunk = p->rx_chunk;
  m.rx_source = chunk;
  while (true) {
    p = m.find(path);
    if (p == nullptr || p->rx_chunk != chunk) {
      break;
    }
    const std::size_t avail = p->rx_end - p->rx_parse;
    if (avail < kStreamPrefixSize) {
      break;
    }
    const std::byte* q = chunk->data() + p->rx_parse;
    const std::size_t len = stream_prefix_length(q);
    if (len < kHeaderSize) {
      p->rx_failed = true;
      m.on_decode_error(*p, short_stream_prefix(len), now);
      break;
    }
    if (avail < kStreamPrefixSize + len) {
      break;
    }
    p->rx_parse += kStreamPrefixSize + len;
    auto f = decode_frame(std::span<const std::byte>(q + kStreamPrefixSize, len));
    if (!f.ok()) {
      m.on_decode_error(*p, std::move(f).take_error(), now);
      break;
    }
    m.handle_frame(*p, std::move(*f), now);
    // Drain per frame: in-order frames never pile up in the reorder buffer, so its high-water
    // mark measures real reordering (G5 evidence), not batch size.
    m.drain_reorder(now);
  }
  m.rx_source.reset();
  m.drain_reorder(now);
  return {};
}

Result<ReadOutcome> FlowCore::read_loan(std::span<std::byte> out, std::vector<BufferLoan>& loans,
                                        TimePoint now) {
  auto& m = *impl_;
  loans.clear();
  if (m.packet()) {
    return make_error(errc::wrong_mode, "read on a packet flow (use read_packet)");
  }
  std::size_t n = 0;
  while (n < out.size() && !m.delivered.empty()) {
    auto& front = m.delivered.front();
    const std::size_t avail = front.size() - m.delivered_front_off;
    if (avail <= out.size() - n) {
      if (front.chunk) {
        loans.push_back(
            BufferLoan{{}, front.off + m.delivered_front_off, avail, std::move(front.chunk)});
      } else {
        loans.push_back(BufferLoan{std::move(front.own), m.delivered_front_off, 0, nullptr});
      }
      m.delivered.pop_front();
      m.delivered_front_off = 0;
      m.delivered_bytes -= avail;
      n += avail;
      continue;
    }
    // Does not fit whole: copy the part that does, after the loans.
    const std::size_t k = out.size() - n;
    std::copy_n(front.bytes().begin() + static_cast<std::ptrdiff_t>(m.delivered_front_off), k,
                out.begin() + static_cast<std::ptrdiff_t>(n));
    n += k;
    m.delivered_front_off += k;
    m.delivered_bytes -= k;
  }
  if (n > 0) {
    const std::uint64_t expected = m.reorder.expected();
    if (m.state != FlowState::dead) {
      m.drain_reorder(now);  // room in the window: admit more, ACK it
    }
    return ReadOutcome{n, false, m.reorder.expected() != expected};
  }
  if (m.peer_bye == ByeReason::normal || m.peer_fin) {
    return ReadOutcome{0, true};
  }
  if (m.state == FlowState::dead) {
    return m.close_error.value_or(make_error(errc::closed, "read: flow is dead"));
  }
  return ReadOutcome{0, false};
}

void FlowCore::recycle(std::vector<BufferLoan>& loans) {
  for (auto& l : loans) {
    impl_->pool.give(std::move(l.buf));  // chunk views just let go: the last one frees it
  }
  loans.clear();
}

Result<ReadOutcome> FlowCore::read_packet(std::vector<std::byte>& out, TimePoint now) {
  auto& m = *impl_;
  if (!m.packet()) {
    return make_error(errc::wrong_mode, "read_packet on a stream flow (use read)");
  }
  if (!m.delivered.empty()) {
    auto& front = m.delivered.front();
    if (front.chunk) {
      out.assign(front.bytes().begin(), front.bytes().end());  // packets are handed over owned
    } else {
      m.pool.give(std::move(out));
      out = std::move(front.own);
    }
    m.delivered.pop_front();
    m.delivered_bytes -= out.size();
    const std::uint64_t expected = m.reorder.expected();
    if (m.state != FlowState::dead) {
      m.drain_reorder(now);  // room in the window: admit more, ACK it
    }
    return ReadOutcome{out.size(), false, m.reorder.expected() != expected};
  }
  out.clear();
  if (m.peer_bye == ByeReason::normal || m.peer_fin) {
    return ReadOutcome{0, true};
  }
  if (m.state == FlowState::dead) {
    return m.close_error.value_or(make_error(errc::closed, "read_packet: flow is dead"));
  }
  return ReadOutcome{0, false};
}

bool FlowCore::packet_ready() const { return !impl_->delivered.empty(); }
bool FlowCore::packet_mode() const { return impl_->packet(); }

Result<ReadOutcome> FlowCore::read(std::span<std::byte> out, TimePoint now) {
  // The lending read, copied out at once (one loop for both).
  std::vector<BufferLoan>& loans = impl_->read_scratch;
  auto r = read_loan(out, loans, now);
  std::size_t off = 0;
  for (const auto& l : loans) {
    const auto b = l.bytes();
    std::copy(b.begin(), b.end(), out.begin() + static_cast<std::ptrdiff_t>(off));
    off += b.size();
  }
  recycle(loans);
  return r;
}

std::size_t FlowCore::readable() const { return impl_->delivered_bytes; }

bool FlowCore::read_ready() const {
  const auto& m = *impl_;
  return !m.delivered.empty() || m.peer_bye == ByeReason::normal || m.peer_fin ||
         m.state == FlowState::dead;
}

}  // namespace rendr::engine
