// SPDX-License-Identifier: Apache-2.0
#include <rendr/repair/sys.hpp>

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/utsname.h>
#include <unistd.h>

namespace rendr::repair {
namespace {

class RealSys final : public Sys {
 public:
  int socket(int d, int t, int p) override { return ::socket(d, t, p); }
  int close(int fd) override { return ::close(fd); }
  int setsockopt(int fd, int l, int n, const void* v, socklen_t len) override {
    return ::setsockopt(fd, l, n, v, len);
  }
  int getsockopt(int fd, int l, int n, void* v, socklen_t* len) override {
    return ::getsockopt(fd, l, n, v, len);
  }
  int ioctl_int(int fd, unsigned long req, int* out) override { return ::ioctl(fd, req, out); }
  ssize_t recv(int fd, void* b, std::size_t n, int f) override { return ::recv(fd, b, n, f); }
  ssize_t send(int fd, const void* b, std::size_t n, int f) override {
    return ::send(fd, b, n, f);
  }
  ssize_t sendto(int fd, const void* b, std::size_t n, int f, const sockaddr* to,
                 socklen_t tl) override {
    return ::sendto(fd, b, n, f, to, tl);
  }
  int bind(int fd, const sockaddr* a, socklen_t l) override { return ::bind(fd, a, l); }
  int connect(int fd, const sockaddr* a, socklen_t l) override { return ::connect(fd, a, l); }
  int shutdown(int fd, int how) override { return ::shutdown(fd, how); }
  int getsockname(int fd, sockaddr* a, socklen_t* l) override { return ::getsockname(fd, a, l); }
  int getpeername(int fd, sockaddr* a, socklen_t* l) override { return ::getpeername(fd, a, l); }
  int get_fl(int fd) override { return ::fcntl(fd, F_GETFL); }
  int set_fl(int fd, int flags) override { return ::fcntl(fd, F_SETFL, flags); }
};

}  // namespace

int Sys::uname(struct utsname* out) { return ::uname(out); }

Sys& real_sys() {
  static RealSys sys;
  return sys;
}

}  // namespace rendr::repair
