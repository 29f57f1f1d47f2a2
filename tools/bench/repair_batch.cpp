// SPDX-License-Identifier: Apache-2.0
// The batch phase of `rendr-bench repair` and the child process that holds its client ends.
#include "repair_batch.hpp"

#include "loopback.hpp"
#include "stats.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

namespace rendr::bench {
namespace {

constexpr const char* kTool = "rendr-bench repair";

// Holds the client ends of the batch in a child process (same netns, own descriptor table, so
// 10000 pairs fit under a 20000-descriptor RLIMIT_NOFILE that this sandbox cannot raise) and
// echoes every byte it receives, so the parent verifies a restored socket with send + read back.
class EchoChild {
 public:
  EchoChild() = default;
  EchoChild(const EchoChild&) = delete;
  EchoChild& operator=(const EchoChild&) = delete;
  ~EchoChild() { stop(); }

  // start forks the child, which connects |n| times to |ports| (round robin by block of
  // |per_port|) and then echoes until the parent closes the control pipe or dies.
  Status start(std::size_t n, const std::vector<std::uint16_t>& ports, std::size_t per_port) {
    int ctl[2];
    if (::pipe2(ctl, O_CLOEXEC) != 0) {
      return errno_error("batch: pipe");
    }
    pid_ = ::fork();
    if (pid_ < 0) {
      return errno_error("batch: fork");
    }
    if (pid_ == 0) {
      ::close(ctl[1]);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::_exit(child_main(n, ports, per_port, ctl[0]));
    }
    ::close(ctl[0]);
    ctl_.reset(ctl[1]);
    return {};
  }
  // alive reports a child that has not exited (with its status in |why| otherwise).
  bool alive(std::string* why) {
    int st = 0;
    if (pid_ > 0 && ::waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      *why = "the client process exited with status " +
             std::to_string(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
      return false;
    }
    return pid_ > 0;
  }
  void stop() {
    ctl_.reset();
    if (pid_ > 0) {
      int st = 0;
      ::waitpid(pid_, &st, 0);
      pid_ = -1;
    }
  }

 private:
  static int child_main(std::size_t n, const std::vector<std::uint16_t>& ports,
                        std::size_t per_port, int ctl) {
    int ep = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
      return 10;
    }
    std::vector<UniqueFd> clients(n);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = n;  // the control pipe
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, ctl, &ev) != 0) {
      return 11;
    }
    for (std::size_t i = 0; i < n; ++i) {
      auto c = connect_loopback(ports[i / per_port], {});
      if (!c) {
        std::fprintf(stderr, "%s: client %zu: %s\n", kTool, i, c.error().message().c_str());
        return 12;
      }
      clients[i] = std::move(*c);
      ev.data.u64 = i;
      if (::epoll_ctl(ep, EPOLL_CTL_ADD, clients[i].get(), &ev) != 0) {
        return 13;
      }
    }
    epoll_event evs[64];
    for (;;) {
      int k = ::epoll_wait(ep, evs, 64, 1000);
      if (k < 0 && errno != EINTR) {
        return 14;
      }
      for (int e = 0; e < k; ++e) {
        const std::size_t i = evs[e].data.u64;
        if (i == n) {
          return 0;  // parent closed the control pipe
        }
        std::byte buf[256];
        ssize_t r = ::recv(clients[i].get(), buf, sizeof buf, MSG_DONTWAIT);
        if (r > 0) {
          if (::send(clients[i].get(), buf, static_cast<std::size_t>(r), MSG_NOSIGNAL) != r) {
            return 15;
          }
        } else if (r == 0) {
          (void)::epoll_ctl(ep, EPOLL_CTL_DEL, clients[i].get(), nullptr);
          clients[i].reset();
        }
      }
    }
  }

  pid_t pid_ = -1;
  UniqueFd ctl_;
};

// echo_check sends one byte on a restored socket and expects the client process to echo it.
Status echo_check(int fd, std::uint8_t tag) {
  std::byte out{tag};
  std::byte in{};
  RENDR_TRY_CTX(write_exact(fd, {&out, 1}), "echo send");
  RENDR_TRY_CTX(read_exact(fd, {&in, 1}), "echo receive");
  if (in != out) {
    return make_error(std::errc::io_error, "echo returned a different byte");
  }
  auto q = inq(fd);
  if (!q || *q != 0) {
    return make_error(std::errc::io_error, "echo: unexpected bytes queued after the echo");
  }
  return {};
}

}  // namespace

