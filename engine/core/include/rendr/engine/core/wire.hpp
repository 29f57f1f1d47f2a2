// SPDX-License-Identifier: Apache-2.0
// rendr wire format v0: the 8-byte frame header, control codes and payload layouts (v0.3 shapes
// of the public rendr), plus the carrier framings (u16 length prefix on byte streams, one frame
// per datagram). Pure functions and one incremental stream deframer; no I/O, no allocation
// beyond the output vectors. docs/wire.md is the normative description; this header mirrors it.
//
// Decoding is strict and total: any byte string either decodes into a Frame that re-encodes to
// exactly the same bytes, or is refused with an engine errc (malformed_frame, frame_too_large,
// unknown_control, unsupported_version) and a message naming the field. Nothing here trusts a
// length it has not bounded.
//
// Engine core (rendr::engine_core, <rendr/engine/core/...>): not part of the embedder API.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/engine/types.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace rendr::engine {

inline constexpr std::uint8_t kWireVersion = 0;
inline constexpr std::uint64_t kMaxSeq = (std::uint64_t{1} << 48) - 1;
// kHeaderSize (8) and kMaxPayload (the largest DATA payload) are in rendr/engine/types.hpp.
// Largest frame a u16 length prefix can carry.
inline constexpr std::size_t kMaxStreamFrame = 65535;
inline constexpr std::size_t kStreamPrefixSize = 2;
// Longest optional str8 (path name, reject reason).
inline constexpr std::size_t kMaxName = 255;
// The ACK rides in a PATH_PROBE_REPLY whose payload starts with this magic ("RENDR_AC").
inline constexpr std::uint64_t kAckMagic = 0x52454E44525F4143ULL;

// HELLO / HELLO_ACK capability bits (unknown bits are ignored): kCapsPacketMode and
// kCapsL3Identity are in rendr/engine/types.hpp (FlowConfig::caps).
// Bits 8-9: the dialer's scheduling mode (engine::Mode value: 1 prime, 2 bond, 3 race; 0 = no
// hint). A listener that follows the client runs its own direction in the same mode. Peers that
// do not know the bits ignore them (docs/wire.md, revision v0+mode-hint).
inline constexpr std::uint32_t kCapsModeShift = 8;
inline constexpr std::uint32_t kCapsModeMask = 3U << kCapsModeShift;

enum class Ctrl : std::uint8_t {
  hello = 0x01,
  migrate_notify = 0x02,
  path_quality = 0x03,
  heartbeat = 0x04,
  bye = 0x05,
  path_probe = 0x06,
  path_probe_reply = 0x07,  // also carries the ACK (see Ack)
  hello_ack = 0x09,
  bridge_tag = 0x10,
  bridge_ack = 0x11,
  // rendr C++ extensions (docs/wire.md): sent only to a peer that negotiated them in HELLO caps.
  l3_identity = 0x40,  // sequenced: the 40-byte L3 identity record (caps bits 1 + 14)
  shutdown_write = 0x41,  // sequenced, empty: the sender writes no more (caps bit 13)
  refuse = 0x42,          // sequenced: code u8 [str8 detail]: the flow is refused (caps bit 15)
};

enum class ByeReason : std::uint8_t {
  normal = 0x00,
  migration_budget = 0x01,
  zombie = 0x02,
  proto_version = 0x03,
  app_request = 0x04,
};

enum class BridgeAckCode : std::uint8_t {
  ok = 0,
  unknown_flow = 1,
  instance_mismatch = 2,
  attach_failed = 3,
  malformed = 4,
  duplicate = 5,
  proto_state = 6,
};

// Sequenced frames (DATA and the sequenced controls) carry SEQ >= 1; out-of-band controls SEQ 0.
struct Data {
  std::uint64_t seq = 0;
  std::span<const std::byte> payload;  // view into the decoded input / caller's buffer
  bool last_fragment = false;          // header F bit; defined by v0, never set by rendr
};
// KeyAuth: the listener key block (docs/wire.md "Listener key"), 32 bytes after the str8 path
// name of a keyed HELLO / BRIDGE_TAG (the name is then always present, possibly empty):
//   version u8 | key_id u8 | zero u16 | time u32 | nonce[8] | tag[16]
// tag = the first 16 bytes of HMAC-SHA256(key, "rendr-listener-key-v1\0" | the frame's bytes
// from its header up to the tag). Sealing and checking: <rendr/engine/core/listener_key.hpp>.
inline constexpr std::size_t kKeyAuthSize = 32;
inline constexpr std::uint8_t kKeyAuthVersion = 1;
struct KeyAuth {
  std::uint8_t version = kKeyAuthVersion;
  std::uint8_t key_id = 0;   // 0 in this version (room for key rotation)
  std::uint32_t time = 0;    // the dialer's wall clock, Unix seconds
  std::array<std::uint8_t, 8> nonce{};
  std::array<std::uint8_t, 16> tag{};
};

