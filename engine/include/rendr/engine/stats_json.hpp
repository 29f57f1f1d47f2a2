// SPDX-License-Identifier: Apache-2.0
// Engine status as JSON, for `rendrctl status` (docs/engine.md "Status"). A process that embeds
// the engine publishes its flows by writing one status file per process into the engine status
// directory ($RENDR_ENGINE_STATUS_DIR, default /run/rendr/engine); rendrctl reads every file
// there whose process is still alive. The library never serves anything itself (STYLE L4): the
// embedder decides when to write (e.g. every second, or on demand).
#pragma once

#include <rendr/common/json.hpp>
#include <rendr/common/result.hpp>
#include <rendr/engine/types.hpp>

#include <span>
#include <string>
#include <string_view>

namespace rendr::engine {

[[nodiscard]] std::string id_hex(const Id128& id);
// write_flow_stats appends |s| as one JSON object (under |key| when non-empty): flow id, side,
// state, mode, active path, counters, and per path: id, name, transport, local, remote, state,
// active, rtt_us, jitter_us, loss_ppt, bytes/frames rx/tx, recv_dups.
void write_flow_stats(JsonWriter& w, const FlowStats& s, std::string_view key = {});
[[nodiscard]] std::string flow_stats_json(const FlowStats& s);

// engine_status_dir: $RENDR_ENGINE_STATUS_DIR or /run/rendr/engine.
[[nodiscard]] std::string engine_status_dir();
// write_engine_status writes {"pid","process","updated_unix_ms","flows":[...]} atomically
// (temp file + rename) to <dir>/<pid>.json, creating |dir| if needed. Errors: errno of
// mkdir/open/write/rename.
[[nodiscard]] Status write_engine_status(std::span<const FlowStats> flows, std::string_view process,
                                         const std::string& dir = engine_status_dir());

}  // namespace rendr::engine
