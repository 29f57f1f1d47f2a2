// SPDX-License-Identifier: Apache-2.0
// TimingSys — a repair::Sys that forwards to another Sys and accumulates how often each call
// (syscall + level/option or ioctl request) is made and how long it takes. rendr-bench uses it for
// --syscall-profile, to see where checkpoint/restore time goes (about 20 ns of overhead per call).
#pragma once

#include <rendr/repair/sys.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <tuple>

namespace rendr::bench {

class TimingSys final : public repair::Sys {
 public:
  explicit TimingSys(repair::Sys& inner) : inner_(inner) {}

  struct Stat {
    std::uint64_t calls = 0;
    std::uint64_t ns = 0;
  };
  // Key: (call, detail) e.g. ("getsockopt", "SOL_TCP/TCP_INFO").
  using Table = std::map<std::pair<std::string, std::string>, Stat>;
  [[nodiscard]] const Table& table() const { return table_; }
  void clear() { table_.clear(); }
  // enabled: when false, calls are forwarded without being recorded.
  void set_enabled(bool on) { enabled_ = on; }

  int socket(int domain, int type, int protocol) override;
  int close(int fd) override;
  int setsockopt(int fd, int level, int name, const void* val, socklen_t len) override;
  int getsockopt(int fd, int level, int name, void* val, socklen_t* len) override;
  int ioctl_int(int fd, unsigned long request, int* out) override;
  ssize_t recv(int fd, void* buf, std::size_t len, int flags) override;
  ssize_t send(int fd, const void* buf, std::size_t len, int flags) override;
  ssize_t sendto(int fd, const void* buf, std::size_t len, int flags, const sockaddr* to,
                 socklen_t tolen) override;
  int bind(int fd, const sockaddr* addr, socklen_t len) override;
  int connect(int fd, const sockaddr* addr, socklen_t len) override;
  int shutdown(int fd, int how) override;
  int getsockname(int fd, sockaddr* addr, socklen_t* len) override;
  int getpeername(int fd, sockaddr* addr, socklen_t* len) override;
  int get_fl(int fd) override;
  int set_fl(int fd, int flags) override;

 private:
  template <typename F>
  auto timed(const char* call, std::string detail, F&& f);
  repair::Sys& inner_;
  Table table_;
  bool enabled_ = true;
};

}  // namespace rendr::bench