struct Hello {
  Id128 flow_id{};
  Id128 instance_id{};
  std::uint32_t caps = 0;
  std::optional<std::string> path_name;  // str8 trailer
  bool legacy = false;                   // 20-byte v0.1 form (no instance id)
  std::optional<KeyAuth> auth;           // keyed HELLO (not with legacy)
};
struct HelloAck {
  Id128 flow_id{};
  Id128 instance_id{};
  std::uint32_t caps = 0;
};
struct BridgeTag {
  Id128 bridge_id{};
  Id128 instance_id{};
  Id128 expected_peer_instance_id{};
  std::optional<std::string> path_name;
  bool legacy = false;  // 16-byte v0.1 form (bridge id only)
  std::optional<KeyAuth> auth;  // keyed BRIDGE_TAG (not with legacy)
};
struct BridgeAck {
  Id128 bridge_id{};
  Id128 instance_id{};
  BridgeAckCode code = BridgeAckCode::ok;
  std::optional<std::string> reason;
};
struct Probe {
  std::uint64_t ts = 0;
  std::uint64_t id = 0;
};
struct ProbeReply {
  std::uint64_t ts = 0;
  std::uint64_t id = 0;
};
// Cumulative ACK: |next_seq| is the first SEQ not yet contiguously delivered.
struct Ack {
  std::uint64_t next_seq = 0;
};
struct Bye {
  std::uint64_t seq = 0;
  ByeReason reason = ByeReason::normal;
};
struct MigrateNotify {
  std::uint64_t seq = 0;
  std::uint32_t new_path_id = 0;
};
struct PathQualityReport {
  std::uint64_t seq = 0;
  std::uint32_t rtt_us = 0;
  std::uint32_t jitter_us = 0;
  std::uint16_t loss_ppt = 0;  // parts per thousand
};
struct Heartbeat {
  std::uint64_t seq = 0;
  std::uint64_t ts = 0;
};

// L3IdentityFrame: control 0x40, sequenced; its payload is the L3 identity record. At the frame
// level the payload is opaque (0..255 bytes, a view into the decoded input like Data): the
// record's own checks (decode_l3_identity) run when the frame reaches the head of the
// receiver's reorder buffer, so that a bad record ends its flow with a clear error instead of
// tearing down the carrier it came on.
inline constexpr std::size_t kMaxL3Frame = 255;
struct L3IdentityFrame {
  std::uint64_t seq = 0;
  std::span<const std::byte> record;
};

// ShutdownWrite: control 0x41, sequenced, no payload: the end of the sender's direction (a
// half-close). The receiver's reader sees EOF once every frame before it was read; the other
// direction keeps flowing. Sent only when the HELLO / HELLO_ACK negotiated caps bit 13.
struct ShutdownWrite {
  std::uint64_t seq = 0;
};

// Refuse: control 0x42, sequenced, payload `code u8 [str8 detail]`: the sender refuses the
// flow (an egress that will not or cannot land it) and ends it; the receiver's flow ends with
// flow_refused once every frame before it was admitted. Any code value is carried (the
// RefusalCode names are rendr/engine/types.hpp). Sent only when the HELLO / HELLO_ACK
// negotiated caps bit 15.
struct Refuse {
  std::uint64_t seq = 0;
  std::uint8_t code = 0;
  std::optional<std::string> detail;
};

using Frame = std::variant<Data, Hello, HelloAck, BridgeTag, BridgeAck, Probe, ProbeReply, Ack,
                           Bye, MigrateNotify, PathQualityReport, Heartbeat, L3IdentityFrame,
                           ShutdownWrite, Refuse>;

