// SPDX-License-Identifier: Apache-2.0
#include "lab_util.hpp"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <thread>

namespace rendr::lab {

int shell(const std::string& cmd, std::string* out) {
  std::string full = cmd + " 2>&1";
  FILE* p = ::popen(full.c_str(), "r");
  if (p == nullptr) {
    return -1;
  }
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
    if (out != nullptr) {
      out->append(buf, n);
    }
  }
  int st = ::pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q.push_back(c);
    }
  }
  return q + "'";
}

Result<std::string> output_in(const std::string& netns, const std::string& cmd) {
  std::string out;
  int rc = shell("ip netns exec " + shell_quote(netns) + " sh -c " + shell_quote(cmd), &out);
  if (rc != 0) {
    while (!out.empty() && out.back() == '\n') {
      out.pop_back();
    }
    return make_error(std::errc::io_error, "lab: [" + netns + "] '" + cmd + "' exited " +
                                               std::to_string(rc) + ": " + out);
  }
  return out;
}

Status run_in(const std::string& netns, const std::string& cmd) {
  auto r = output_in(netns, cmd);
  if (!r) {
    return std::move(r).take_error();
  }
  return {};
}

std::string in_ns(const std::string& netns, const std::string& cmd) {
  if (cmd.rfind("ip ", 0) == 0) {
    return "ip -n " + shell_quote(netns) + cmd.substr(2);
  }
  return "ip netns exec " + shell_quote(netns) + " " + cmd;
}

Status run_script(const std::string& what, const std::vector<std::string>& cmds) {
  if (cmds.empty()) {
    return {};
  }
  std::string script;
  for (const auto& c : cmds) {
    script += c + " || { echo " + shell_quote("failed: " + c) + "; exit 1; }\n";
  }
  std::string out;
  if (shell(script, &out) != 0) {
    while (!out.empty() && out.back() == '\n') {
      out.pop_back();
    }
    return make_error(std::errc::io_error, "lab: " + what + ": " + out);
  }
  return {};
}

bool netns_exists(const std::string& name) {
  struct stat st {};
  return ::stat(("/run/netns/" + name).c_str(), &st) == 0;
}

Status netns_add(const std::string& name) {
  if (netns_exists(name)) {
    return make_error(std::errc::file_exists, "lab: namespace " + name + " already exists");
  }
  std::string out;
  if (shell("ip netns add " + shell_quote(name) + " && ip -n " + shell_quote(name) +
                " link set lo up",
            &out) != 0) {
    while (!out.empty() && out.back() == '\n') {
      out.pop_back();
    }
    if (::geteuid() != 0 || out.find("ermission denied") != std::string::npos ||
        out.find("not permitted") != std::string::npos) {
      return make_error(std::errc::operation_not_permitted,
                        "lab: ip netns add " + name +
                            " failed: needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN): " + out);
    }
    return make_error(std::errc::io_error, "lab: ip netns add " + name + " failed: " + out);
  }
  return {};
}

void netns_del(const std::string& name) {
  if (netns_exists(name)) {
    // Processes the lab's tools left there (a userstack keeper outlives its agent on purpose)
    // would keep the namespace, and its devices, alive after the delete.
    // Never this process (a thread of it may stand in the namespace).
    (void)shell("ip netns pids " + shell_quote(name) + " | grep -vx " +
                std::to_string(::getpid()) + " | xargs -r kill -9; ip netns del " +
                shell_quote(name));
  }
}

Result<UniqueFd> open_netns(const std::string& name) {
  auto fd = UniqueFd::open("/run/netns/" + name, O_RDONLY);
  if (!fd) {
    return std::move(fd).take_error().with_context("lab: open namespace " + name);
  }
  return fd;
}

namespace {
// link_lines: "ip -o link show" of |netns|, without entering it.
Result<std::string> link_lines(const std::string& netns) {
  std::string out;
  if (shell("ip -n " + shell_quote(netns) + " -o link show", &out) != 0) {
    return make_error(std::errc::io_error, "lab: [" + netns + "] ip -o link show: " + out);
  }
  return out;
}
}  // namespace

Result<std::vector<Link>> links(const std::string& netns) {
  auto out = link_lines(netns);
  if (!out) {
    return std::move(out).take_error();
  }
  // "2: p1@if3: <BROADCAST,...> mtu ..." -> {2, "p1"}
  std::vector<Link> v;
  std::istringstream in(*out);
  std::string line;
  while (std::getline(in, line)) {
    auto c1 = line.find(": ");
    if (c1 == std::string::npos) {
      continue;
    }
    auto c2 = line.find(": ", c1 + 2);
    if (c2 == std::string::npos) {
      continue;
    }
    Link l;
    l.ifindex = std::atoi(line.substr(0, c1).c_str());
    l.name = line.substr(c1 + 2, c2 - c1 - 2);
    if (auto at = l.name.find('@'); at != std::string::npos) {
      l.name.resize(at);
    }
    v.push_back(std::move(l));
  }
  return v;
}

Result<int> ifindex(const std::string& netns, const std::string& ifname) {
  auto ls = links(netns);
  if (!ls) {
    return std::move(ls).take_error();
  }
  for (const auto& l : *ls) {
    if (l.name == ifname) {
      return l.ifindex;
    }
  }
  return make_error(std::errc::no_such_device, "lab: no interface " + ifname + " in " + netns);
}

