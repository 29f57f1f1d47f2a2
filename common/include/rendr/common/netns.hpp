// SPDX-License-Identifier: Apache-2.0
// Entering a network namespace for a while (the one implementation: labs, tests, ebpf). setns
// moves only the calling thread; NetnsEnter remembers where the thread was and moves it back in
// leave() or its destructor. Not for threads that must stay inside (open sockets there first).
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

namespace rendr {

// current_netns opens the calling thread's network namespace (/proc/thread-self/ns/net).
[[nodiscard]] Result<UniqueFd> current_netns();
// same_netns says whether two namespace fds name the same namespace (device and inode).
[[nodiscard]] bool same_netns(int a, int b);

class NetnsEnter {
 public:
  // enter moves the calling thread into the namespace |netns_fd| names; if it is already there
  // nothing moves and leave() has nothing to do. Errors: the setns or /proc errno.
  [[nodiscard]] static Result<NetnsEnter> enter(int netns_fd);
  NetnsEnter(NetnsEnter&& o) noexcept = default;
  NetnsEnter& operator=(NetnsEnter&& o) noexcept;
  NetnsEnter(const NetnsEnter&) = delete;
  NetnsEnter& operator=(const NetnsEnter&) = delete;
  // ~NetnsEnter calls leave() and ignores its error (the thread stays where it is).
  ~NetnsEnter();

  // leave moves the thread back where enter() found it. Idempotent.
  [[nodiscard]] Status leave();

 private:
  explicit NetnsEnter(UniqueFd prev) : prev_(std::move(prev)) {}
  UniqueFd prev_;  // invalid: nothing to undo
};

}  // namespace rendr
