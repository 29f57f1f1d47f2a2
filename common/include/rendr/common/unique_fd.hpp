// SPDX-License-Identifier: Apache-2.0
// UniqueFd — move-only owner of one file descriptor (STYLE C6). Closing happens in the destructor
// or in reset(); release() hands the raw fd back to the caller. Factories return Result<UniqueFd>
// so construction never fails silently. Any thread; not synchronised.
#pragma once

#include <rendr/common/result.hpp>

#include <string>

namespace rendr {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset(o.release());
    }
    return *this;
  }
  ~UniqueFd() { reset(); }

  [[nodiscard]] int get() const { return fd_; }
  [[nodiscard]] bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  // release gives up ownership and returns the fd (-1 if none).
  [[nodiscard]] int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  // reset closes the owned fd (if any) and takes |fd|.
  void reset(int fd = -1);

  // socket wraps socket(2); always adds SOCK_CLOEXEC.
  [[nodiscard]] static Result<UniqueFd> socket(int domain, int type, int protocol);
  // open wraps open(2); always adds O_CLOEXEC.
  [[nodiscard]] static Result<UniqueFd> open(const std::string& path, int flags, int mode = 0);
  // dup duplicates |fd| (F_DUPFD_CLOEXEC).
  [[nodiscard]] static Result<UniqueFd> dup(int fd);
  // connect_unix: a Unix socket of |type| (SOCK_STREAM or SOCK_SEQPACKET, optionally with
  // SOCK_NONBLOCK) connected to |path|. Error: filename_too_long when |path| does not fit
  // sun_path; else the errno of socket(2) or connect(2) as its code (ECONNREFUSED: nothing
  // listens there).
  [[nodiscard]] static Result<UniqueFd> connect_unix(const std::string& path, int type);
  // listen_unix: a Unix socket of |type| bound to |path| (a file left there is unlinked first)
  // and listening with |backlog|. The file's mode follows the caller's umask. Errors as
  // connect_unix (filename_too_long; else the errno of socket, bind or listen).
  [[nodiscard]] static Result<UniqueFd> listen_unix(const std::string& path, int type,
                                                    int backlog);

 private:
  int fd_ = -1;
};

}  // namespace rendr
