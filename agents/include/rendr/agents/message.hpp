// SPDX-License-Identifier: Apache-2.0
// Agent messages: one binary format for the control socket (rendrctl, embedders <-> local agent;
// one message per SOCK_SEQPACKET datagram, an fd may ride along with SCM_RIGHTS) and the
// agent-to-agent channel (TLS stream; each message prefixed by its u32 length). I/O-free.
//
// Body (big-endian): u16 type | u32 field count | field* ; field = u16 tag | u32 len | bytes.
// Tags may repeat (lists keep their order). decode() refuses anything truncated, oversized or
// with trailing bytes, with a message; unknown tags are kept (forward compatibility).
#pragma once

#include <rendr/common/result.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace rendr::agents {

// Message types. 0x01xx: control socket requests, 0x02xx: agent -> embedder, 0x03xx: replies,
// 0x04xx: agent-to-agent.
enum class MsgType : std::uint16_t {
  // control requests (rendrctl / embedder -> agent)
  register_service = 0x0101,  // tag service
  track = 0x0102,             // tag conn_id, tuple
  untrack = 0x0103,           // tag conn_id
  status = 0x0104,            // [tag peer]: status of this agent or of a peer agent
  metrics = 0x0105,           // Prometheus text
  flows = 0x0106,             // JSON list of flows
  migrate = 0x0107,           // tag to; tuple* | service | all
  exported = 0x0108,          // embedder -> agent: tag conn_id, state; fd attached
  export_refused = 0x0109,    // embedder -> agent: tag conn_id, text
  adopt_failed = 0x010A,      // embedder -> agent: tag conn_id, text (adoption refused)
  reclaim = 0x010B,  // embedder -> agent: tag conn_id, tuple, state; fd attached: an export a
                     // previous agent froze and died on (reclaim.hpp); answered later by
                     // export_done (it lives elsewhere) or returned
  // agent -> embedder
  export_request = 0x0201,  // tag mig, conn_id*
  export_done = 0x0202,     // tag conn_id, ok (1 committed / 0 returned)
  returned = 0x0203,        // tag conn_id, state; fd attached (abort: the connection stays here)
  adopt = 0x0204,           // tag conn_id, tuple, state; fd attached
  // replies
  ok = 0x0301,        // [tag text]
  fail = 0x0302,      // tag text (error message), [tag code]
  json = 0x0303,      // tag text (a JSON document)
  text = 0x0304,      // tag text
  progress = 0x0305,  // tag text: one progress line of a long request; the final reply follows
  // agent <-> agent
  hello = 0x0401,      // tag name, version
  offer = 0x0402,      // tag mig, service, (conn_id, snapshot, state)* in order
  ready = 0x0403,      // tag mig
  steer = 0x0404,      // tag mig, backend, tuple*
  steered = 0x0405,    // tag mig
  commit = 0x0406,     // tag mig
  committed = 0x0407,  // tag mig, [tag adopted]
  abort = 0x0408,      // tag mig, [tag text]
  aborted = 0x0409,    // tag mig
  query = 0x040A,      // tag mig, or tag tuple (a restarted source reclaiming a frozen
                       // connection: a move of it staged here from the asker aborts first)
  mig_state = 0x040B,  // tag mig, text (unknown | staged | committed | aborted)
  peer_fail = 0x040C,  // tag mig, text
  steer_check = 0x040D,  // tag mig, backend, tuple*: could the gateway steer these? (no change)
  // agent <-> its userstack keeper (a local socket; agents/src/us_keeper.hpp)
  keeper_hello = 0x0501,
  keeper_checkpoint = 0x0502,
  keeper_take_held = 0x0503,
  keeper_release = 0x0504,
  keeper_thaw = 0x0505,
  keeper_unfreeze = 0x0506,
  keeper_stage = 0x0507,
  keeper_activate = 0x0508,
  keeper_drop_staged = 0x0509,
  keeper_reset = 0x050A,
  keeper_status = 0x050B,
  keeper_accepted = 0x0510,
  keeper_ended = 0x0511,
};