Result<BatchResult> run_batch(repair::Repairer& rep, const repair::RestoreOptions& ro,
                              std::uint64_t batch, std::uint64_t batch_verify, Progress& prog) {
  const auto n = static_cast<std::size_t>(batch);
  // Server side: one descriptor per socket (the caller's fd is closed right after its
  // checkpoint, the frozen duplicate takes its place), plus slack; clients live in the child.
  RENDR_TRY_CTX(raise_nofile(n + 256), "batch of " + std::to_string(n) + " sockets");
  // Let the accept queue hold the whole burst (per-netns sysctl; best effort).
  if (std::FILE* f = std::fopen("/proc/sys/net/core/somaxconn", "w")) {
    std::fputs("65535", f);
    std::fclose(f);
  }
  // One listener per 20000 connections keeps every listener's ephemeral-port space roomy.
  constexpr std::size_t kPerListener = 20000;
  std::vector<UniqueFd> listeners;
  std::vector<std::uint16_t> ports;
  for (std::size_t i = 0; i < (n + kPerListener - 1) / kPerListener; ++i) {
    ListenOptions lo;
    lo.backlog = 65535;
    auto l = listen_loopback(lo);
    if (!l) {
      return std::move(l).take_error().with_context("batch: listen");
    }
    auto port = local_port(l->get());
    if (!port) {
      return std::move(port).take_error();
    }
    listeners.push_back(std::move(*l));
    ports.push_back(*port);
  }
  EchoChild child;
  RENDR_TRY(child.start(n, ports, kPerListener));
  std::vector<UniqueFd> servers(n);
  prog.begin("batch setup", n);
  for (std::size_t i = 0; i < n; ++i) {
    auto s = accept_one(listeners[i / kPerListener].get(), 10000);
    if (!s) {
      std::string why;
      if (!child.alive(&why)) {
        return make_error(std::errc::io_error, "batch: connection " + std::to_string(i) + ": " + why);
      }
      return std::move(s).take_error().with_context("batch: connection " + std::to_string(i));
    }
    servers[i] = std::move(*s);
    prog.tick(i + 1);
  }
  prog.end();

  BatchResult br;
  br.sockets = n;
  std::vector<TcpSnapshot> snaps(n);
  std::vector<repair::RepairSocket> frozen(n);
  prog.begin("batch checkpoint", n);
  std::uint64_t spent = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t t0 = now_ns();
    auto cp = rep.checkpoint(servers[i].get());
    spent += now_ns() - t0;
    if (!cp) {
      return std::move(cp).take_error().with_context("batch: checkpoint " + std::to_string(i));
    }
    servers[i].reset();  // untimed: the frozen duplicate keeps the socket
    snaps[i] = std::move(cp->snapshot);
    frozen[i] = std::move(cp->socket);
  }
  br.checkpoint_s = static_cast<double>(spent) / 1e9;
  prog.end();

  prog.begin("batch release", n);
  std::uint64_t t0 = now_ns();
  for (std::size_t i = 0; i < n; ++i) {
    rep.release(std::move(frozen[i]));
  }
  br.release_s = static_cast<double>(now_ns() - t0) / 1e9;
  prog.end();

  prog.begin("batch restore", n);
  t0 = now_ns();
  for (std::size_t i = 0; i < n; ++i) {
    auto fd = rep.restore(snaps[i], ro);
    if (!fd) {
      return std::move(fd).take_error().with_context("batch: restore " + std::to_string(i));
    }
    servers[i] = std::move(*fd);
  }
  br.restore_s = static_cast<double>(now_ns() - t0) / 1e9;
  prog.end();

  // Verify an evenly spaced sample (always including the first and the last socket).
  const std::size_t sample = std::min<std::size_t>(batch_verify, n);
  for (std::size_t k = 0; k < sample; ++k) {
    const std::size_t i = sample == 1 ? 0 : k * (n - 1) / (sample - 1);
    if (auto st = echo_check(servers[i].get(), static_cast<std::uint8_t>(i)); !st.ok()) {
      std::string why;
      return std::move(st).take_error().with_context(
          "batch: verify socket " + std::to_string(i) + (child.alive(&why) ? "" : " (" + why + ")"));
    }
    ++br.verified;
  }
  prog.note("batch: verified " + std::to_string(br.verified) + " of " + std::to_string(n) +
            " restored sockets (1 byte echoed by the peer)");
  return br;
}

}  // namespace rendr::bench
