// SPDX-License-Identifier: Apache-2.0
// `rendrctl status`: the engine flows of processes that embed the framing engine. Each such
// process writes <dir>/<pid>.json (rendr::engine::write_engine_status); rendrctl reads the files
// of live processes. Default dir: $RENDR_ENGINE_STATUS_DIR or /run/rendr/engine.
#pragma once

#include <rendr/common/json.hpp>

#include <string>

namespace rendrctl {

// engine_status_json adds "engine": {"dir", "processes": [<status files of live pids>]} to |j|.
void engine_status_json(rendr::JsonWriter& j, const std::string& dir);
// print_engine_status prints one line per flow and per path (RTT, loss, state, bytes).
void print_engine_status(const std::string& dir);

}  // namespace rendrctl
