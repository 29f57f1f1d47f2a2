// SPDX-License-Identifier: Apache-2.0
// Same-host socket handover without TCP_REPAIR: pass a live fd to another process over a Unix
// socket (SCM_RIGHTS, with an opaque application-state payload), or take one out of a running
// process by pid (pidfd_getfd, Linux >= 5.6) so an operator can move a socket out of a program
// that knows nothing of rendr. Nothing is lost: the kernel socket itself does not change.
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include <cstddef>
#include <span>
#include <sys/types.h>
#include <vector>

namespace rendr::repair {

// send_fd sends |fd| plus |payload| (at most kMaxHandoverPayload bytes, may be empty) over the
// connected AF_UNIX socket |channel|. Errors: EMSGSIZE, and sendmsg's errors.
inline constexpr std::size_t kMaxHandoverPayload = 64 * 1024;
[[nodiscard]] Status send_fd(int channel, int fd, std::span<const std::byte> payload);

struct ReceivedFd {
  UniqueFd fd;
  std::vector<std::byte> payload;
};
// recv_fd receives one fd and its payload from |channel| (blocking). Errors: ECONNRESET when
// the sender closed without sending, EBADMSG when the message carried no fd or was truncated.
[[nodiscard]] Result<ReceivedFd> recv_fd(int channel);

// take_fd duplicates descriptor |target_fd| of process |pid| into this process (pidfd_open +
// pidfd_getfd). Needs ptrace access to |pid| (CAP_SYS_PTRACE, or same uid under Yama scope 0/1);
// EPERM names that. ESRCH: no such process; EBADF: no such fd in it.
[[nodiscard]] Result<UniqueFd> take_fd(pid_t pid, int target_fd);

// find_socket_fd looks through /proc/<pid>/fd for the TCP socket whose local and remote
// endpoints equal |tuple| and returns its fd number in |pid|. ENOENT if none matches.
[[nodiscard]] Result<int> find_socket_fd(pid_t pid, const FourTuple& tuple);

}  // namespace rendr::repair
