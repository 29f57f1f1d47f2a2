// SPDX-License-Identifier: Apache-2.0
// Engine error codes. Every failure the engine reports is a rendr::Error whose code is in
// engine_category() (so callers and tests can match exact codes) and whose context says which
// flow/path/frame it concerns. Migrations are never errors; only end-of-life causes, protocol
// violations and API misuse are. Transport errors never map to EOF (EOF is not an error at all:
// FlowCore::read reports it as ReadOutcome::eof).
#pragma once

#include <rendr/common/result.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <system_error>

namespace rendr::engine {

enum class errc {
  // Wire decoding (a path that produces these is torn down; the flow survives on others).
  malformed_frame = 1,       // wrong length/layout, reserved bits set, bad SEQ for the kind
  frame_too_large,           // carrier length prefix or DATA payload over the limit
  unknown_control,           // control code this implementation does not speak
  unsupported_version,       // header VER != 0
  // End of a flow (FlowCore::close_error()).
  peer_proto_version,        // peer speaks another wire version (BYE reason ProtoVer)
  peer_protocol,             // peer violated the protocol (undecodable BYE, bad handshake...)
  peer_closed,               // peer closed with BYE reason AppRequest
  migration_budget_exceeded, // all paths died and none came back within the budget
  zombie,                    // repeated death migrations with no payload flowing
  recv_window_exceeded,      // peer ran further ahead than the bounded reorder window
  graceful_close_timeout,    // our BYE was not acknowledged in time
  closed,                    // the flow is closed locally
  // API misuse / refusals.
  mode_switch_illegal,       // race <-> bond
  last_path,                 // remove_path of the only usable path
  unknown_path,              // no such path id on this flow
  packet_too_large,          // packet-mode write larger than one DATA payload
  not_ready,                 // operation needs an established flow
  invalid_config,            // FlowConfig out of range
  flow_mismatch,             // HELLO_ACK / BRIDGE_TAG for another flow_id
  instance_mismatch,         // BRIDGE_TAG expects another instance
  bridge_rejected,           // peer answered BRIDGE_TAG with a non-ok code
  sequence_exhausted,        // 2^48 - 1 sequence numbers used
  path_dead,                 // a path was declared dead (silent, stalled, removed)
  unknown_flow,              // BRIDGE_TAG names a flow this listener does not have
  table_full,                // bridge table at capacity
  wrong_mode,                // stream call on a packet flow or the reverse
  too_many_paths,            // more than 64 live paths on one flow
  wrong_side,                // client-only / server-only operation on the other side
  evicted,                   // a flooded listener dropped this half-open flow (no carrier left
                             // or never accepted) to admit a new one
  bad_l3_identity,           // a malformed, repeated or unexpected L3 identity record (ends
                             // that flow only); also an identity the record cannot carry
  peer_unsupported,          // the peer did not negotiate a feature this flow needs (HELLO caps)
  flow_refused,              // the peer refused the flow (REFUSE; FlowStats::peer_refusal says why)
};

[[nodiscard]] const std::error_category& engine_category() noexcept;
[[nodiscard]] std::error_code make_error_code(errc e) noexcept;
[[nodiscard]] Error make_error(errc e, std::string context);

enum class RefusalCode : std::uint8_t;  // types.hpp
// refusal_code: the peer's RefusalCode when |e| is a flow_refused error (a dial, read or write
// of a flow the peer refused: Error::reason carries it); empty for any other error. The text
// of |e| is for people; callers that act on the reason (the TUN ingress's counters) use this.
[[nodiscard]] std::optional<RefusalCode> refusal_code(const Error& e);

}  // namespace rendr::engine

template <>
struct std::is_error_code_enum<rendr::engine::errc> : std::true_type {};
