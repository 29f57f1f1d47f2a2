// SPDX-License-Identifier: Apache-2.0
// probe_prog_load: can this process load a BPF program of the kind rendr uses? Tries it (a
// two-instruction program through libbpf), so the answer covers capabilities, LSMs, sysctls
// (unprivileged_bpf_disabled) and kernel support alike. Used by the capability probe
// (rendr/agents/capabilities.hpp).
#pragma once

#include <rendr/common/result.hpp>

namespace rendr::ebpf {

enum class ProgKind {
  sched_cls,  // tc programs: freeze, steer
  sk_lookup,  // socket lookup steering
};

// Errors: the kernel's refusal, with what it needs (e.g. EPERM: CAP_BPF and CAP_NET_ADMIN).
[[nodiscard]] Status probe_prog_load(ProgKind kind);

}  // namespace rendr::ebpf
