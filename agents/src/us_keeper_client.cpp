// SPDX-License-Identifier: Apache-2.0
// The agent's side of its userstack keeper (us_keeper.hpp): find the keeper of the TUN device
// or start one, then the two connections (requests, events).
#include "us_keeper.hpp"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

extern char** environ;

namespace rendr::agents {

namespace {

constexpr int kStartTimeoutMs = 10000;
constexpr int kCallTimeoutMs = 30000;

Result<UniqueFd> connect_keeper(const std::string& tun) {
  auto fd = UniqueFd::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (!fd) {
    return std::move(fd).take_error();
  }
  socklen_t len = 0;
  const sockaddr_un sa = keeper_sockaddr(tun, len);
  if (::connect(fd->get(), reinterpret_cast<const sockaddr*>(&sa), len) != 0) {
    return errno_error("connect to the userstack keeper of " + tun);
  }
  return fd;
}

Result<Message> hello(int fd, const char* role) {
  const timeval tv{kStartTimeoutMs / 1000, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  RENDR_TRY(send_packet(fd, Message(keeper::kHello).add(Tag::name, role)));
  auto r = recv_packet(fd);
  if (!r) {
    return std::move(r).take_error().with_context("userstack keeper hello");
  }
  if (r->msg.type() != MsgType::ok) {
    return error_of(r->msg, "userstack keeper");
  }
  return std::move(r->msg);
}

// spawn_keeper starts `<this executable> --userstack-keeper ...` in its own session (a signal
// for the agent's process group does not reach it) and waits for its ready line.
Result<pid_t> spawn_keeper(const KeeperOptions& o) {
  int pfd[2];
  if (::pipe2(pfd, O_CLOEXEC) != 0) {
    return errno_error("pipe");
  }
  UniqueFd rd(pfd[0]);
  UniqueFd wr(pfd[1]);
  char exe[4096];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) {
    return errno_error("readlink /proc/self/exe");
  }
  exe[n] = '\0';
  std::vector<std::string> args = {exe,
                                   "--userstack-keeper",
                                   "--tun",
                                   o.tun,
                                   "--freeze-grace-ms",
                                   std::to_string(o.freeze_grace_ms),
                                   "--ready-fd",
                                   "3"};
  if (!o.tun_clone.empty()) {
    args.insert(args.end(), {"--tun-clone", o.tun_clone});
  }
  std::vector<char*> argv;
  for (auto& a : args) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&at);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID);
  posix_spawn_file_actions_adddup2(&fa, wr.get(), 3);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  // The keeper logs to the agent's stderr, unless that is a pipe: a reader waiting for its
  // end (a shell's $(...)) would wait for the keeper too.
  struct stat sb {};
  if (::fstat(2, &sb) == 0 && S_ISFIFO(sb.st_mode)) {
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  }
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, exe, &fa, &at, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  wr.reset();
  if (rc != 0) {
    return Error{std::error_code(rc, std::generic_category()), "start the userstack keeper"};
  }
  std::string line;
  pollfd p{rd.get(), POLLIN, 0};
  while (line.find('\n') == std::string::npos && ::poll(&p, 1, kStartTimeoutMs) > 0) {
    char buf[512];
    const ssize_t k = ::read(rd.get(), buf, sizeof buf);
    if (k <= 0) {
      break;
    }
    line.append(buf, static_cast<std::size_t>(k));
  }
  if (const auto nl = line.find('\n'); nl != std::string::npos) {
    line.resize(nl);
  }
  if (line != "ok") {
    return make_error(std::errc::operation_not_supported,
                      line.empty() ? "the userstack keeper did not start" : line);
  }
  return pid;
}

}  // namespace

Result<KeeperClient> KeeperClient::open(const KeeperOptions& o, std::vector<FourTuple>& serving,
                                        std::vector<FourTuple>& held, std::string& how) {
  auto ctl = connect_keeper(o.tun);
  how = "attached to the running userstack keeper";
  if (!ctl && (ctl.error().code == std::errc::connection_refused ||
               ctl.error().code == std::errc::no_such_file_or_directory)) {
    auto pid = spawn_keeper(o);
    if (!pid) {
      return std::move(pid).take_error();
    }
    how = "started its userstack keeper";
    ctl = connect_keeper(o.tun);
  }
  if (!ctl) {
    return std::move(ctl).take_error();
  }
  auto h = hello(ctl->get(), "ctl");
  if (!h) {
    return std::move(h).take_error();
  }
  const timeval none{0, 0};
  ::setsockopt(ctl->get(), SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
  for (const auto& s : h->strs(Tag::tuple)) {
    if (auto t = FourTuple::parse(s); t) {
      serving.push_back(*t);
    }
  }
  for (const auto& s : h->strs(Tag::held_tuple)) {
    if (auto t = FourTuple::parse(s); t) {
      held.push_back(*t);
    }
  }
  auto ev = connect_keeper(o.tun);
  if (!ev) {
    return std::move(ev).take_error();
  }
  if (auto e = hello(ev->get(), "events"); !e) {
    return std::move(e).take_error();
  }
  KeeperClient c;
  c.ctl_ = std::move(*ctl);
  c.events_ = std::move(*ev);
  c.pid_ = static_cast<pid_t>(std::atoll(h->str_or(Tag::name, "-1").c_str()));
  how += " (pid " + std::to_string(c.pid_) + ")";
  return c;
}

Result<Packet> KeeperClient::call(const Message& m, int fd) {
  if (!ctl_) {
    return make_error(std::errc::connection_reset, "the userstack keeper is gone");
  }
  RENDR_TRY(send_packet(ctl_.get(), m, fd));
  pollfd p{ctl_.get(), POLLIN, 0};
  if (::poll(&p, 1, kCallTimeoutMs) <= 0) {
    ctl_.reset();
    return make_error(std::errc::timed_out, "the userstack keeper did not answer");
  }
  auto r = recv_packet(ctl_.get());
  if (!r) {
    ctl_.reset();
    return std::move(r).take_error().with_context("userstack keeper");
  }
  if (r->msg.type() == MsgType::fail) {
    return error_of(r->msg, "userstack keeper");
  }
  return r;
}

}  // namespace rendr::agents
