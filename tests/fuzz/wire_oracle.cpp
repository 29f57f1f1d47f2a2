// SPDX-License-Identifier: Apache-2.0
#include "wire_oracle.hpp"

#include <rendr/engine/core/bridge.hpp>
#include <rendr/engine/errors.hpp>
#include <rendr/engine/core/flow.hpp>
#include <rendr/engine/core/listener_key.hpp>
#include <rendr/engine/core/wire.hpp>

#include <algorithm>
#include <chrono>
#include <string_view>

namespace rendr::test {

using namespace rendr::engine;

namespace {

Id128 id_of(std::uint8_t seed) {
  Id128 id{};
  for (std::size_t i = 0; i < id.size(); ++i) {
    id[i] = static_cast<std::uint8_t>(seed + i);
  }
  return id;
}

std::vector<std::byte> encoded(const Frame& f) {
  std::vector<std::byte> out;
  (void)encode_frame(f, out);
  return out;
}

void append_framed(std::vector<std::byte>& stream, const Frame& f) {
  auto frame = encoded(f);
  append_stream_prefix(frame.size(), stream);
  stream.insert(stream.end(), frame.begin(), frame.end());
}

// check_l3_record: the L3 identity record decoder is strict and total like the frame decoder:
// a record it accepts re-encodes to exactly its bytes; a refusal is bad_l3_identity with a reason.
std::string check_l3_record(std::span<const std::byte> record) {
  auto id = decode_l3_identity(record);
  if (!id.ok()) {
    if (id.error().code != make_error_code(errc::bad_l3_identity)) {
      return "l3 record refused with another code: " + id.error().message();
    }
    if (id.error().context.empty()) {
      return "l3 record refused without a reason";
    }
    return {};
  }
  auto again = encode_l3_identity(*id);
  if (!again.ok()) {
    return "decoded l3 record does not re-encode: " + again.error().message();
  }
  if (!std::equal(again->begin(), again->end(), record.begin(), record.end())) {
    return "decoded l3 record re-encodes to different bytes";
  }
  return {};
}

std::string check_decode(std::span<const std::byte> input) {
  auto f = decode_frame(input);
  if (!f.ok()) {
    if (f.error().code.category() != engine_category()) {
      return "decode error outside the engine category: " + f.error().message();
    }
    if (f.error().context.empty()) {
      return "decode error without a reason";
    }
    return {};
  }
  if (const auto* l3 = std::get_if<L3IdentityFrame>(&*f)) {
    if (auto why = check_l3_record(l3->record); !why.empty()) {
      return why;
    }
  }
  std::vector<std::byte> again;
  if (auto st = encode_frame(*f, again); !st.ok()) {
    return std::string("decoded ") + frame_name(*f) + " does not re-encode: " +
           st.error().message();
  }
  if (!std::equal(again.begin(), again.end(), input.begin(), input.end())) {
    return std::string("decoded ") + frame_name(*f) + " re-encodes to different bytes";
  }
  return {};
}

// check_deframe: one-shot and byte-split feeding yield the same frames / the same failure.
std::string check_deframe(std::span<const std::byte> input) {
  const auto run = [&input](std::size_t step, std::vector<std::vector<std::byte>>& frames) {
    StreamDeframer d;
    for (std::size_t off = 0; off < input.size(); off += step) {
      d.feed(input.subspan(off, std::min(step, input.size() - off)));
      while (true) {
        auto r = d.next();
        if (!r.ok()) {
          return false;
        }
        if (!r->has_value()) {
          break;
        }
        frames.emplace_back((*r)->begin(), (*r)->end());
      }
    }
    return true;
  };
  std::vector<std::vector<std::byte>> whole;
  std::vector<std::vector<std::byte>> split;
  const bool ok_whole = run(std::max<std::size_t>(input.size(), 1), whole);
  const std::size_t step = input.empty() ? 1 : 1 + static_cast<std::size_t>(input[0]) % 7;
  const bool ok_split = run(step, split);
  if (ok_whole != ok_split || whole != split) {
    return "stream deframer depends on how the input is split";
  }
  return {};
}

// |l3|: the HELLO negotiated the L3 identity record (SEQ 1 must be one) and half-close.
std::string check_core(std::span<const std::byte> input, bool l3) {
  using namespace std::chrono_literals;
  FlowConfig cfg;
  cfg.reorder_max_frames = 256;
  cfg.reorder_max_bytes = 1U << 20;
  cfg.recv_window_bytes = 256 * 1024;
  cfg.ledger_max_frames = 64;
  cfg.ledger_max_bytes = 256 * 1024;
  // Odd first byte: a packet flow (unordered delivery path), else a stream flow.
  const bool packet = !input.empty() && (static_cast<unsigned>(input[0]) & 1U) != 0;
  if (packet) {
    cfg.caps = kCapsPacketMode;
  }
  cfg.caps |= kCapsL3Identity | kCapsL3Record;
  const TimePoint t0 = TimePoint{} + 1h;
  Hello h;
  h.flow_id = id_of(1);
  h.instance_id = id_of(2);
  // (|l3| also negotiates half-close: SHUTDOWN_WRITE frames are read, not refused.)
  h.caps = l3 ? (kCapsL3Identity | kCapsL3Record | kCapsHalfClose) : 0;
  auto s = FlowCore::server(cfg, h, id_of(3), PathOptions{Framing::stream, "s"}, t0);
  if (!s.ok()) {
    return "server core: " + s.error().message();
  }
  FlowCore& core = *s;
  const PathId sp = core.path_ids().front();
  BridgeTag tag;
  tag.bridge_id = id_of(1);
  tag.instance_id = id_of(2);
  tag.expected_peer_instance_id = id_of(3);
  auto dp = core.accept_bridge(tag, PathOptions{Framing::datagram, "d"}, t0);
  if (!dp.ok()) {
    return "accept_bridge: " + dp.error().message();
  }
  if (packet) {
    (void)core.write_packet(input.first(std::min<std::size_t>(input.size(), 100)), t0);
  } else {
    (void)core.write(input.first(std::min<std::size_t>(input.size(), 100)), t0);
  }
  // The input as a byte stream on path 1, and cut into datagrams on path 2.
  (void)core.on_receive(sp, input, t0);
  std::size_t off = 0;
  while (off < input.size()) {
    const std::size_t n = std::min<std::size_t>(
        input.size() - off, 8 + static_cast<std::size_t>(input[off]) % 64);
    (void)core.on_receive(*dp, input.subspan(off, n), t0 + 1ms);
    off += n;
  }
  TimePoint now = t0 + 2ms;
  std::vector<std::byte> out;
  std::vector<std::byte> buf(4096);
  for (int round = 0; round < 4; ++round) {
    for (PathId p : core.path_ids()) {
      out.clear();
      while (core.poll_transmit(p, out, 1 << 20, now) > 0) {
      }
    }
    if (packet) {
      std::vector<std::byte> pkt;
      while (core.packet_ready()) {
        if (!core.read_packet(pkt, now).ok()) {
          break;
        }
      }
    } else {
      while (auto r = core.read(buf, now)) {
        if (r->bytes == 0) {
          break;
        }
      }
    }
    while (core.poll_event()) {
    }
    if (auto d = core.next_deadline()) {
      now = std::max(now + 1ms, *d);
    } else {
      now += 100ms;
    }
    core.on_timeout(now);
  }
  if (core.l3_identity() && (!l3 || core.l3_identity_pending())) {
    return "an L3 identity taken without negotiation, or still pending once taken";
  }
  if (l3 && core.state() != FlowState::dead && core.readable() > 0 && !core.l3_identity()) {
    return "data delivered before the negotiated L3 identity record";
  }
  const auto st = core.stats();
  if (st.delivered_unread > cfg.recv_window_bytes + kMaxPayload) {
    return "delivery buffer over the receive window";
  }
  if (st.reorder_frames > cfg.reorder_max_frames) {
    return "reorder buffer over its frame cap";
  }
  if (st.ledger_frames > cfg.ledger_max_frames + 16) {
    return "ledger over its bound";
  }
  if (core.state() == FlowState::dead && !core.close_error()) {
    // A clean end needs a peer BYE(normal); then reading (after the queue) must report EOF.
    std::vector<std::byte> pkt;
    while (packet && core.packet_ready()) {
      (void)core.read_packet(pkt, now);
    }
    while (!packet && core.readable() > 0) {
      (void)core.read(buf, now);
    }
    auto r = packet ? core.read_packet(pkt, now) : core.read(buf, now);
    if (!r.ok() || !r->eof) {
      return "dead without an error but no EOF";
    }
  }
  return {};
}

// check_bridge: a listener given |input| as a carrier's first frame attaches, asks to retry
// (BRIDGE_TAG for an unknown flow) or rejects with a reply that is itself a valid frame.
std::string check_bridge(std::span<const std::byte> input) {
  using namespace std::chrono_literals;
  BridgeConfig cfg;
  cfg.instance_id = id_of(3);
  auto table = BridgeTable::create(cfg);
  if (!table.ok()) {
    return "bridge table: " + table.error().message();
  }
  const TimePoint t0 = TimePoint{} + 1h;
  for (const bool final_attempt : {false, true}) {
    auto r = table->accept(input, PathOptions{Framing::stream, "s"}, t0, final_attempt);
    if (const auto* rej = std::get_if<BridgeRejected>(&r)) {
      if (rej->error.code.category() != engine_category()) {
        return "bridge rejection outside the engine category: " + rej->error.message();
      }
      if (!rej->reply.empty()) {
        StreamDeframer d;
        d.feed(rej->reply);
        auto f = d.next();
        if (!f.ok() || !f->has_value() || !decode_frame(**f).ok()) {
          return "bridge reply is not a valid framed frame";
        }
      }
    } else if (const auto* att = std::get_if<BridgeAttached>(&r)) {
      if (table->find(att->flow_id) == nullptr) {
        return "bridge attached to a flow it does not hold";
      }
    } else if (final_attempt) {
      return "bridge asked to retry on the final attempt";
    }
  }
  return {};
}

const std::vector<std::uint8_t>& fuzz_key() {
  static const std::vector<std::uint8_t> k(32, 0x5c);
  return k;
}

// check_key: a keyed listener's verdict on |input| as a first frame never crashes and never
// lets it in unless it was sealed with the key (the fuzzer cannot forge a tag, so only the
// seeds' sealed frames pass); the decoded frame sealed afresh passes once, then is a replay.
std::string check_key(std::span<const std::byte> input) {
  auto ff = classify_first_frame(input);
  if (!ff.ok()) {
    return {};
  }
  constexpr std::uint64_t kNow = 1'800'000'000;
  KeyChecker checker(fuzz_key(), std::chrono::seconds(60), 4);
  const KeyVerdict v = checker.check(input, *ff, kNow);
  const KeyAuth* a = std::visit([](const auto& f) { return f.auth ? &*f.auth : nullptr; }, *ff);
  if (v == KeyVerdict::missing && a != nullptr) {
    return "key block present but reported missing";
  }
  if (v == KeyVerdict::ok) {
    const KeyTag want = key_tag(fuzz_key(), input.first(input.size() - kKeyTagSize));
    if (a == nullptr || !std::equal(want.begin(), want.end(), a->tag.begin())) {
      return "a frame without the right tag passed the key check";
    }
    if (checker.check(input, *ff, kNow) != KeyVerdict::replayed) {
      return "the same sealed frame passed twice";
    }
  }
  auto sealed = seal_first_frame(*ff, fuzz_key(), static_cast<std::uint32_t>(kNow),
                                 {1, 2, 3, 4, 5, 6, 7, 8});
  if (!sealed.ok()) {
    return {};  // e.g. a legacy frame's fields that do not fit; nothing to check
  }
  auto sf = classify_first_frame(*sealed);
  if (!sf.ok()) {
    return "a sealed frame does not decode: " + sf.error().message();
  }
  KeyChecker fresh(fuzz_key(), std::chrono::seconds(60), 4);
  if (fresh.check(*sealed, *sf, kNow) != KeyVerdict::ok) {
    return "a frame sealed with the key does not pass";
  }
  if (fresh.check(*sealed, *sf, kNow) != KeyVerdict::replayed) {
    return "a replayed sealed frame is not refused";
  }
  return {};
}

}  // namespace

std::string check_wire_input(std::span<const std::byte> input) {
  if (auto why = check_l3_record(input); !why.empty()) {
    return why;
  }
  if (auto why = check_decode(input); !why.empty()) {
    return why;
  }
  if (auto why = check_bridge(input); !why.empty()) {
    return why;
  }
  if (auto why = check_key(input); !why.empty()) {
    return why;
  }
  if (auto why = check_deframe(input); !why.empty()) {
    return why;
  }
  if (auto why = check_core(input, false); !why.empty()) {
    return why;
  }
  if (auto why = check_core(input, true); !why.empty()) {
    return "with the L3 identity negotiated: " + why;
  }
  return {};
}

std::vector<WireSeed> wire_seeds() {
  std::vector<WireSeed> seeds;
  const std::string text = "the quick brown fox";
  const auto payload = std::as_bytes(std::span(text.data(), text.size()));
  L3Identity v4;
  v4.src = {10, 0, 0, 1};
  v4.src_port = 40000;
  v4.dst = {192, 0, 2, 80};
  v4.dst_port = 443;
  L3Identity v6 = v4;
  v6.proto = 17;
  v6.family = 6;
  v6.src = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  v6.dst = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53};
  const L3Record l3_v4 = encode_l3_identity(v4).value();
  const L3Record l3_v6 = encode_l3_identity(v6).value();
  const std::vector<std::pair<std::string, Frame>> singles = {
      {"data", Data{1, payload, false}},
      {"hello", Hello{id_of(1), id_of(2), kCapsL3Identity, std::string("a"), false, std::nullopt}},
      {"hello_legacy", Hello{id_of(1), {}, 0, std::nullopt, true, std::nullopt}},
      {"hello_ack", HelloAck{id_of(1), id_of(3), 0}},
      {"bridge_tag",
       BridgeTag{id_of(1), id_of(2), id_of(3), std::string("b"), false, std::nullopt}},
      {"bridge_ack", BridgeAck{id_of(1), id_of(3), BridgeAckCode::ok, std::nullopt}},
      {"probe", Probe{1, 2}},
      {"probe_reply", ProbeReply{1, 2}},
      {"ack", Ack{2}},
      {"bye", Bye{2, ByeReason::normal}},
      {"migrate_notify", MigrateNotify{3, 2}},
      {"path_quality", PathQualityReport{4, 1000, 100, 5}},
      {"heartbeat", Heartbeat{5, 99}},
      {"l3_identity_v4", L3IdentityFrame{1, l3_v4}},
      {"l3_identity_v6", L3IdentityFrame{1, l3_v6}},
      {"shutdown_write", ShutdownWrite{6}},
      {"refuse", Refuse{7, 2, std::string("connect: refused")}},
      {"refuse_bare", Refuse{7, 1, std::nullopt}},
  };
  for (const auto& [name, f] : singles) {
    seeds.push_back({"frame_" + name, encoded(f)});
  }
  // Keyed HELLO / BRIDGE_TAG (docs/wire.md "Listener key"), sealed with the oracle's key.
  for (const auto& [name, f] :
       std::vector<std::pair<std::string, FirstFrame>>{
           {"hello_keyed", Hello{id_of(1), id_of(2), 0, std::string("k"), false, std::nullopt}},
           {"bridge_tag_keyed",
            BridgeTag{id_of(1), id_of(2), id_of(3), std::nullopt, false, std::nullopt}}}) {
    auto sealed = seal_first_frame(f, fuzz_key(), 1'800'000'000, {0, 0, 0, 0, 0, 0, 0, 1});
    if (sealed.ok()) {
      seeds.push_back({"frame_" + name, *sealed});
    }
  }
  // Stream seeds: in order, reordered with a duplicate, and one ending in BYE.
  std::vector<std::byte> s1;
  for (std::uint64_t seq = 1; seq <= 4; ++seq) {
    append_framed(s1, Data{seq, payload, false});
  }
  append_framed(s1, Ack{1});
  append_framed(s1, Probe{7, 7});
  seeds.push_back({"stream_in_order", s1});
  std::vector<std::byte> s2;
  for (std::uint64_t seq : {3, 1, 3, 2, 5, 4}) {
    append_framed(s2, Data{seq, payload, false});
  }
  seeds.push_back({"stream_reordered", s2});
  std::vector<std::byte> s3;
  append_framed(s3, Data{1, payload, false});
  append_framed(s3, Bye{2, ByeReason::normal});
  seeds.push_back({"stream_bye", s3});
  // The L3 identity record as SEQ 1 ahead of data, and bare records (the record decoder).
  std::vector<std::byte> s4;
  append_framed(s4, L3IdentityFrame{1, l3_v4});
  append_framed(s4, Data{2, payload, false});
  append_framed(s4, ShutdownWrite{3});
  append_framed(s4, Refuse{4, 2, std::string("x")});
  seeds.push_back({"stream_l3_identity", s4});
  seeds.push_back({"l3_record_v4", std::vector<std::byte>(l3_v4.begin(), l3_v4.end())});
  seeds.push_back({"l3_record_v6", std::vector<std::byte>(l3_v6.begin(), l3_v6.end())});
  return seeds;
}

}  // namespace rendr::test
