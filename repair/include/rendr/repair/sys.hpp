// SPDX-License-Identifier: Apache-2.0
// repair::Sys — the narrow syscall interface repair/ goes through (STYLE M4), so unit tests can
// inject EPERM/ENOPROTOOPT without a kernel. Every method mirrors its syscall: it returns the
// syscall's result and leaves errno set on failure. real_sys() calls the kernel.
#pragma once

#include <cstddef>
#include <sys/socket.h>
#include <sys/types.h>

namespace rendr::repair {

class Sys {
 public:
  virtual ~Sys() = default;
  virtual int socket(int domain, int type, int protocol) = 0;
  virtual int close(int fd) = 0;
  virtual int setsockopt(int fd, int level, int name, const void* val, socklen_t len) = 0;
  virtual int getsockopt(int fd, int level, int name, void* val, socklen_t* len) = 0;
  virtual int ioctl_int(int fd, unsigned long request, int* out) = 0;
  virtual ssize_t recv(int fd, void* buf, std::size_t len, int flags) = 0;
  virtual ssize_t send(int fd, const void* buf, std::size_t len, int flags) = 0;
  virtual ssize_t sendto(int fd, const void* buf, std::size_t len, int flags,
                         const sockaddr* to, socklen_t tolen) = 0;
  virtual int bind(int fd, const sockaddr* addr, socklen_t len) = 0;
  virtual int connect(int fd, const sockaddr* addr, socklen_t len) = 0;
  virtual int shutdown(int fd, int how) = 0;
  virtual int getsockname(int fd, sockaddr* addr, socklen_t* len) = 0;
  virtual int getpeername(int fd, sockaddr* addr, socklen_t* len) = 0;
  virtual int get_fl(int fd) = 0;              // fcntl(F_GETFL)
  virtual int set_fl(int fd, int flags) = 0;   // fcntl(F_SETFL)
};

// real_sys returns the process-wide kernel-backed implementation.
Sys& real_sys();

}  // namespace rendr::repair
