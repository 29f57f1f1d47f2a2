// SPDX-License-Identifier: Apache-2.0
// `rendrctl status`: the engine flows of processes that embed the framing engine. Each such
// process writes <dir>/<pid>.json (rendr::engine::write_engine_status); rendrctl reads the files
// of live processes. Default dir: $RENDR_ENGINE_STATUS_DIR or /run/rendr/engine.
#pragma once

#include <rendr/common/json.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace rendrctl {

// engine_status_json adds "engine": {"dir", "processes": [<status files of live pids>]} to |j|.
void engine_status_json(rendr::JsonWriter& j, const std::string& dir);
// print_engine_status prints one line per flow and per path (RTT, loss, state, bytes).
void print_engine_status(const std::string& dir);

// Helpers for the text form, shared with the rendr-tun section (tun_status_reader.hpp).
// pieces splits |s| at every occurrence of |marker| (the pieces start with it). The status
// JSON is written by rendr::engine::write_flow_stats, whose layout is fixed: flows start with
// {"flow_id": and paths with {"id":.
[[nodiscard]] std::vector<std::string_view> pieces(std::string_view s, std::string_view marker);
// human_bytes: "1.05 MB" for "1048576" (a JSON number as text).
[[nodiscard]] std::string human_bytes(const std::string& v);
// rtt_text: "0.35 ms" for "350" (microseconds), "-" for null or "".
[[nodiscard]] std::string rtt_text(const std::string& us);
// path_lines: one line per path of the engine flow |flow| (its "paths" array), each
// prefixed by |indent|.
[[nodiscard]] std::string path_lines(std::string_view flow, const char* indent);
// timer_line: the flow's io-thread timing ("timers fired N, late max X (hist ...), handler
// max Y, lock wait max Z, silence reprieves P pending / S starved"), prefixed by |indent| and
// ending in a newline; empty when |head| (a flow's fields before "paths") has none.
[[nodiscard]] std::string timer_line(std::string_view head, const char* indent);

}  // namespace rendrctl
