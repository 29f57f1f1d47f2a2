// SPDX-License-Identifier: Apache-2.0
// libbpf's diagnostics, routed into rendr's logging facade (STYLE B8). libbpf has one
// process-wide print callback; rendr::ebpf installs it the first time it opens a skeleton and
// maps libbpf's levels one step quieter than ours (libbpf warn -> info, info -> debug,
// debug -> trace), so a verifier dump never floods a default (warn) log. Errors that matter
// still reach the caller as rendr::Error values, with the tail of libbpf's last warning attached.
// Thread-safe.
#pragma once

#include <rendr/common/log.hpp>

namespace rendr::ebpf {

// set_libbpf_log_sink sends libbpf's (level-shifted) lines to |sink|; an empty sink restores
// the process-wide default sink. Call it from the composition root, before or after loading.
void set_libbpf_log_sink(LogSink sink);

}  // namespace rendr::ebpf
