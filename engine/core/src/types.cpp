// SPDX-License-Identifier: Apache-2.0
// The embedder API's value types (rendr/engine/types.hpp): FlowConfig validation and the
// names of the flow enums.
#include <rendr/engine/errors.hpp>
#include <rendr/engine/types.hpp>

#include <rendr/engine/core/wire.hpp>

#include <string>

namespace rendr::engine {

std::string_view to_string(FlowState s) {
  switch (s) {
    case FlowState::init: return "init";
    case FlowState::handshaking: return "handshaking";
    case FlowState::active: return "active";
    case FlowState::migrating: return "migrating";
    case FlowState::closing: return "closing";
    case FlowState::dead: return "dead";
  }
  return "unknown";
}

std::string_view to_string(PathState s) {
  switch (s) {
    case PathState::pending: return "pending";
    case PathState::hello: return "hello";
    case PathState::bridging: return "bridging";
    case PathState::ready: return "ready";
  }
  return "unknown";
}

std::string_view to_string(MigrateCause c) {
  switch (c) {
    case MigrateCause::explicit_request: return "explicit";
    case MigrateCause::death: return "death";
    case MigrateCause::quality: return "quality";
  }
  return "unknown";
}

std::string_view to_string(DeadlineKind k) {
  switch (k) {
    case DeadlineKind::budget: return "budget";
    case DeadlineKind::close: return "close";
    case DeadlineKind::ack: return "ack";
    case DeadlineKind::handshake: return "handshake";
    case DeadlineKind::handshake_repeat: return "handshake_repeat";
    case DeadlineKind::probe: return "probe";
    case DeadlineKind::probe_expiry: return "probe_expiry";
    case DeadlineKind::silence: return "silence";
    case DeadlineKind::stall: return "stall";
    case DeadlineKind::sched_tick: return "sched_tick";
    case DeadlineKind::rto: return "rto";
    case DeadlineKind::transport: return "transport";
  }
  return "unknown";
}

Status validate_config(const FlowConfig& c) {
  const auto bad = [](const char* what) { return make_error(errc::invalid_config, what); };
  if (c.max_payload == 0 || c.max_payload > kMaxPayload) {
    return bad("max_payload must be in 1..32768");
  }
  if (c.ledger_max_frames == 0 || c.ledger_max_bytes < kHeaderSize + c.max_payload) {
    return bad("ledger must hold at least one maximal frame");
  }
  if (c.unsent_max_bytes < kHeaderSize + c.max_payload) {
    return bad("unsent_max_bytes must hold at least one maximal frame");
  }
  if (c.reorder_max_frames == 0 || c.reorder_max_bytes < c.max_payload ||
      c.recv_window_bytes == 0) {
    return bad("reorder buffer and receive window must be non-empty");
  }
  if (c.handshake_timeout <= Duration::zero()) {
    return bad("handshake_timeout must be > 0");
  }
  if (c.probe_interval <= Duration::zero() || c.sched_tick <= Duration::zero() ||
      c.fresh_min <= Duration::zero() || c.stall_min <= Duration::zero() ||
      c.rto_min <= Duration::zero()) {
    return bad("probe_interval, sched_tick, fresh_min, stall_min, rto_min must be > 0");
  }
  if (c.ack_silence_min < Duration::zero()) {
    return bad("ack_silence_min must be >= 0 (0: off)");
  }
  if (c.migration_budget <= Duration::zero() || c.migration_budget > std::chrono::seconds(90)) {
    return bad("migration_budget must be in (0, 90 s]");
  }
  if (!c.listener_key.empty() && (c.listener_key.size() < kMinListenerKey ||
                                  c.listener_key.size() > kMaxListenerKey)) {
    return bad("listener_key must be empty or 16 to 64 bytes");
  }
  if (c.l3_identity) {
    if (auto st = check_l3_identity(*c.l3_identity); !st) {
      return make_error(errc::invalid_config, st.error().context);
    }
  }
  if (c.silent_budget < Duration::zero() || c.silent_budget > c.migration_budget) {
    return bad("silent_budget must be in [0, migration_budget]");
  }
  if (!(c.hysteresis > 0.0) || c.bond_pin == 0 || c.bond_pin > 256 ||
      c.zombie_max_migrations < 1) {
    return bad("hysteresis > 0, bond_pin 1..256, zombie_max_migrations >= 1");
  }
  return {};
}

}  // namespace rendr::engine

namespace rendr::engine {

namespace {
constexpr std::array<std::string_view, 6> kRefusalNames = {
    "unspecified", "flow_denied", "missing_egress", "identity_mismatch", "egress_timeout",
    "egress_error"};
}  // namespace

std::string to_string(RefusalCode c) {
  const auto i = static_cast<std::size_t>(c);
  if (i < kRefusalNames.size()) {
    return std::string(kRefusalNames[i]);
  }
  return "code_" + std::to_string(i);
}

std::optional<RefusalCode> refusal_code_from_string(std::string_view s) {
  for (std::size_t i = 0; i < kRefusalNames.size(); ++i) {
    if (kRefusalNames[i] == s) {
      return static_cast<RefusalCode>(i);
    }
  }
  return std::nullopt;
}

}  // namespace rendr::engine
