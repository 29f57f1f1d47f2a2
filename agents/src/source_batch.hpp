// SPDX-License-Identifier: Apache-2.0
// rendr-agent: what one source batch holds while SourceMigration (rendr/agents/
// source_migration.hpp) walks it: the flows, their exported fds and checkpoints, the channels,
// and the numbers its report carries. The steps (migrate_steps.cpp, migrate_undo.cpp) read and
// fill it; migrate_source.cpp selects the flows and drives the core.
#pragma once

#include "agent_internal.hpp"

#include <rendr/agents/source_migration.hpp>

namespace rendr::agents {

struct SourceBatch {
  std::shared_ptr<seqp::socket> ctl;  // the control client (progress lines), may be null
  std::uint64_t mig = 0;
  std::string to;
  std::string service;
  std::vector<FlowRec*> sel;
  std::vector<FourTuple> tuples;
  std::vector<std::string> ended;  // flows that ended before they could move: "tuple: why"
  std::size_t n = 0;
  std::unique_ptr<PeerConn> chan;   // to the target
  std::unique_ptr<PeerConn> gw;     // to the gateway
  std::unique_ptr<PeerConn> query;  // fresh channel of the last commit query
  std::vector<ExportSlot> slots;
  std::vector<std::vector<std::byte>> encoded;
  // Per flow, created at the freeze: the method's operations (flow_method.hpp).
  std::vector<std::unique_ptr<SourceFlow>> moving;
  // Each native socket's options and 4-tuple, read after the export while the flow still ran
  // (empty: read by the checkpoint inside the freeze instead).
  std::vector<std::optional<PreFreeze>> pre_freeze;

  // keep_first: the batch is its first |k| flows (the per-flow vectors above, compacted by the
  // caller, are cut to |k|).
  void keep_first(std::size_t k) {
    n = k;
    sel.resize(k);
    tuples.resize(k);
    slots.resize(k);
    encoded.resize(k);
    moving.resize(k);
    if (pre_freeze.size() > k) {
      pre_freeze.resize(k);
    }
  }
  std::uint64_t bytes_carried = 0;
  std::uint64_t drained_bytes = 0;  // send-queue bytes when the drain before the freeze began
  std::string drain_stop;           // why it ended (drain.hpp)
  std::uint64_t replayed_total = 0;  // packets the freeze dropped, shipped for replay on B
  std::uint64_t replayed_bytes = 0;    // their IP packet bytes
  std::uint64_t unrecorded_total = 0;  // packets the freeze dropped but could not keep
  double frozen_ms = 0;
  Clock::time_point t0{};
  Clock::time_point freeze_t0{};
  Clock::time_point ship_t0{};
  Clock::time_point commit_t0{};
  std::map<std::string, double> step_ms;

  // steer_msg asks the gateway to send every flow of this batch to |backend|.
  [[nodiscard]] Message steer_msg(const std::string& backend,
                                  MsgType type = MsgType::steer) const {
    Message sr(type);
    sr.add_u64(Tag::mig, mig).add(Tag::backend, backend);
    for (const auto& t : tuples) {
      sr.add(Tag::tuple, t.to_string());
    }
    return sr;
  }
};

}  // namespace rendr::agents
