// SPDX-License-Identifier: Apache-2.0
// TcAttachment: one owned tc (clsact) filter running a BPF program on one device and direction
// (STYLE C6/B7). attach() creates the clsact qdisc when the device has none, then adds a
// direct-action filter; the destructor removes exactly that filter (by handle and priority).
// The qdisc is left in place: other filters (ours or not) may share it and an empty clsact is
// harmless. The filter is removed in the network namespace it was attached in, whichever
// namespace the destroying thread is in. Move-only.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include <cstdint>
#include <string>

namespace rendr::ebpf::detail {

enum class TcDirection { ingress, egress };

class TcAttachment {
 public:
  TcAttachment() = default;
  TcAttachment(const TcAttachment&) = delete;
  TcAttachment& operator=(const TcAttachment&) = delete;
  TcAttachment(TcAttachment&& o) noexcept;
  TcAttachment& operator=(TcAttachment&& o) noexcept;
  ~TcAttachment();

  // attach runs |prog_fd| (named |what| in errors) at |dir| of |ifindex| in the calling
  // thread's netns. With a nonzero |handle| and |priority| the filter takes exactly that place
  // and replaces a filter already there (e.g. one a killed process left behind) instead of
  // adding another; with 0 the kernel picks both. Errors: ENODEV (no such device), EPERM, and
  // whatever netlink reports.
  [[nodiscard]] static Result<TcAttachment> attach(int ifindex, TcDirection dir, int prog_fd,
                                                   std::string what, std::uint32_t handle = 0,
                                                   std::uint32_t priority = 0);
  // detach removes the filter now (idempotent).
  [[nodiscard]] Status detach();

  [[nodiscard]] int ifindex() const { return ifindex_; }
  [[nodiscard]] TcDirection direction() const { return dir_; }

 private:
  int ifindex_ = 0;
  TcDirection dir_ = TcDirection::ingress;
  std::uint32_t handle_ = 0;
  std::uint32_t priority_ = 0;
  UniqueFd netns_;
  std::string what_;
};

}  // namespace rendr::ebpf::detail
