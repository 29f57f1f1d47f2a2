// SPDX-License-Identifier: Apache-2.0
#include <rendr/engine/core/wire.hpp>

#include <rendr/common/bytes.hpp>
#include <rendr/engine/errors.hpp>

#include <cstdio>
#include <string_view>

namespace rendr::engine {
namespace {

// Header byte view: b0 = VER<<6 | T<<5 | F<<4 | FLAGS[11:8], b1 = FLAGS[7:0],
// b2..b3 = SEQ[15:0] BE, b4..b7 = SEQ[47:16] BE (the low SEQ bits come first).
constexpr std::uint8_t kBitCtrl = 0x20;
constexpr std::uint8_t kBitFin = 0x10;

void put8(std::vector<std::byte>& out, std::uint8_t v) { out.push_back(static_cast<std::byte>(v)); }
void put16(std::vector<std::byte>& out, std::uint16_t v) {
  put8(out, static_cast<std::uint8_t>(v >> 8));
  put8(out, static_cast<std::uint8_t>(v));
}
void put32(std::vector<std::byte>& out, std::uint32_t v) {
  put16(out, static_cast<std::uint16_t>(v >> 16));
  put16(out, static_cast<std::uint16_t>(v));
}
void put64(std::vector<std::byte>& out, std::uint64_t v) {
  put32(out, static_cast<std::uint32_t>(v >> 32));
  put32(out, static_cast<std::uint32_t>(v));
}
void put_id(std::vector<std::byte>& out, const Id128& id) {
  for (auto b : id) {
    put8(out, b);
  }
}
void put_str8(std::vector<std::byte>& out, const std::string& s) {
  put8(out, static_cast<std::uint8_t>(s.size()));
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  out.insert(out.end(), p, p + s.size());
}

void put_header(std::vector<std::byte>& out, bool ctrl, bool fin, std::uint16_t flags,
                std::uint64_t seq) {
  put8(out, static_cast<std::uint8_t>((kWireVersion << 6) | (ctrl ? kBitCtrl : 0) |
                                      (fin ? kBitFin : 0) | ((flags >> 8) & 0x0F)));
  put8(out, static_cast<std::uint8_t>(flags));
  put16(out, static_cast<std::uint16_t>(seq));
  put32(out, static_cast<std::uint32_t>(seq >> 16));
}

Error malformed(std::string_view what) {
  return make_error(errc::malformed_frame, std::string(what));
}

bool get_id(ByteReader& r, Id128& id) {
  for (auto& b : id) {
    if (!r.u8(b)) {
      return false;
    }
  }
  return true;
}

// get_opt_str8 reads an optional str8 trailer that must end the payload exactly.
Status get_opt_str8(ByteReader& r, std::optional<std::string>& out, std::string_view what) {
  if (r.remaining() == 0) {
    out.reset();
    return {};
  }
  std::uint8_t n = 0;
  std::span<const std::byte> s;
  if (!r.u8(n) || !r.bytes(n, s) || r.remaining() != 0) {
    return malformed(std::string(what) + ": str8 trailer length does not match the payload");
  }
  out = std::string(reinterpret_cast<const char*>(s.data()), s.size());
  return {};
}

// get_name_and_auth reads the optional str8 trailer of HELLO / BRIDGE_TAG and, after it, an
// optional key block that must end the payload exactly.
Status get_name_and_auth(ByteReader& r, std::optional<std::string>& name,
                         std::optional<KeyAuth>& auth, std::string_view what) {
  if (r.remaining() == 0) {
    name.reset();
    return {};
  }
  std::uint8_t n = 0;
  std::span<const std::byte> s;
  if (!r.u8(n) || !r.bytes(n, s) || (r.remaining() != 0 && r.remaining() != kKeyAuthSize)) {
    return malformed(std::string(what) + ": str8 trailer length does not match the payload");
  }
  name = std::string(reinterpret_cast<const char*>(s.data()), s.size());
  if (r.remaining() == 0) {
    return {};
  }
  KeyAuth a;
  std::uint16_t zero = 0;
  (void)r.u8(a.version);
  (void)r.u8(a.key_id);
  (void)r.u16(zero);
  (void)r.u32(a.time);
  for (auto& b : a.nonce) {
    (void)r.u8(b);
  }
  for (auto& b : a.tag) {
    (void)r.u8(b);
  }
  if (zero != 0) {
    return malformed(std::string(what) + ": key block reserved bytes must be 0");
  }
  auth = a;
  return {};
}

void put_auth(std::vector<std::byte>& out, const KeyAuth& a) {
  put8(out, a.version);
  put8(out, a.key_id);
  put16(out, 0);
  put32(out, a.time);
  for (auto b : a.nonce) {
    put8(out, b);
  }
  for (auto b : a.tag) {
    put8(out, b);
  }
}

Status check_str8(const std::optional<std::string>& s, std::string_view what) {
  if (s && s->size() > kMaxName) {
    return make_error(errc::frame_too_large,
                      std::string(what) + " longer than 255 bytes (" + std::to_string(s->size()) +
                          ")");
  }
  return {};
}

Status check_seq(std::uint64_t seq, std::string_view what) {
  if (seq == 0 || seq > kMaxSeq) {
    return malformed(std::string(what) + ": SEQ " + std::to_string(seq) + " outside 1..2^48-1");
  }
  return {};
}

template <class... Ts>
struct Overloaded : Ts... {
  using Ts::operator()...;
};
template <class... Ts>
Overloaded(Ts...) -> Overloaded<Ts...>;

}  // namespace

std::uint64_t frame_seq(const Frame& f) {
  return std::visit(
      [](const auto& x) -> std::uint64_t {
        if constexpr (requires { x.seq; }) {
          return x.seq;
        } else {
          return 0;
        }
      },
      f);
}

const char* frame_name(const Frame& f) {
  return std::visit(Overloaded{
                        [](const Data&) { return "data"; },
                        [](const Hello&) { return "hello"; },
                        [](const HelloAck&) { return "hello_ack"; },
                        [](const BridgeTag&) { return "bridge_tag"; },
                        [](const BridgeAck&) { return "bridge_ack"; },
                        [](const Probe&) { return "probe"; },
                        [](const ProbeReply&) { return "probe_reply"; },
                        [](const Ack&) { return "ack"; },
                        [](const Bye&) { return "bye"; },
                        [](const MigrateNotify&) { return "migrate_notify"; },
                        [](const PathQualityReport&) { return "path_quality"; },
                        [](const Heartbeat&) { return "heartbeat"; },
                        [](const L3IdentityFrame&) { return "l3_identity"; },
                        [](const ShutdownWrite&) { return "shutdown_write"; },
                        [](const Refuse&) { return "refuse"; },
                    },
                    f);
}

void encode_data_header(std::uint64_t seq, std::vector<std::byte>& out) {
  put_header(out, false, false, 0, seq);
}

void append_stream_prefix(std::size_t frame_size, std::vector<std::byte>& out) {
  put16(out, static_cast<std::uint16_t>(frame_size));
}

std::size_t stream_prefix_length(const std::byte* p) {
  return (static_cast<std::size_t>(p[0]) << 8) | static_cast<std::size_t>(p[1]);
}

Error short_stream_prefix(std::size_t len) {
  return make_error(errc::frame_too_large,
                    "stream length prefix " + std::to_string(len) + " < 8-byte header");
}

Status encode_frame(const Frame& f, std::vector<std::byte>& out) {
  const auto ctrl_hdr = [&out](Ctrl c, std::uint64_t seq) {
    put_header(out, true, false, static_cast<std::uint16_t>(c), seq);
  };
  // Validate first so |out| is untouched on error.
  Status valid = std::visit(
      Overloaded{
          [](const Data& d) -> Status {
            RENDR_TRY(check_seq(d.seq, "data"));
            if (d.payload.size() > kMaxPayload) {
              return make_error(errc::frame_too_large,
                                "data payload " + std::to_string(d.payload.size()) +
                                    " > 32768 bytes");
            }
            return {};
          },
          [](const Hello& h) -> Status {
            if (h.legacy && (h.path_name || h.auth)) {
              return malformed("hello: the legacy 20-byte form has no path name or key block");
            }
            return check_str8(h.path_name, "hello path name");
          },
          [](const BridgeTag& b) -> Status {
            if (b.legacy && (b.path_name || b.auth)) {
              return malformed(
                  "bridge_tag: the legacy 16-byte form has no path name or key block");
            }
            return check_str8(b.path_name, "bridge_tag path name");
          },
          [](const BridgeAck& b) -> Status { return check_str8(b.reason, "bridge_ack reason"); },
          [](const Bye& b) -> Status { return check_seq(b.seq, "bye"); },
          [](const MigrateNotify& m) -> Status { return check_seq(m.seq, "migrate_notify"); },
          [](const PathQualityReport& q) -> Status { return check_seq(q.seq, "path_quality"); },
          [](const Heartbeat& h) -> Status { return check_seq(h.seq, "heartbeat"); },
          [](const L3IdentityFrame& l) -> Status {
            RENDR_TRY(check_seq(l.seq, "l3_identity"));
            if (l.record.size() > kMaxL3Frame) {
              return make_error(errc::frame_too_large,
                                "l3_identity payload " + std::to_string(l.record.size()) +
                                    " > 255 bytes");
            }
            return {};
          },
          [](const ShutdownWrite& w) -> Status { return check_seq(w.seq, "shutdown_write"); },
          [](const Refuse& x) -> Status {
            RENDR_TRY(check_seq(x.seq, "refuse"));
            return check_str8(x.detail, "refuse detail");
          },
          [](const auto&) -> Status { return {}; },
      },
      f);
  if (!valid.ok()) {
    return valid;
  }
  std::visit(Overloaded{
                 [&](const Data& d) {
                   put_header(out, false, d.last_fragment, 0, d.seq);
                   out.insert(out.end(), d.payload.begin(), d.payload.end());
                 },
                 [&](const Hello& h) {
                   ctrl_hdr(Ctrl::hello, 0);
                   put_id(out, h.flow_id);
                   if (!h.legacy) {
                     put_id(out, h.instance_id);
                   }
                   put32(out, h.caps);
                   if (h.path_name || h.auth) {
                     put_str8(out, h.path_name.value_or(std::string()));
                   }
                   if (h.auth) {
                     put_auth(out, *h.auth);
                   }
                 },
                 [&](const HelloAck& h) {
                   ctrl_hdr(Ctrl::hello_ack, 0);
                   put_id(out, h.flow_id);
                   put_id(out, h.instance_id);
                   put32(out, h.caps);
                 },
                 [&](const BridgeTag& b) {
                   ctrl_hdr(Ctrl::bridge_tag, 0);
                   put_id(out, b.bridge_id);
                   if (!b.legacy) {
                     put_id(out, b.instance_id);
                     put_id(out, b.expected_peer_instance_id);
                   }
                   if (b.path_name || b.auth) {
                     put_str8(out, b.path_name.value_or(std::string()));
                   }
                   if (b.auth) {
                     put_auth(out, *b.auth);
                   }
                 },
                 [&](const BridgeAck& b) {
                   ctrl_hdr(Ctrl::bridge_ack, 0);
                   put_id(out, b.bridge_id);
                   put_id(out, b.instance_id);
                   put8(out, static_cast<std::uint8_t>(b.code));
                   if (b.reason) {
                     put_str8(out, *b.reason);
                   }
                 },
                 [&](const Probe& p) {
                   ctrl_hdr(Ctrl::path_probe, 0);
                   put64(out, p.ts);
                   put64(out, p.id);
                 },
                 [&](const ProbeReply& p) {
                   ctrl_hdr(Ctrl::path_probe_reply, 0);
                   put64(out, p.ts);
                   put64(out, p.id);
                 },
                 [&](const Ack& a) {
                   ctrl_hdr(Ctrl::path_probe_reply, 0);
                   put64(out, kAckMagic);
                   put64(out, 0);
                   put64(out, a.next_seq);
                 },
                 [&](const Bye& b) {
                   ctrl_hdr(Ctrl::bye, b.seq);
                   put8(out, static_cast<std::uint8_t>(b.reason));
                 },
                 [&](const MigrateNotify& m) {
                   ctrl_hdr(Ctrl::migrate_notify, m.seq);
                   put32(out, m.new_path_id);
                 },
                 [&](const PathQualityReport& q) {
                   ctrl_hdr(Ctrl::path_quality, q.seq);
                   put32(out, q.rtt_us);
                   put32(out, q.jitter_us);
                   put16(out, q.loss_ppt);
                 },
                 [&](const Heartbeat& h) {
                   ctrl_hdr(Ctrl::heartbeat, h.seq);
                   put64(out, h.ts);
                 },
                 [&](const L3IdentityFrame& l) {
                   ctrl_hdr(Ctrl::l3_identity, l.seq);
                   out.insert(out.end(), l.record.begin(), l.record.end());
                 },
                 [&](const ShutdownWrite& w) { ctrl_hdr(Ctrl::shutdown_write, w.seq); },
                 [&](const Refuse& x) {
                   ctrl_hdr(Ctrl::refuse, x.seq);
                   put8(out, x.code);
                   if (x.detail) {
                     put_str8(out, *x.detail);
                   }
                 },
             },
             f);
  return {};
}

Result<Frame> decode_frame(std::span<const std::byte> wire) {
  if (wire.size() < kHeaderSize) {
    return malformed("frame of " + std::to_string(wire.size()) + " bytes is shorter than the header");
  }
  const auto b = [&wire](std::size_t i) { return static_cast<std::uint8_t>(wire[i]); };
  const std::uint8_t ver = b(0) >> 6;
  if (ver != kWireVersion) {
    return make_error(errc::unsupported_version,
                      "header VER " + std::to_string(ver) + " (this side speaks 0)");
  }
  const bool ctrl = (b(0) & kBitCtrl) != 0;
  const bool fin = (b(0) & kBitFin) != 0;
  const auto flags = static_cast<std::uint16_t>(((b(0) & 0x0F) << 8) | b(1));
  const std::uint64_t seq = (std::uint64_t{b(2)} << 8) | b(3) | (std::uint64_t{b(4)} << 40) |
                            (std::uint64_t{b(5)} << 32) | (std::uint64_t{b(6)} << 24) |
                            (std::uint64_t{b(7)} << 16);
  const auto payload = wire.subspan(kHeaderSize);

  if (!ctrl) {
    if (flags != 0) {
      return malformed("data: FLAGS must be 0");
    }
    RENDR_TRY(check_seq(seq, "data"));
    if (payload.size() > kMaxPayload) {
      return make_error(errc::frame_too_large,
                        "data payload " + std::to_string(payload.size()) + " > 32768 bytes");
    }
    return Frame{Data{seq, payload, fin}};
  }
  if (fin || (flags >> 8) != 0) {
    return malformed("control: F bit and reserved FLAGS bits must be 0");
  }
  const auto code = static_cast<std::uint8_t>(flags);
  ByteReader r(payload);
  const auto oob = [&](const char* what) -> Status {
    if (seq != 0) {
      return malformed(std::string(what) + ": out-of-band control must carry SEQ 0");
    }
    return {};
  };
  const auto exact = [&](std::size_t n, const char* what) -> Status {
    if (payload.size() != n) {
      return malformed(std::string(what) + ": payload is " + std::to_string(payload.size()) +
                       " bytes, expected " + std::to_string(n));
    }
    return {};
  };

  switch (static_cast<Ctrl>(code)) {
    case Ctrl::hello: {
      RENDR_TRY(oob("hello"));
      Hello h;
      if (payload.size() == 20) {
        h.legacy = true;
        (void)get_id(r, h.flow_id);
        (void)r.u32(h.caps);
        return Frame{std::move(h)};
      }
      if (payload.size() < 36) {
        return malformed("hello: payload is " + std::to_string(payload.size()) +
                         " bytes, expected 20 or >= 36");
      }
      (void)get_id(r, h.flow_id);
      (void)get_id(r, h.instance_id);
      (void)r.u32(h.caps);
      RENDR_TRY(get_name_and_auth(r, h.path_name, h.auth, "hello"));
      return Frame{std::move(h)};
    }
    case Ctrl::hello_ack: {
      RENDR_TRY(oob("hello_ack"));
      RENDR_TRY(exact(36, "hello_ack"));
      HelloAck h;
      (void)get_id(r, h.flow_id);
      (void)get_id(r, h.instance_id);
      (void)r.u32(h.caps);
      return Frame{h};
    }
    case Ctrl::bridge_tag: {
      RENDR_TRY(oob("bridge_tag"));
      BridgeTag t;
      if (payload.size() == 16) {
        t.legacy = true;
        (void)get_id(r, t.bridge_id);
        return Frame{std::move(t)};
      }
      if (payload.size() < 48) {
        return malformed("bridge_tag: payload is " + std::to_string(payload.size()) +
                         " bytes, expected 16 or >= 48");
      }
      (void)get_id(r, t.bridge_id);
      (void)get_id(r, t.instance_id);
      (void)get_id(r, t.expected_peer_instance_id);
      RENDR_TRY(get_name_and_auth(r, t.path_name, t.auth, "bridge_tag"));
      return Frame{std::move(t)};
    }
    case Ctrl::bridge_ack: {
      RENDR_TRY(oob("bridge_ack"));
      if (payload.size() < 33) {
        return malformed("bridge_ack: payload is " + std::to_string(payload.size()) +
                         " bytes, expected >= 33");
      }
      BridgeAck a;
      std::uint8_t c = 0;
      (void)get_id(r, a.bridge_id);
      (void)get_id(r, a.instance_id);
      (void)r.u8(c);
      if (c > static_cast<std::uint8_t>(BridgeAckCode::proto_state)) {
        return malformed("bridge_ack: unknown code " + std::to_string(c));
      }
      a.code = static_cast<BridgeAckCode>(c);
      RENDR_TRY(get_opt_str8(r, a.reason, "bridge_ack"));
      return Frame{std::move(a)};
    }
    case Ctrl::path_probe: {
      RENDR_TRY(oob("path_probe"));
      RENDR_TRY(exact(16, "path_probe"));
      Probe p;
      (void)r.u64(p.ts);
      (void)r.u64(p.id);
      return Frame{p};
    }
    case Ctrl::path_probe_reply: {
      RENDR_TRY(oob("path_probe_reply"));
      if (payload.size() == 24) {
        std::uint64_t magic = 0;
        std::uint64_t zero = 0;
        Ack a;
        (void)r.u64(magic);
        (void)r.u64(zero);
        (void)r.u64(a.next_seq);
        if (magic != kAckMagic) {
          return malformed("ack: 24-byte probe reply without the RENDR_AC magic");
        }
        if (zero != 0) {
          return malformed("ack: reserved word must be 0");
        }
        if (a.next_seq == 0 || a.next_seq > kMaxSeq + 1) {
          return malformed("ack: next_seq " + std::to_string(a.next_seq) + " outside 1..2^48");
        }
        return Frame{a};
      }
      RENDR_TRY(exact(16, "path_probe_reply"));
      ProbeReply p;
      (void)r.u64(p.ts);
      (void)r.u64(p.id);
      return Frame{p};
    }
    case Ctrl::bye: {
      RENDR_TRY(check_seq(seq, "bye"));
      RENDR_TRY(exact(1, "bye"));
      std::uint8_t reason = 0;
      (void)r.u8(reason);
      if (reason > static_cast<std::uint8_t>(ByeReason::app_request)) {
        return malformed("bye: unknown reason " + std::to_string(reason));
      }
      return Frame{Bye{seq, static_cast<ByeReason>(reason)}};
    }
    case Ctrl::migrate_notify: {
      RENDR_TRY(check_seq(seq, "migrate_notify"));
      RENDR_TRY(exact(4, "migrate_notify"));
      MigrateNotify m{seq, 0};
      (void)r.u32(m.new_path_id);
      return Frame{m};
    }
    case Ctrl::path_quality: {
      RENDR_TRY(check_seq(seq, "path_quality"));
      RENDR_TRY(exact(10, "path_quality"));
      PathQualityReport q;
      q.seq = seq;
      (void)r.u32(q.rtt_us);
      (void)r.u32(q.jitter_us);
      (void)r.u16(q.loss_ppt);
      return Frame{q};
    }
    case Ctrl::heartbeat: {
      RENDR_TRY(check_seq(seq, "heartbeat"));
      RENDR_TRY(exact(8, "heartbeat"));
      Heartbeat h{seq, 0};
      (void)r.u64(h.ts);
      return Frame{h};
    }
    case Ctrl::l3_identity: {
      RENDR_TRY(check_seq(seq, "l3_identity"));
      if (payload.size() > kMaxL3Frame) {
        return make_error(errc::frame_too_large,
                          "l3_identity payload " + std::to_string(payload.size()) + " > 255 bytes");
      }
      return Frame{L3IdentityFrame{seq, payload}};
    }
    case Ctrl::shutdown_write: {
      RENDR_TRY(check_seq(seq, "shutdown_write"));
      RENDR_TRY(exact(0, "shutdown_write"));
      return Frame{ShutdownWrite{seq}};
    }
    case Ctrl::refuse: {
      RENDR_TRY(check_seq(seq, "refuse"));
      if (payload.empty()) {
        return malformed("refuse: payload is 0 bytes, expected >= 1");
      }
      Refuse x;
      x.seq = seq;
      (void)r.u8(x.code);
      RENDR_TRY(get_opt_str8(r, x.detail, "refuse"));
      return Frame{std::move(x)};
    }
  }
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02x", code);
  return make_error(errc::unknown_control, std::string("control code ") + hex);
}

void StreamDeframer::stash_view() {
  if (view_.empty()) {
    return;
  }
  // Compact here, never while a returned view may still be in use: lazily, only when the
  // consumed prefix dominates the buffer.
  if (pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > 0 && pos_ * 2 >= buf_.size()) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(pos_));
    pos_ = 0;
  }
  buf_.insert(buf_.end(), view_.begin(), view_.end());
  view_ = {};
}