enum class Tag : std::uint16_t {
  text = 1,
  code = 2,
  service = 3,
  conn_id = 4,
  tuple = 5,
  state = 6,
  snapshot = 7,
  mig = 8,
  to = 9,
  peer = 10,
  name = 11,
  version = 12,
  backend = 13,
  ok = 14,
  all = 15,
  adopted = 16,
  json = 17,
  timeout_ms = 18,
  // OFFER and COMMIT, one per migrated connection in offer order: what the peer acknowledged
  // while the source's freeze dropped its ACKs - bit 48 set, the raw window of that ACK in
  // bits 32-47, the highest ACK number in bits 0-31 - or 0 when none is known.
  peer_ack = 19,
  // COMMIT, any number: a packet the peer sent while the source's freeze dropped it, to replay
  // on the target after activation - u32 connection index (offer order) + the IP packet.
  replay = 20,
  // OFFER, one per migrated connection in offer order: packets the source's freeze dropped from
  // the server (an ACK among them is one its snapshot counts as delivered), 0 = none. Optional.
  server_dropped = 21,
  // A userstack keeper's hello reply (agent-local): a connection a move captured and left
  // frozen when its agent went away.
  held_tuple = 22,
};

[[nodiscard]] const char* to_string(MsgType t);

// Limits: the decoder rejects more than this (a snapshot carries at most a few socket buffers).
inline constexpr std::size_t kMaxMessage = 256U << 20;
inline constexpr std::size_t kMaxFields = 1U << 20;

struct Field {
  Tag tag;
  std::vector<std::byte> value;
};

class Message {
 public:
  Message() = default;
  explicit Message(MsgType t) : type_(t) {}

  [[nodiscard]] MsgType type() const { return type_; }
  [[nodiscard]] const std::vector<Field>& fields() const { return fields_; }

  Message& add(Tag tag, std::span<const std::byte> value);
  Message& add(Tag tag, std::vector<std::byte>&& value);
  Message& add(Tag tag, std::string_view value);
  Message& add_u64(Tag tag, std::uint64_t value);

  // get: the first field with |tag|; all: every one, in order.
  [[nodiscard]] const std::vector<std::byte>* get(Tag tag) const;
  [[nodiscard]] std::vector<const std::vector<std::byte>*> all(Tag tag) const;
  // str / u64: typed reads of the first |tag| field; errors name the tag and the type.
  [[nodiscard]] Result<std::string> str(Tag tag) const;
  [[nodiscard]] std::string str_or(Tag tag, std::string_view dflt) const;
  [[nodiscard]] Result<std::uint64_t> u64(Tag tag) const;
  [[nodiscard]] std::vector<std::string> strs(Tag tag) const;
  [[nodiscard]] Result<std::vector<std::uint64_t>> u64s(Tag tag) const;

  [[nodiscard]] std::vector<std::byte> encode() const;
  // encode_framed prefixes the body with its u32 length (stream transports).
  [[nodiscard]] std::vector<std::byte> encode_framed() const;
  [[nodiscard]] static Result<Message> decode(std::span<const std::byte> body);

 private:
  MsgType type_ = MsgType::ok;
  std::vector<Field> fields_;
};

// Helpers for the common replies.
[[nodiscard]] Message ok_msg(std::string_view text = {});
[[nodiscard]] Message fail_msg(const Error& e);
[[nodiscard]] Message fail_msg(std::string_view text);
// error_of turns a fail reply into an Error (EPROTO-coded unless the peer sent a code); any other
// message type yields an EPROTO "unexpected reply" Error.
[[nodiscard]] Error error_of(const Message& m, std::string_view what);

// FrameReader reassembles u32-length-prefixed messages from a byte stream.
class FrameReader {
 public:
  // |max_frame| bounds one frame (at most kMaxMessage): a longer length prefix is an error as
  // soon as its 4 bytes arrive, before any of the body is buffered.
  explicit FrameReader(std::size_t max_frame = kMaxMessage)
      : max_(max_frame < kMaxMessage ? max_frame : kMaxMessage) {}

  // feed appends bytes; next() returns a complete message if there is one, nullopt if more
  // bytes are needed, or an error for an oversized or malformed frame (the stream is then
  // unusable).
  void feed(std::span<const std::byte> data);
  [[nodiscard]] Result<std::optional<Message>> next();
  // buffered: bytes fed but not yet returned as messages.
  [[nodiscard]] std::size_t buffered() const { return buf_.size() - off_; }
  // need: how many more bytes complete the current frame (its length prefix first), 0 if a
  // whole frame is buffered. Lets a reader fetch a large frame in one read.
  [[nodiscard]] std::size_t need() const;

 private:
  std::vector<std::byte> buf_;
  std::size_t off_ = 0;
  std::size_t max_;
};

}  // namespace rendr::agents
