// SPDX-License-Identifier: Apache-2.0
#include <rendr/repair/handover.hpp>

#include <dirent.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace rendr::repair {

Status send_fd(int channel, int fd, std::span<const std::byte> payload) {
  if (payload.size() > kMaxHandoverPayload) {
    return make_error(std::errc::message_size,
                      "send_fd: payload of " + std::to_string(payload.size()) +
                          " bytes exceeds " + std::to_string(kMaxHandoverPayload));
  }
  // Header: u32 payload length (host order: both ends are on this host), then the payload.
  std::uint32_t len = static_cast<std::uint32_t>(payload.size());
  iovec iov[2] = {{&len, sizeof len},
                  {const_cast<std::byte*>(payload.data()), payload.size()}};
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = payload.empty() ? 1 : 2;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof ctrl;
  cmsghdr* cm = CMSG_FIRSTHDR(&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cm), &fd, sizeof fd);
  ssize_t n = ::sendmsg(channel, &msg, MSG_NOSIGNAL);
  if (n < 0) {
    return errno_error("send_fd: sendmsg");
  }
  if (static_cast<std::size_t>(n) != sizeof len + payload.size()) {
    return make_error(std::errc::message_size, "send_fd: short sendmsg (use a SOCK_SEQPACKET "
                                               "or blocking SOCK_STREAM channel)");
  }
  return {};
}

Result<ReceivedFd> recv_fd(int channel) {
  std::uint32_t len = 0;
  std::vector<std::byte> payload(kMaxHandoverPayload);
  iovec iov[2] = {{&len, sizeof len}, {payload.data(), payload.size()}};
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof ctrl;
  ssize_t n = ::recvmsg(channel, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
  if (n < 0) {
    return errno_error("recv_fd: recvmsg");
  }
  UniqueFd fd;
  for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm != nullptr; cm = CMSG_NXTHDR(&msg, cm)) {
    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS &&
        cm->cmsg_len >= CMSG_LEN(sizeof(int))) {
      int raw = -1;
      std::memcpy(&raw, CMSG_DATA(cm), sizeof raw);
      fd.reset(raw);
    }
  }
  if (n == 0) {
    return make_error(std::errc::connection_reset, "recv_fd: channel closed by the sender");
  }
  if ((msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) != 0 || !fd.valid()) {
    return make_error(std::errc::bad_message, "recv_fd: message carried no descriptor or was "
                                              "truncated");
  }
  if (static_cast<std::size_t>(n) < sizeof len || len > kMaxHandoverPayload ||
      static_cast<std::size_t>(n) != sizeof len + len) {
    return make_error(std::errc::bad_message, "recv_fd: payload length does not match");
  }
  payload.resize(len);
  return ReceivedFd{std::move(fd), std::move(payload)};
}

Result<UniqueFd> take_fd(pid_t pid, int target_fd) {
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    return errno_error("take_fd: pidfd_open(" + std::to_string(pid) + ")");
  }
  UniqueFd owner(pidfd);
  int fd = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, target_fd, 0));
  if (fd < 0) {
    int err = errno;
    if (err == EPERM) {
      return errno_error("take_fd: pidfd_getfd needs ptrace access to pid " +
                             std::to_string(pid) +
                             " (CAP_SYS_PTRACE, or the same uid with kernel.yama.ptrace_scope "
                             "<= 1)",
                         err);
    }
    return errno_error("take_fd: pidfd_getfd(pid " + std::to_string(pid) + ", fd " +
                           std::to_string(target_fd) + ")",
                       err);
  }
  return UniqueFd(fd);
}

Result<int> find_socket_fd(pid_t pid, const FourTuple& tuple) {
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return errno_error("find_socket_fd: open " + dir);
  }
  int found = -1;
  std::string last_error;
  for (dirent* e = ::readdir(d); e != nullptr && found < 0; e = ::readdir(d)) {
    if (e->d_name[0] == '.') {
      continue;
    }
    char target[64] = {};
    std::string link = dir + "/" + e->d_name;
    ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n <= 0 || std::strncmp(target, "socket:", 7) != 0) {
      continue;
    }
    int num = std::atoi(e->d_name);
    auto fd = take_fd(pid, num);
    if (!fd) {
      last_error = fd.error().message();
      continue;
    }
    sockaddr_storage a{};
    sockaddr_storage b{};
    socklen_t al = sizeof a;
    socklen_t bl = sizeof b;
    if (::getsockname(fd->get(), reinterpret_cast<sockaddr*>(&a), &al) != 0 ||
        ::getpeername(fd->get(), reinterpret_cast<sockaddr*>(&b), &bl) != 0) {
      continue;
    }
    auto la = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&a), al);
    auto ra = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&b), bl);
    if (la && ra && la->family == tuple.local.family && la->addr == tuple.local.addr &&
        la->port == tuple.local.port && ra->addr == tuple.remote.addr &&
        ra->port == tuple.remote.port) {
      found = num;
    }
  }
  ::closedir(d);
  if (found < 0) {
    return make_error(std::errc::no_such_file_or_directory,
                      "find_socket_fd: pid " + std::to_string(pid) + " has no socket " +
                          tuple.to_string() + (last_error.empty() ? "" : " (" + last_error + ")"));
  }
  return found;
}

}  // namespace rendr::repair
