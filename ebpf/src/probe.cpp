// SPDX-License-Identifier: Apache-2.0
#include <rendr/ebpf/probe.hpp>

#include <bpf/bpf.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace rendr::ebpf {

Status probe_prog_load(ProgKind kind) {
  const bool lookup = kind == ProgKind::sk_lookup;
  bpf_insn insns[2] = {};
  insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;  // r0 = verdict
  insns[0].imm = lookup ? 1 : 0;                // SK_PASS / TC_ACT_OK
  insns[1].code = BPF_JMP | BPF_EXIT;
  LIBBPF_OPTS(bpf_prog_load_opts, opts);
  if (lookup) {
    opts.expected_attach_type = BPF_SK_LOOKUP;
  }
  const char* what = lookup ? "an sk_lookup BPF program" : "a tc (sched_cls) BPF program";
  const int fd = bpf_prog_load(lookup ? BPF_PROG_TYPE_SK_LOOKUP : BPF_PROG_TYPE_SCHED_CLS,
                               "rendr_probe", "GPL", insns, 2, &opts);
  if (fd < 0) {
    const int err = -fd;
    if (err == EPERM || err == EACCES) {
      return make_error(std::errc::operation_not_permitted,
                        std::string("loading ") + what +
                            " was refused: it needs CAP_BPF and CAP_NET_ADMIN (or root)");
    }
    return errno_error(std::string("loading ") + what, err);
  }
  ::close(fd);
  return {};
}

}  // namespace rendr::ebpf
