// SPDX-License-Identifier: Apache-2.0
#include <rendr/common/netns.hpp>

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>

namespace rendr {

Result<UniqueFd> current_netns() {
  return UniqueFd::open("/proc/thread-self/ns/net", O_RDONLY);
}

bool same_netns(int a, int b) {
  struct stat sa {};
  struct stat sb {};
  return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

Result<NetnsEnter> NetnsEnter::enter(int netns_fd) {
  auto prev = current_netns();
  if (!prev) {
    return std::move(prev).take_error();
  }
  if (same_netns(prev->get(), netns_fd)) {
    return NetnsEnter(UniqueFd{});
  }
  if (::setns(netns_fd, CLONE_NEWNET) != 0) {
    return errno_error("setns");
  }
  return NetnsEnter(std::move(*prev));
}

NetnsEnter& NetnsEnter::operator=(NetnsEnter&& o) noexcept {
  if (this != &o) {
    (void)leave();
    prev_ = std::move(o.prev_);
  }
  return *this;
}

NetnsEnter::~NetnsEnter() { (void)leave(); }

Status NetnsEnter::leave() {
  if (!prev_.valid()) {
    return {};
  }
  UniqueFd prev = std::move(prev_);
  if (::setns(prev.get(), CLONE_NEWNET) != 0) {
    return errno_error("setns back");
  }
  return {};
}

}  // namespace rendr