// The L3 identity record (docs/wire.md "L3 identity"), 40 bytes:
//   [0] version (1) | [1] proto | [2] family (4|6) | [3] 0 | [4:6] src port | [6:8] dst port |
//   [8:24] src IP | [24:40] dst IP   (IPv4 in the first 4 bytes of its field, the rest 0)
inline constexpr std::size_t kL3RecordSize = 40;
inline constexpr std::uint8_t kL3RecordVersion = 1;
using L3Record = std::array<std::byte, kL3RecordSize>;
// encode_l3_identity: the record of |id|. Error: bad_l3_identity (check_l3_identity fails).
[[nodiscard]] Result<L3Record> encode_l3_identity(const L3Identity& id);
// decode_l3_identity is strict: a record decodes only when it re-encodes to exactly |record|
// (length 40, version 1, byte 3 zero, a known protocol that fits the family, IPv4 padding zero,
// no IPv4-mapped IPv6). Error: bad_l3_identity naming the field.
[[nodiscard]] Result<L3Identity> decode_l3_identity(std::span<const std::byte> record);

// frame_seq returns the SEQ a frame occupies (0 for out-of-band controls).
[[nodiscard]] std::uint64_t frame_seq(const Frame& f);
// frame_name is a short lower-case name for logs and errors ("data", "hello", ...).
[[nodiscard]] const char* frame_name(const Frame& f);

// encode_frame appends the wire form of |f| (header + payload, no carrier prefix) to |out|.
// Fails with malformed_frame for SEQ out of range for the kind, frame_too_large for a DATA
// payload over kMaxPayload, or a str8 over kMaxName; |out| is unchanged then.
[[nodiscard]] Status encode_frame(const Frame& f, std::vector<std::byte>& out);

// encode_data_header appends the 8-byte DATA header for |seq| (hot path; caller appends the
// payload). Precondition: 1 <= seq <= kMaxSeq.
void encode_data_header(std::uint64_t seq, std::vector<std::byte>& out);

// decode_frame decodes exactly one frame (no carrier prefix). Data::payload views |wire|.
[[nodiscard]] Result<Frame> decode_frame(std::span<const std::byte> wire);

// append_stream_prefix appends the u16 length prefix for a frame of |frame_size| bytes.
// Precondition: 8 <= frame_size <= kMaxStreamFrame.
void append_stream_prefix(std::size_t frame_size, std::vector<std::byte>& out);
// stream_prefix_length reads the u16 length prefix at |p| (2 bytes must be readable);
// short_stream_prefix is the error for one below kHeaderSize (the carrier is out of sync).
[[nodiscard]] std::size_t stream_prefix_length(const std::byte* p);
[[nodiscard]] Error short_stream_prefix(std::size_t len);

// StreamDeframer splits a byte stream (TCP and other ordered carriers) into frames at the u16
// length prefixes. feed() accepts any split of the input; next() returns the next complete frame
// (a view valid until the next feed()/next() call), std::nullopt when more input is needed, or
// frame_too_large for a zero length prefix / a frame shorter than a header. After an error the
// deframer stays failed: the carrier is out of sync and must be closed.
// The listener uses it for the first frame of a fresh carrier; a flow's own stream paths parse
// in place in their receive chunks (FlowCore::recv_space).
class StreamDeframer {
 public:
  void feed(std::span<const std::byte> bytes);
  [[nodiscard]] Result<std::optional<std::span<const std::byte>>> next();
  [[nodiscard]] std::size_t buffered() const { return buf_.size() - pos_ + view_.size(); }
  // release_buffered hands back the bytes not yet returned as frames (a listener that read the
  // first frame itself passes them on to FlowCore::on_receive) and empties the deframer.
  [[nodiscard]] std::vector<std::byte> release_buffered();
  [[nodiscard]] bool failed() const { return failed_; }

 private:
  // feed_view takes bytes without copying them (feed() copies what next() has not consumed
  // right after): whole frames are returned as views and only a split frame is assembled.
  void feed_view(std::span<const std::byte> bytes);
  void stash_view();  // copy the unconsumed fed bytes into buf_
  void take_from_view(std::size_t n);
  std::vector<std::byte> buf_;  // an incomplete frame (from pos_)
  std::size_t pos_ = 0;
  std::span<const std::byte> view_;  // fed bytes not yet consumed
  bool failed_ = false;
};

// FirstFrame: what a listener may see first on a fresh carrier.
using FirstFrame = std::variant<Hello, BridgeTag>;
// classify_first_frame decodes |wire| and accepts only HELLO or BRIDGE_TAG (anything else is
// peer_protocol: the carrier is not a rendr client and must be closed).
[[nodiscard]] Result<FirstFrame> classify_first_frame(std::span<const std::byte> wire);

}  // namespace rendr::engine
