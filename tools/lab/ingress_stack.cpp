// SPDX-License-Identifier: Apache-2.0
#include "lab/ingress_stack.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

namespace rendr::lab {

Result<std::unique_ptr<IngressStack>> IngressStack::start(const IngressLab& lab,
                                                          IngressStackOptions o) {
  std::unique_ptr<IngressStack> s(new IngressStack(lab));
  char tmpl[] = "/tmp/rendr-ingress-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    return errno_error("mkdtemp");
  }
  s->dir_ = tmpl;
  std::vector<std::string> eargs = {o.tun_bin, "egress", "--listen",
                                    "0.0.0.0:" + std::to_string(IngressLab::kEgressPort),
                                    "--status-socket", s->status_socket("egress")};
  eargs.insert(eargs.end(), o.egress_args.begin(), o.egress_args.end());
  std::vector<std::string> iargs = {o.tun_bin, "ingress", "--tun", IngressLab::kTun,
                                    "--status-socket", s->status_socket("ingress")};
  for (const auto& p : IngressLab::peers()) {
    iargs.insert(iargs.end(), {"--peer", p});
  }
  iargs.insert(iargs.end(), o.ingress_args.begin(), o.ingress_args.end());
  for (const auto& [role, argv] : {std::pair{std::string("egress"), eargs},
                                   std::pair{std::string("ingress"), iargs}}) {
    auto pid = s->spawn(role == "egress" ? "egress" : "app", argv, role);
    if (!pid) {
      return std::move(pid).take_error();
    }
    if (!s->wait_log(role, "ready", 10000)) {
      return make_error(std::errc::timed_out,
                        "rendr-tun " + role + " did not get ready: " + s->log(role));
    }
  }
  return s;
}

IngressStack::~IngressStack() { stop_stack(procs_, dir_); }

Result<pid_t> IngressStack::spawn(const std::string& role, const std::vector<std::string>& argv,
                                   const std::string& log) {
  auto nsfd = lab_.netns_fd(role);
  if (!nsfd) {
    return std::move(nsfd).take_error();
  }
  const std::string path = dir_ + "/" + log + ".log";
  std::vector<std::string> args = argv;
  std::vector<char*> a;
  for (auto& s : args) {
    a.push_back(s.data());
  }
  a.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    return errno_error("fork");
  }
  if (pid == 0) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    if (::setns(nsfd->get(), CLONE_NEWNET) != 0) {
      ::_exit(126);
    }
    ::execvp(a[0], a.data());
    ::_exit(127);
  }
  procs_.emplace_back(log, pid);
  return pid;
}

std::string IngressStack::log(const std::string& name) const { return read_run_log(dir_, name); }

pid_t IngressStack::pid(const std::string& log) const {
  for (const auto& [name, p] : procs_) {
    if (name == log) {
      return p;
    }
  }
  return -1;
}

bool IngressStack::wait_log(const std::string& name, const std::string& text,
                            int timeout_ms) const {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  const pid_t p = pid(name);
  while (log(name).find(text) == std::string::npos) {
    int st = 0;
    if (std::chrono::steady_clock::now() > end || (p > 0 && ::waitpid(p, &st, WNOHANG) == p)) {
      return log(name).find(text) != std::string::npos;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::string IngressStack::status(const std::string& role) const {
  std::string out;
  if (auto fd = UniqueFd::connect_unix(status_socket(role), SOCK_STREAM)) {
    char buf[4096];
    for (ssize_t n; (n = ::read(fd->get(), buf, sizeof buf)) > 0;) {
      out.append(buf, static_cast<std::size_t>(n));
    }
  }
  return out;
}

}  // namespace rendr::lab
