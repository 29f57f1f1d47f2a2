// SPDX-License-Identifier: Apache-2.0
// BridgeTable: a listener's flows, keyed by the 16-byte flow_id, I/O-free. The shell reads the
// first frame of every fresh carrier (StreamDeframer, or the first datagram after the udpflow
// header) and hands it to accept():
//   HELLO       -> a new server FlowCore (stream or packet kind from the HELLO's caps bit),
//                  its path 1 = this carrier, HELLO_ACK queued           -> Attached{new_flow}
//   HELLO again from the same client instance (its HELLO_ACK was lost)
//               -> accept_hello_again: another path, HELLO_ACK queued     -> Attached
//   BRIDGE_TAG  -> accept_bridge on the named flow, BRIDGE_ACK queued    -> Attached
//   BRIDGE_TAG for a flow not known yet (it may race its HELLO on another carrier)
//                                                                        -> Retry (park the
//                  carrier; call again when a HELLO arrived or with final_attempt after 500 ms)
//   anything else, duplicates, a full table, mismatches                  -> Rejected: write
//                  |reply| (already framed for the carrier; may be empty), then close.
// The shell feeds bytes after the first frame to the flow's on_receive, drives the flows, and
// calls reap() to drop dead ones after flushing their last output. One thread, like FlowCore.
//
// Engine core (rendr::engine_core, <rendr/engine/core/...>): not part of the embedder API.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/engine/core/flow.hpp>
#include <rendr/engine/core/wire.hpp>

#include <cstddef>
#include <map>
#include <span>
#include <variant>
#include <vector>

namespace rendr::engine {

struct BridgeConfig {
  FlowConfig stream;            // server flows for stream HELLOs
  FlowConfig packet;            // server flows for packet HELLOs (caps bit set by the table)
  bool accept_stream = true;
  bool accept_packet = true;
  std::size_t capacity = 4096;  // flows
  Id128 instance_id{};          // this listener's engine instance
};

struct BridgeAttached {
  Id128 flow_id{};
  PathId path = 0;
  bool new_flow = false;  // a HELLO: publish the flow on the accept queue
};
struct BridgeRejected {
  Error error;
  std::vector<std::byte> reply;  // framed for the carrier; write it, then close the carrier
};
struct BridgeRetry {};
using BridgeAccept = std::variant<BridgeAttached, BridgeRejected, BridgeRetry>;

class BridgeTable {
 public:
  // create validates both flow configs (invalid_config).
  [[nodiscard]] static Result<BridgeTable> create(const BridgeConfig& cfg);

  // accept classifies a fresh carrier's first frame (no length prefix). |opts.framing| says how
  // the reply is framed. Rejection errors: peer_protocol (not HELLO/BRIDGE_TAG, or malformed),
  // flow_mismatch (HELLO for a live flow from another instance: answered with
  // BYE(proto_version)), table_full, wrong_mode
  // (a kind this listener does not serve), unknown_flow on the final attempt, and
  // accept_bridge's errors (each answered with the matching BRIDGE_ACK code).
  [[nodiscard]] BridgeAccept accept(std::span<const std::byte> first_frame,
                                    const PathOptions& opts, TimePoint now,
                                    bool final_attempt = false);

  [[nodiscard]] FlowCore* find(const Id128& flow_id);
  [[nodiscard]] std::size_t size() const { return flows_.size(); }
  // reap removes dead flows with nothing left to hand out (no unread data, no queued output)
  // and returns their ids (the shell closes their carriers). A dead flow whose application
  // never reads stays until remove().
  std::vector<Id128> reap();
  // remove drops a flow unconditionally (its Conn was closed / destroyed by the application).
  void remove(const Id128& flow_id) { flows_.erase(flow_id); }
  std::map<Id128, FlowCore>& flows() { return flows_; }

 private:
  explicit BridgeTable(const BridgeConfig& cfg) : cfg_(cfg) {}
  BridgeConfig cfg_;
  std::map<Id128, FlowCore> flows_;
};

}  // namespace rendr::engine