Status wait_links_ready(const std::string& netns, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto out = link_lines(netns);
    if (!out) {
      return std::move(out).take_error();
    }
    std::string waiting;
    std::istringstream in(*out);
    std::string line;
    while (std::getline(in, line)) {
      if (line.find("LOOPBACK") != std::string::npos) {
        continue;
      }
      if (line.find("qdisc noop") != std::string::npos ||
          line.find("state UP") == std::string::npos) {
        waiting = line.substr(0, line.find('<'));
        break;
      }
    }
    if (waiting.empty()) {
      return {};
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return make_error(std::errc::timed_out,
                        "lab: [" + netns + "] link not ready after " +
                            std::to_string(timeout_ms) + " ms: " + waiting);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

Result<std::map<std::string, std::string>> macs(const std::string& netns) {
  auto out = link_lines(netns);
  if (!out) {
    return std::move(out).take_error();
  }
  // "3: va@if2: <...> mtu 1500 ... \    link/ether 9a:..:4e brd ff:ff:ff:ff:ff:ff ..."
  std::map<std::string, std::string> m;
  std::istringstream in(*out);
  std::string line;
  while (std::getline(in, line)) {
    auto c1 = line.find(": ");
    auto c2 = c1 == std::string::npos ? c1 : line.find(": ", c1 + 2);
    auto e = line.find("link/ether ");
    if (c2 == std::string::npos || e == std::string::npos || line.size() < e + 11 + 17) {
      continue;
    }
    std::string name = line.substr(c1 + 2, c2 - c1 - 2);
    if (auto at = name.find('@'); at != std::string::npos) {
      name.resize(at);
    }
    m[name] = line.substr(e + 11, 17);
  }
  return m;
}

Result<std::string> mac_of(const std::string& netns, const std::string& ifname) {
  auto m = macs(netns);
  if (!m) {
    return std::move(m).take_error();
  }
  auto it = m->find(ifname);
  if (it == m->end()) {
    return make_error(std::errc::io_error, "lab: [" + netns + "] no MAC for " + ifname);
  }
  return it->second;
}

std::vector<std::string> neighbour_pins(const std::string& netns, const std::string& ifname,
                                        const std::vector<std::string>& peer_addrs,
                                        const std::string& peer_mac) {
  std::vector<std::string> v;
  for (const auto& a : peer_addrs) {
    v.push_back(in_ns(netns, "ip neigh replace " + a + " lladdr " + peer_mac + " dev " + ifname +
                                 " nud permanent"));
  }
  return v;
}

Status pin_neighbour(const std::string& netns, const std::string& ifname,
                     const std::vector<std::string>& peer_addrs, const std::string& peer_mac) {
  return run_script("[" + netns + "] pin neighbours on " + ifname,
                    neighbour_pins(netns, ifname, peer_addrs, peer_mac));
}

const std::vector<std::string>& lab_roles() {
  static const std::vector<std::string> kRoles = {
      "peer", "gw", "a", "b", "client", "server", "app", "egress", "origin"};
  return kRoles;
}

std::vector<std::string> existing_lab_namespaces(const std::string& prefix) {
  std::vector<std::string> v;
  for (const auto& r : lab_roles()) {
    if (netns_exists(prefix + "-" + r)) {
      v.push_back(prefix + "-" + r);
    }
  }
  return v;
}

std::vector<std::string> remove_lab(const std::string& prefix) {
  std::vector<std::string> removed;
  for (const auto& n : existing_lab_namespaces(prefix)) {
    netns_del(n);
    if (!netns_exists(n)) {
      removed.push_back(n);
    }
  }
  return removed;
}

Status valid_prefix(const std::string& prefix) {
  if (prefix.empty() || prefix.size() > 32 || prefix[0] == '-' || prefix[0] == '.') {
    return make_error(std::errc::invalid_argument,
                      "lab: prefix '" + prefix + "' must be 1..32 characters, not starting "
                                                 "with '-' or '.'");
  }
  for (char c : prefix) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.';
    if (!ok) {
      return make_error(std::errc::invalid_argument,
                        "lab: prefix '" + prefix + "' may only use [A-Za-z0-9_.-]");
    }
  }
  return {};
}

std::string read_run_log(const std::string& dir, const std::string& name) {
  std::string out;
  if (FILE* f = std::fopen((dir + "/" + name + ".log").c_str(), "r")) {
    char buf[4096];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
      out.append(buf, n);
    }
    std::fclose(f);
  }
  return out;
}

void stop_stack(StackProcesses& procs, const std::string& dir) {
  for (auto& [name, pid] : procs) {
    ::kill(pid, SIGTERM);
  }
  for (auto& [name, pid] : procs) {
    for (int i = 0; i < 100; ++i) {
      int st = 0;
      if (::waitpid(pid, &st, WNOHANG) != 0) {
        pid = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  if (!dir.empty()) {
    const char* keep = std::getenv("RENDR_KEEP_LOGS");
    if (keep != nullptr && *keep != '\0' && std::string(keep) != "0") {
      // Debugging: keep the processes' logs, drop everything else (keys, data, sockets).
      (void)shell("find '" + dir + "' -type f ! -name '*.log' -delete");
      std::fprintf(stderr, "RENDR_KEEP_LOGS: logs kept in %s\n", dir.c_str());
    } else {
      (void)shell("rm -rf '" + dir + "'");
    }
  }
}

}  // namespace rendr::lab
