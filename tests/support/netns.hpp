// SPDX-License-Identifier: Apache-2.0
// Test fixtures for network namespaces (STYLE T4). A Netns is a namespace held by an fd: an
// anonymous one (create) disappears with the test process, so nothing leaks when a test fails
// or crashes; open() gives the same view of a named namespace that tools/lab built (its owner
// deletes it).
// Commands run inside with fork + setns + exec. Helpers throw std::runtime_error on failure
// (Catch reports it as a test failure with the command's output).
#pragma once

#include <rendr/common/netns.hpp>
#include <rendr/common/unique_fd.hpp>

#include <optional>

#include <string>
#include <vector>

#include <sys/types.h>

namespace rendr::test {

class Netns {
 public:
  // create makes a new netns with "lo" up. |name| is used in messages only.
  static Netns create(std::string name);
  // open holds the named namespace /run/netns/<name> (e.g. one of a tools/lab lab's).
  static Netns open(const std::string& name);

  [[nodiscard]] int fd() const { return fd_.get(); }
  [[nodiscard]] const std::string& name() const { return name_; }
  // path names the namespace for "ip link set ... netns <path>".
  [[nodiscard]] std::string path() const;

  // sh runs "/bin/sh -c cmd" inside; returns the exit status and appends stdout+stderr to |out|.
  int sh(const std::string& cmd, std::string* out = nullptr) const;
  // must runs |cmd| and throws with its output when it fails.
  void must(const std::string& cmd) const;
  // spawn starts argv inside with stdout to |stdout_path| (empty: inherit); returns the pid.
  pid_t spawn(const std::vector<std::string>& argv, const std::string& stdout_path = {}) const;

 private:
  Netns(UniqueFd fd, std::string name) : fd_(std::move(fd)), name_(std::move(name)) {}
  UniqueFd fd_;
  std::string name_;
};

// NetnsScope moves the calling thread into |ns| and back on destruction (rendr::NetnsEnter,
// throwing instead of returning an error).
class NetnsScope {
 public:
  explicit NetnsScope(const Netns& ns);
  ~NetnsScope();
  NetnsScope(const NetnsScope&) = delete;
  NetnsScope& operator=(const NetnsScope&) = delete;

 private:
  std::optional<NetnsEnter> in_;
};

// veth connects |a| and |b| with a veth pair named |a_if|/|b_if|.
void veth(const Netns& a, const std::string& a_if, const Netns& b, const std::string& b_if);

// wait_exit waits for |pid| up to |timeout_ms|; returns its exit status, or kills it and
// throws on timeout.
int wait_exit(pid_t pid, int timeout_ms);

// unique_prefix: a lab prefix ("rlt<pid><tag>") no other process uses, so parallel tests and
// other labs on the machine never collide.
std::string unique_prefix(const std::string& tag = {});

// read_file returns a file's contents (throws if it cannot be read).
std::string read_file(const std::string& path);

// snmp_counter reads one counter ("Tcp" "EstabResets", "TcpExt" "PAWSEstab", ...) as seen from
// |ns| (/proc/net/snmp and /proc/net/netstat of that namespace).
long long snmp_counter(const Netns& ns, const std::string& group, const std::string& name);

// peer_resets: the resets and bad segments |ns| saw (Tcp EstabResets + InErrs). The migration
// tests' "no RST reached the peer": unchanged across a move.
long long peer_resets(const Netns& ns);

}  // namespace rendr::test
