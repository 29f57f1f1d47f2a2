// SPDX-License-Identifier: Apache-2.0
#include "tc_attach.hpp"

#include "libbpf_util.hpp"

#include <rendr/common/log.hpp>
#include <rendr/common/netns.hpp>

#include <bpf/libbpf.h>
#include <sched.h>

#include <cerrno>
#include <optional>
#include <utility>

namespace rendr::ebpf::detail {
namespace {

bpf_tc_hook make_hook(int ifindex, TcDirection dir) {
  bpf_tc_hook hook{};
  hook.sz = sizeof hook;
  hook.ifindex = ifindex;
  hook.attach_point = dir == TcDirection::ingress ? BPF_TC_INGRESS : BPF_TC_EGRESS;
  return hook;
}

std::string describe(const std::string& what, int ifindex, TcDirection dir) {
  return what + " on ifindex " + std::to_string(ifindex) +
         (dir == TcDirection::ingress ? " ingress" : " egress");
}

}  // namespace

TcAttachment::TcAttachment(TcAttachment&& o) noexcept
    : ifindex_(std::exchange(o.ifindex_, 0)),
      dir_(o.dir_),
      handle_(o.handle_),
      priority_(o.priority_),
      netns_(std::move(o.netns_)),
      what_(std::move(o.what_)) {}

TcAttachment& TcAttachment::operator=(TcAttachment&& o) noexcept {
  if (this != &o) {
    (void)detach();
    ifindex_ = std::exchange(o.ifindex_, 0);
    dir_ = o.dir_;
    handle_ = o.handle_;
    priority_ = o.priority_;
    netns_ = std::move(o.netns_);
    what_ = std::move(o.what_);
  }
  return *this;
}

TcAttachment::~TcAttachment() {
  if (auto s = detach(); !s.ok()) {
    Logger().warn("ebpf: " + s.error().message());
  }
}

Result<TcAttachment> TcAttachment::attach(int ifindex, TcDirection dir, int prog_fd,
                                          std::string what, std::uint32_t handle,
                                          std::uint32_t priority) {
  std::string ctx = "attach " + describe(what, ifindex, dir);
  if (ifindex <= 0) {
    return make_error(std::errc::no_such_device, ctx + ": invalid ifindex");
  }
  auto ns = rendr::current_netns();
  if (!ns) {
    return ns.error().with_context(ctx);
  }
  LibbpfWarnings warnings;
  bpf_tc_hook hook = make_hook(ifindex, dir);
  // Creates clsact (both directions); EEXIST means someone (maybe us) already did. The kernel
  // says so in an extack line ("Exclusivity flag on") that libbpf prints as a warning: it is
  // kept out of the log and only shown when creating failed for another reason.
  int err = 0;
  std::string create_warnings;
  {
    LibbpfWarnings quiet(true);
    err = bpf_tc_hook_create(&hook);
    create_warnings = quiet.tail(300);
  }
  if (err != 0 && err != -EEXIST) {
    return libbpf_error(err, ctx + ": create clsact qdisc" +
                                 (create_warnings.empty() ? "" : " (" + create_warnings + ")"));
  }
  bpf_tc_opts opts{};
  opts.sz = sizeof opts;
  opts.prog_fd = prog_fd;
  if (handle != 0 && priority != 0) {
    opts.handle = handle;
    opts.priority = priority;
    opts.flags = BPF_TC_F_REPLACE;  // take over what is there (created if nothing is)
  }
  err = bpf_tc_attach(&hook, &opts);
  if (err != 0) {
    return libbpf_error(err, ctx + ": add filter");
  }
  TcAttachment a;
  a.ifindex_ = ifindex;
  a.dir_ = dir;
  a.handle_ = opts.handle;
  a.priority_ = opts.priority;
  a.netns_ = std::move(*ns);
  a.what_ = std::move(what);
  return a;
}

Status TcAttachment::detach() {
  if (ifindex_ == 0) {
    return {};
  }
  int ifindex = std::exchange(ifindex_, 0);
  std::string ctx = "detach " + describe(what_, ifindex, dir_);
  // netlink talks to the caller's netns: step into the attach-time one if we are elsewhere,
  // so we never remove a filter from an unrelated device with the same ifindex.
  std::optional<NetnsEnter> inside;
  if (netns_.valid()) {
    auto in = NetnsEnter::enter(netns_.get());
    if (!in) {
      return std::move(in).take_error().with_context(ctx);
    }
    inside.emplace(std::move(*in));
  }
  bpf_tc_hook hook = make_hook(ifindex, dir_);
  bpf_tc_opts opts{};
  opts.sz = sizeof opts;
  opts.handle = handle_;
  opts.priority = priority_;
  int err = bpf_tc_detach(&hook, &opts);
  if (inside) {
    if (auto st = inside->leave(); !st) {
      return std::move(st).take_error().with_context(ctx);
    }
  }
  netns_.reset();
  // ENOENT/ENODEV/EINVAL: the device (or its whole netns) is already gone, and the filter with it.
  if (err != 0 && err != -ENOENT && err != -ENODEV && err != -EINVAL) {
    return libbpf_error(err, ctx);
  }
  return {};
}

}  // namespace rendr::ebpf::detail
