// SPDX-License-Identifier: Apache-2.0
#include <rendr/ebpf/prog_test_run.hpp>

#include "libbpf_util.hpp"

#include <bpf/bpf.h>
#include <linux/bpf.h>

namespace rendr::ebpf {

Result<SkbRunResult> test_run_skb(int prog_fd, std::span<const std::byte> frame,
                                  const SkbRunOptions& options) {
  detail::ensure_libbpf_logging();
  // Room for programs that grow the frame (encapsulation); the kernel reports ENOSPC otherwise.
  std::vector<std::byte> out(frame.size() + 256);
  __sk_buff ctx{};
  ctx.mark = options.mark;
  bpf_test_run_opts opts{};
  opts.sz = sizeof opts;
  opts.data_in = frame.data();
  opts.data_size_in = static_cast<__u32>(frame.size());
  opts.data_out = out.data();
  opts.data_size_out = static_cast<__u32>(out.size());
  opts.ctx_in = &ctx;
  opts.ctx_size_in = sizeof ctx;
  opts.repeat = 1;
  int err = bpf_prog_test_run_opts(prog_fd, &opts);
  if (err != 0) {
    return detail::libbpf_error(err, "BPF_PROG_TEST_RUN prog fd " + std::to_string(prog_fd));
  }
  out.resize(opts.data_size_out);
  SkbRunResult r;
  r.retval = opts.retval;
  r.data_out = std::move(out);
  return r;
}

}  // namespace rendr::ebpf
