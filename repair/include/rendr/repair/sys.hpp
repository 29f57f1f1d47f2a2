// SPDX-License-Identifier: Apache-2.0
// repair::Sys — the narrow syscall interface repair/ goes through (STYLE M4), so unit tests can
// inject EPERM/ENOPROTOOPT without a kernel. Every method mirrors its syscall: it returns the
// syscall's result and leaves errno set on failure. real_sys() calls the kernel.
#pragma once

#include <cstddef>
#include <sys/socket.h>
#include <sys/types.h>

struct utsname;

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
  // uname(2); the default calls the kernel (a fake reports the release a test needs).
  virtual int uname(struct utsname* out);
};

// ForwardingSys passes every call to |inner|; derive from it to change one or two calls (fault
// injection) without restating the whole interface.
class ForwardingSys : public Sys {
 public:
  explicit ForwardingSys(Sys& inner) : in_(inner) {}
  int socket(int d, int t, int p) override { return in_.socket(d, t, p); }
  int close(int fd) override { return in_.close(fd); }
  int setsockopt(int fd, int l, int n, const void* v, socklen_t len) override {
    return in_.setsockopt(fd, l, n, v, len);
  }
  int getsockopt(int fd, int l, int n, void* v, socklen_t* len) override {
    return in_.getsockopt(fd, l, n, v, len);
  }
  int ioctl_int(int fd, unsigned long rq, int* out) override { return in_.ioctl_int(fd, rq, out); }
  ssize_t recv(int fd, void* b, std::size_t n, int f) override { return in_.recv(fd, b, n, f); }
  ssize_t send(int fd, const void* b, std::size_t n, int f) override {
    return in_.send(fd, b, n, f);
  }
  ssize_t sendto(int fd, const void* b, std::size_t n, int f, const sockaddr* a,
                 socklen_t al) override {
    return in_.sendto(fd, b, n, f, a, al);
  }
  int bind(int fd, const sockaddr* a, socklen_t l) override { return in_.bind(fd, a, l); }
  int connect(int fd, const sockaddr* a, socklen_t l) override { return in_.connect(fd, a, l); }
  int shutdown(int fd, int how) override { return in_.shutdown(fd, how); }
  int getsockname(int fd, sockaddr* a, socklen_t* l) override { return in_.getsockname(fd, a, l); }
  int getpeername(int fd, sockaddr* a, socklen_t* l) override { return in_.getpeername(fd, a, l); }
  int get_fl(int fd) override { return in_.get_fl(fd); }
  int set_fl(int fd, int f) override { return in_.set_fl(fd, f); }
  int uname(struct utsname* out) override { return in_.uname(out); }

 private:
  Sys& in_;
};

// real_sys returns the process-wide kernel-backed implementation.
Sys& real_sys();

}  // namespace rendr::repair
