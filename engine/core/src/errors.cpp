// SPDX-License-Identifier: Apache-2.0
#include <rendr/engine/errors.hpp>

namespace rendr::engine {
namespace {

class Category final : public std::error_category {
 public:
  [[nodiscard]] const char* name() const noexcept override { return "rendr.engine"; }
  [[nodiscard]] std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::malformed_frame: return "malformed frame";
      case errc::frame_too_large: return "frame too large";
      case errc::unknown_control: return "unknown control code";
      case errc::unsupported_version: return "unsupported wire version";
      case errc::peer_proto_version: return "peer speaks another protocol version";
      case errc::peer_protocol: return "peer protocol violation";
      case errc::peer_closed: return "peer closed the flow";
      case errc::migration_budget_exceeded: return "migration budget exceeded";
      case errc::zombie: return "zombie flow (migrations without payload)";
      case errc::recv_window_exceeded: return "receive reorder window exceeded";
      case errc::graceful_close_timeout: return "graceful close timed out";
      case errc::closed: return "flow closed";
      case errc::mode_switch_illegal: return "illegal mode switch";
      case errc::last_path: return "last path";
      case errc::unknown_path: return "unknown path";
      case errc::packet_too_large: return "packet too large";
      case errc::not_ready: return "flow not ready";
      case errc::invalid_config: return "invalid configuration";
      case errc::flow_mismatch: return "flow id mismatch";
      case errc::instance_mismatch: return "instance id mismatch";
      case errc::bridge_rejected: return "bridge rejected by peer";
      case errc::sequence_exhausted: return "sequence space exhausted";
      case errc::path_dead: return "path dead";
      case errc::unknown_flow: return "unknown flow";
      case errc::table_full: return "bridge table full";
      case errc::wrong_mode: return "operation does not match the flow's stream/packet mode";
      case errc::too_many_paths: return "too many paths";
      case errc::wrong_side: return "operation not valid on this side of the flow";
      case errc::evicted: return "evicted by the listener to admit other flows";
      case errc::bad_l3_identity: return "bad L3 identity record";
      case errc::peer_unsupported: return "the peer does not support this feature";
      case errc::flow_refused: return "the peer refused the flow";
    }
    return "unknown engine error";
  }
};

}  // namespace

const std::error_category& engine_category() noexcept {
  static const Category c;
  return c;
}

std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), engine_category()};
}

Error make_error(errc e, std::string context) {
  return Error{make_error_code(e), std::move(context)};
}

std::optional<RefusalCode> refusal_code(const Error& e) {
  if (e.code != make_error_code(errc::flow_refused) || !e.reason) {
    return std::nullopt;
  }
  return static_cast<RefusalCode>(*e.reason);
}

}  // namespace rendr::engine
