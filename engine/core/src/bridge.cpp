// SPDX-License-Identifier: Apache-2.0
#include <rendr/engine/core/bridge.hpp>
#include <rendr/engine/errors.hpp>

#include <algorithm>
#include <string>

namespace rendr::engine {
namespace {

std::vector<std::byte> framed(const Frame& f, Framing framing) {
  std::vector<std::byte> frame;
  if (!encode_frame(f, frame).ok()) {
    return {};
  }
  if (framing == Framing::datagram) {
    return frame;
  }
  std::vector<std::byte> out;
  append_stream_prefix(frame.size(), out);
  out.insert(out.end(), frame.begin(), frame.end());
  return out;
}

BridgeAckCode code_for(const Error& e) {
  if (e.code == make_error_code(errc::instance_mismatch)) {
    return BridgeAckCode::instance_mismatch;
  }
  if (e.code == make_error_code(errc::flow_mismatch)) {
    return BridgeAckCode::unknown_flow;
  }
  if (e.code == make_error_code(errc::closed)) {
    return BridgeAckCode::proto_state;
  }
  return BridgeAckCode::attach_failed;
}

}  // namespace

Result<BridgeTable> BridgeTable::create(const BridgeConfig& cfg) {
  RENDR_TRY_CTX(validate_config(cfg.stream), "bridge table: stream flow config");
  BridgeConfig c = cfg;
  c.stream.caps &= ~kCapsPacketMode;
  c.packet.caps |= kCapsPacketMode;
  RENDR_TRY_CTX(validate_config(c.packet), "bridge table: packet flow config");
  return BridgeTable(c);
}

FlowCore* BridgeTable::find(const Id128& flow_id) {
  auto it = flows_.find(flow_id);
  return it == flows_.end() ? nullptr : &it->second;
}

std::vector<Id128> BridgeTable::reap() {
  std::vector<Id128> gone;
  for (auto it = flows_.begin(); it != flows_.end();) {
    const FlowCore& f = it->second;
    const auto ids = f.path_ids();
    const bool drained = f.readable() == 0 && !f.packet_ready() &&
                         std::none_of(ids.begin(), ids.end(),
                                      [&f](PathId p) { return f.wants_transmit(p); });
    if (f.state() == FlowState::dead && drained) {
      gone.push_back(it->first);
      it = flows_.erase(it);
    } else {
      ++it;
    }
  }
  return gone;
}

BridgeAccept BridgeTable::accept(std::span<const std::byte> first_frame, const PathOptions& opts,
                                 TimePoint now, bool final_attempt) {
  auto first = classify_first_frame(first_frame);
  if (!first.ok()) {
    // Not a rendr client (or garbage): nothing we could say makes sense to it.
    Error e = std::move(first).take_error();
    if (e.code != make_error_code(errc::peer_protocol)) {
      e = make_error(errc::peer_protocol, e.message());
    }
    return BridgeRejected{std::move(e), {}};
  }
  if (auto* hello = std::get_if<Hello>(&*first)) {
    const bool packet = (hello->caps & kCapsPacketMode) != 0;
    if (packet ? !cfg_.accept_packet : !cfg_.accept_stream) {
      return BridgeRejected{make_error(errc::wrong_mode, packet ? "listener serves no packet flows"
                                                                : "listener serves no stream flows"),
                            framed(Bye{1, ByeReason::proto_version}, opts.framing)};
    }
    if (FlowCore* live = find(hello->flow_id)) {
      // The same client repeating its HELLO (the HELLO_ACK was lost) gets the carrier attached
      // and a new HELLO_ACK; anyone else is a duplicate.
      auto again = live->accept_hello_again(*hello, opts, now);
      if (again.ok()) {
        return BridgeAttached{hello->flow_id, *again, false};
      }
      return BridgeRejected{std::move(again).take_error(),
                            framed(Bye{1, ByeReason::proto_version}, opts.framing)};
    }
    if (flows_.size() >= cfg_.capacity) {
      return BridgeRejected{make_error(errc::table_full, "bridge table holds " +
                                                             std::to_string(flows_.size()) +
                                                             " flows"),
                            {}};
    }
    // A flow whose first path is a datagram carrier sends frames that fit it (a quic listener
    // takes stream and DATAGRAM connections alike: the HELLO's carrier decides).
    FlowConfig fc = packet ? cfg_.packet : cfg_.stream;
    if (opts.max_frame > kHeaderSize && opts.max_frame - kHeaderSize < fc.max_payload) {
      fc.max_payload = opts.max_frame - kHeaderSize;
    }
    auto core = FlowCore::server(fc, *hello, cfg_.instance_id, opts, now);
    if (!core.ok()) {
      return BridgeRejected{std::move(core).take_error(), {}};
    }
    const PathId path = core->path_ids().front();
    const Id128 id = hello->flow_id;
    flows_.emplace(id, std::move(core).value());
    return BridgeAttached{id, path, true};
  }
  const auto& tag = std::get<BridgeTag>(*first);
  BridgeAck nack;
  nack.bridge_id = tag.bridge_id;
  nack.instance_id = cfg_.instance_id;
  FlowCore* flow = find(tag.bridge_id);
  if (flow == nullptr) {
    if (!final_attempt) {
      return BridgeRetry{};
    }
    nack.code = BridgeAckCode::unknown_flow;
    return BridgeRejected{make_error(errc::unknown_flow, "bridge_tag for an unknown flow"),
                          framed(nack, opts.framing)};
  }
  auto path = flow->accept_bridge(tag, opts, now);
  if (!path.ok()) {
    nack.code = code_for(path.error());
    return BridgeRejected{std::move(path).take_error(), framed(nack, opts.framing)};
  }
  return BridgeAttached{tag.bridge_id, *path, false};
}

}  // namespace rendr::engine