void StreamDeframer::take_from_view(std::size_t n) {
  n = std::min(n, view_.size());
  if (pos_ > 0 && pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  }
  buf_.insert(buf_.end(), view_.begin(), view_.begin() + static_cast<std::ptrdiff_t>(n));
  view_ = view_.subspan(n);
}

void StreamDeframer::feed(std::span<const std::byte> bytes) {
  feed_view(bytes);
  stash_view();
}

void StreamDeframer::feed_view(std::span<const std::byte> bytes) {
  if (failed_) {
    return;
  }
  stash_view();  // the previous input was not drained: keep its rest
  view_ = bytes;
}

Result<std::optional<std::span<const std::byte>>> StreamDeframer::next() {
  if (failed_) {
    return make_error(errc::frame_too_large, "stream deframer already failed");
  }
  const auto length = stream_prefix_length;
  const auto too_short = [this](std::size_t len) {
    failed_ = true;
    return short_stream_prefix(len);
  };
  if (buf_.size() > pos_) {
    // A frame split across feeds: complete it in the buffer.
    if (buf_.size() - pos_ < kStreamPrefixSize) {
      take_from_view(kStreamPrefixSize - (buf_.size() - pos_));
      if (buf_.size() - pos_ < kStreamPrefixSize) {
        return std::optional<std::span<const std::byte>>{};
      }
    }
    const std::size_t len = length(buf_.data() + pos_);
    if (len < kHeaderSize) {
      return too_short(len);
    }
    const std::size_t have = buf_.size() - pos_;
    if (have < kStreamPrefixSize + len) {
      take_from_view(kStreamPrefixSize + len - have);
      if (buf_.size() - pos_ < kStreamPrefixSize + len) {
        return std::optional<std::span<const std::byte>>{};
      }
    }
    std::span<const std::byte> frame(buf_.data() + pos_ + kStreamPrefixSize, len);
    pos_ += kStreamPrefixSize + len;
    return std::optional<std::span<const std::byte>>{frame};
  }
  // Whole frames straight from the fed bytes.
  if (view_.size() < kStreamPrefixSize) {
    stash_view();
    return std::optional<std::span<const std::byte>>{};
  }
  const std::size_t len = length(view_.data());
  if (len < kHeaderSize) {
    return too_short(len);
  }
  if (view_.size() < kStreamPrefixSize + len) {
    stash_view();
    return std::optional<std::span<const std::byte>>{};
  }
  const auto frame = view_.subspan(kStreamPrefixSize, len);
  view_ = view_.subspan(kStreamPrefixSize + len);
  return std::optional<std::span<const std::byte>>{frame};
}

std::vector<std::byte> StreamDeframer::release_buffered() {
  std::vector<std::byte> rest(buf_.begin() + static_cast<std::ptrdiff_t>(pos_), buf_.end());
  rest.insert(rest.end(), view_.begin(), view_.end());
  buf_.clear();
  pos_ = 0;
  view_ = {};
  return rest;
}

Result<FirstFrame> classify_first_frame(std::span<const std::byte> wire) {
  auto f = decode_frame(wire);
  if (!f.ok()) {
    return std::move(f).take_error().with_context("first frame");
  }
  if (auto* h = std::get_if<Hello>(&*f)) {
    return FirstFrame{std::move(*h)};
  }
  if (auto* t = std::get_if<BridgeTag>(&*f)) {
    return FirstFrame{std::move(*t)};
  }
  return make_error(errc::peer_protocol, std::string("first frame is ") + frame_name(*f) +
                                             ", expected hello or bridge_tag");
}

}  // namespace rendr::engine
