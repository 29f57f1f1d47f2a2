// SPDX-License-Identifier: Apache-2.0
#include <rendr/common/unique_fd.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

namespace rendr {

void UniqueFd::reset(int fd) {
  if (fd_ >= 0 && fd_ != fd) {
    ::close(fd_);
  }
  fd_ = fd;
}

Result<UniqueFd> UniqueFd::socket(int domain, int type, int protocol) {
  int fd = ::socket(domain, type | SOCK_CLOEXEC, protocol);
  if (fd < 0) {
    return errno_error("socket");
  }
  return UniqueFd(fd);
}

namespace {

// unix_socket: a Unix socket of |type| and |sa| filled with |path| (filename_too_long when it
// does not fit sun_path) - the common start of connect_unix and listen_unix.
Result<UniqueFd> unix_socket(const std::string& path, int type, sockaddr_un& sa) {
  sa = {};
  if (path.size() >= sizeof sa.sun_path) {
    return make_error(std::errc::filename_too_long, "unix socket path too long: " + path);
  }
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  return UniqueFd::socket(AF_UNIX, type, 0);
}

}  // namespace

Result<UniqueFd> UniqueFd::connect_unix(const std::string& path, int type) {
  sockaddr_un sa;
  auto fd = unix_socket(path, type, sa);
  if (!fd) {
    return fd;
  }
  if (::connect(fd->get(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) {
    return errno_error("connect " + path);
  }
  return fd;
}

Result<UniqueFd> UniqueFd::listen_unix(const std::string& path, int type, int backlog) {
  sockaddr_un sa;
  auto fd = unix_socket(path, type, sa);
  if (!fd) {
    return fd;
  }
  ::unlink(path.c_str());
  if (::bind(fd->get(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) {
    return errno_error("bind " + path);
  }
  if (::listen(fd->get(), backlog) != 0) {
    return errno_error("listen " + path);
  }
  return fd;
}

Result<UniqueFd> UniqueFd::open(const std::string& path, int flags, int mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) {
    return errno_error("open " + path);
  }
  return UniqueFd(fd);
}

Result<UniqueFd> UniqueFd::dup(int fd) {
  int nfd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (nfd < 0) {
    return errno_error("dup");
  }
  return UniqueFd(nfd);
}

}  // namespace rendr
