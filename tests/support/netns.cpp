// SPDX-License-Identifier: Apache-2.0
#include "support/netns.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace rendr::test {
namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::runtime_error(msg); }

UniqueFd current_netns() {
  auto fd = rendr::current_netns();
  if (!fd) {
    fail(fd.error().message());
  }
  return std::move(*fd);
}

}  // namespace

Netns Netns::create(std::string name) {
  UniqueFd result;
  std::string err;
  // unshare in a helper thread: the creating thread's own namespace must not change.
  std::thread t([&] {
    if (::unshare(CLONE_NEWNET) != 0) {
      err = std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno);
      return;
    }
    result = current_netns();
  });
  t.join();
  if (!err.empty()) {
    fail("netns " + name + ": " + err);
  }
  Netns ns(std::move(result), std::move(name));
  ns.must("ip link set lo up");
  return ns;
}

Netns Netns::open(const std::string& name) {
  auto fd = UniqueFd::open("/run/netns/" + name, O_RDONLY | O_CLOEXEC);
  if (!fd) {
    fail("netns " + name + ": " + fd.error().message());
  }
  return Netns(std::move(*fd), name);
}

std::string Netns::path() const {
  return "/proc/" + std::to_string(::getpid()) + "/fd/" + std::to_string(fd_.get());
}

int Netns::sh(const std::string& cmd, std::string* out) const {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) {
    fail("pipe2 failed");
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    fail("fork failed");
  }
  if (pid == 0) {
    ::dup2(pipefd[1], 1);
    ::dup2(pipefd[1], 2);
    if (::setns(fd_.get(), CLONE_NEWNET) != 0) {
      ::_exit(126);
    }
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(pipefd[1]);
  std::string buf;
  char tmp[4096];
  ssize_t n = 0;
  while ((n = ::read(pipefd[0], tmp, sizeof tmp)) > 0) {
    buf.append(tmp, static_cast<std::size_t>(n));
  }
  ::close(pipefd[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (out != nullptr) {
    *out += buf;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void Netns::must(const std::string& cmd) const {
  std::string out;
  int rc = sh(cmd, &out);
  if (rc != 0) {
    fail("[" + name_ + "] '" + cmd + "' exited " + std::to_string(rc) + ": " + out);
  }
}

pid_t Netns::spawn(const std::vector<std::string>& argv, const std::string& stdout_path) const {
  std::vector<char*> args;
  for (const auto& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));
  }
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    fail("fork failed");
  }
  if (pid == 0) {
    if (!stdout_path.empty()) {
      int fd = ::open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
      }
    }
    if (::setns(fd_.get(), CLONE_NEWNET) != 0) {
      ::_exit(126);
    }
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

NetnsScope::NetnsScope(const Netns& ns) {
  auto in = NetnsEnter::enter(ns.fd());
  if (!in) {
    fail("netns " + ns.name() + ": " + in.error().message());
  }
  in_.emplace(std::move(*in));
}

NetnsScope::~NetnsScope() = default;

void veth(const Netns& a, const std::string& a_if, const Netns& b, const std::string& b_if) {
  a.must("ip link add " + a_if + " type veth peer name " + b_if + " && ip link set " + b_if +
         " netns " + b.path() + " && ip link set " + a_if + " up");
  b.must("ip link set " + b_if + " up");
}

int wait_exit(pid_t pid, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int status = 0;
  while (true) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      fail("process " + std::to_string(pid) + " did not exit within " +
           std::to_string(timeout_ms) + " ms (killed)");
    }
    ::poll(nullptr, 0, 5);
  }
}

std::string unique_prefix(const std::string& tag) {
  return "rlt" + std::to_string(::getpid()) + tag;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) {
    fail("cannot read " + path);
  }
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

long long snmp_counter(const Netns& ns, const std::string& group, const std::string& name) {
  std::string out;
  std::string file = group == "TcpExt" || group == "IpExt" ? "/proc/net/netstat" : "/proc/net/snmp";
  if (ns.sh("cat " + file, &out) != 0) {
    fail("cannot read " + file + " in " + ns.name());
  }
  // Pairs of lines: "Group: names..." then "Group: values...".
  std::istringstream in(out);
  std::string header;
  std::string values;
  while (std::getline(in, header) && std::getline(in, values)) {
    if (header.rfind(group + ":", 0) != 0) {
      continue;
    }
    std::istringstream hs(header.substr(group.size() + 1));
    std::istringstream vs(values.substr(group.size() + 1));
    std::string h;
    long long v = 0;
    while (hs >> h && vs >> v) {
      if (h == name) {
        return v;
      }
    }
  }
  fail("counter " + group + "." + name + " not found");
}

long long peer_resets(const Netns& ns) {
  return snmp_counter(ns, "Tcp", "EstabResets") + snmp_counter(ns, "Tcp", "InErrs");
}

}  // namespace rendr::test
