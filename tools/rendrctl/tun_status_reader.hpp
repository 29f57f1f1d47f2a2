// SPDX-License-Identifier: Apache-2.0
// `rendrctl status`: the rendr-tun section (docs/tun-ingress.md "Status", docs/rendrctl.md).
// Every rendr-tun serves its status JSON on <engine status dir>/tun-<pid>.sock
// (tools/rendr-tun/tun_status_dir.hpp); `--tun-status PATH` names more sockets. rendrctl asks
// all of them at once with one bounded wait: a stale socket (its process is gone) or a hung
// process (stopped, or not accepting) becomes an entry with an "error", never a hang.
#pragma once

#include <rendr/common/json.hpp>

#include <string>
#include <vector>

namespace rendrctl {

struct TunSource {
  std::string socket;
  long pid = 0;  // from the published name tun-<pid>.sock; 0 for a --tun-status PATH
};

struct TunReply {
  TunSource source;
  std::string doc;    // the status document (one JSON object) when it answered
  std::string error;  // why it did not, when it did not
};

// tun_sources: the published sockets in |dir| (sorted by pid), then |explicit_sockets|, each
// path once. A missing |dir| gives none of its own.
[[nodiscard]] std::vector<TunSource> tun_sources(const std::string& dir,
                                                 const std::vector<std::string>& explicit_sockets);

// read_tun_status connects to every source at once and reads each one's document to EOF;
// what has not answered |timeout_ms| after the start gets an error saying so.
[[nodiscard]] std::vector<TunReply> read_tun_status(const std::vector<TunSource>& sources,
                                                    int timeout_ms);

// tun_status_json adds "tun": [...] to |j|: per source, its document with "socket" added in
// front ({"socket","role","pid","active_flows","counters","flows":[...],...}), or
// {"socket","pid","error"}.
void tun_status_json(rendr::JsonWriter& j, const std::vector<TunReply>& replies);

// tun_status_text: the text form, one block per source (role, pid, counters, a line per flow
// with its identity, state, bytes and engine flow, then its paths); |dir| is named when
// there is no source at all.
[[nodiscard]] std::string tun_status_text(const std::vector<TunReply>& replies,
                                          const std::string& dir);

}  // namespace rendrctl
