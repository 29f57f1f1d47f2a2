// SPDX-License-Identifier: Apache-2.0
#include "lab/agent_stack.hpp"

#include <rendr/agents/message.hpp>
#include <rendr/agents/packet.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace rendr::lab {

Result<pid_t> AgentStack::spawn(const std::string& role, const std::vector<std::string>& argv,
                                const std::string& log) {
  std::string path = dir_ + "/" + log + ".log";
  pid_t pid = ::fork();
  if (pid < 0) {
    return errno_error("fork");
  }
  if (pid == 0) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    std::vector<std::string> full = {"/usr/bin/ip", "netns", "exec", lab_.ns(role)};
    full.insert(full.end(), argv.begin(), argv.end());
    std::vector<char*> a;
    for (auto& s : full) {
      a.push_back(s.data());
    }
    a.push_back(nullptr);
    ::execv(a[0], a.data());
    ::_exit(127);
  }
  procs_.emplace_back(log, pid);
  return pid;
}

std::string AgentStack::log(const std::string& name) const { return read_run_log(dir_, name); }

pid_t AgentStack::pid(const std::string& log) const {
  for (const auto& [name, p] : procs_) {
    if (name == log) {
      return p;
    }
  }
  return -1;
}

Status make_certs(const std::string& rendrctl_bin, const std::string& dir,
                  const std::vector<std::string>& names, const std::string& ca_name) {
  auto run = [](const std::string& cmd) -> Status {
    std::string out;
    if (shell(cmd, &out) != 0) {
      return make_error(std::errc::io_error, cmd + ": " + out);
    }
    return {};
  };
  RENDR_TRY(run(rendrctl_bin + " cert init --dir " + shell_quote(dir) +
                (ca_name.empty() ? std::string() : " --ca-name " + shell_quote(ca_name)) +
                " --days 2"));
  for (const auto& n : names) {
    RENDR_TRY(run(rendrctl_bin + " cert issue --dir " + shell_quote(dir) + " --name " +
                  shell_quote(n) + " --days 2"));
  }
  return {};
}

bool AgentStack::alive(const std::string& log) const {
  const pid_t p = pid(log);
  int st = 0;
  return p > 0 && ::waitpid(p, &st, WNOHANG) == 0;
}

void AgentStack::stop(const std::string& log, int sig) {
  for (auto it = procs_.begin(); it != procs_.end(); ++it) {
    if (it->first == log) {
      ::kill(it->second, sig);
      ::waitpid(it->second, nullptr, 0);
      procs_.erase(it);
      return;
    }
  }
}

Status AgentStack::issue_cert(const std::string& name) const {
  const std::string cmd = opt_.rendrctl_bin + " cert issue --dir " + dir_ + " --name " +
                          shell_quote(name) + " --days 2";
  std::string out;
  if (shell(cmd, &out) != 0) {
    return make_error(std::errc::io_error, cmd + ": " + out);
  }
  return {};
}

bool AgentStack::wait_log(const std::string& name, const std::string& text, int timeout_ms) const {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (log(name).find(text) == std::string::npos) {
    if (std::chrono::steady_clock::now() > end) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

bool AgentStack::unprivileged(const std::string& name) const {
  for (const auto& n : opt_.unprivileged) {
    if (n == name) {
      return true;
    }
  }
  return false;
}

Status AgentStack::start_agent(const std::string& name, const std::vector<std::string>& extra) {
  std::vector<std::string> argv;
  if (unprivileged(name)) {
    argv = {"/usr/bin/setpriv", "--reuid", std::to_string(opt_.unpriv_uid), "--regid",
            std::to_string(opt_.unpriv_gid), "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all"};
  }
  argv.insert(argv.end(), {opt_.agent_bin,
                                   "--name", name,
                                   "--cert", dir_ + "/" + name + ".pem",
                                   "--key", dir_ + "/" + name + ".key",
                                   "--ca", dir_ + "/ca.pem",
                                   "--control", sock(name),
                                   "--step-timeout-ms", std::to_string(opt_.step_timeout_ms),
                                   "--freeze-grace-ms", std::to_string(opt_.freeze_grace_ms)});
  if (unprivileged(name)) {
    argv.insert(argv.end(), {"--tun-clone", dir_ + "/tun"});
  }
  if (name == "gw") {
    argv.insert(argv.end(),
                {"--listen", GatewayLab::gw_addr4(Host::a) + ":7300", "--steer-iface",
                 GatewayLab::kGwPeerIf, "--vip", GatewayLab::kVip4, "--backend",
                 "a=" + GatewayLab::gw_ifname(Host::a) + "@" + GatewayLab::host_addr4(Host::a),
                 "--default-backend", "a"});
    if (opt_.gw_knows_b) {
      argv.insert(argv.end(), {"--backend", "b=" + GatewayLab::gw_ifname(Host::b) + "@" +
                                                GatewayLab::host_addr4(Host::b)});
    }
  } else {
    Host h = name == "a" ? Host::a : Host::b;
    Host o = name == "a" ? Host::b : Host::a;
    argv.insert(argv.end(), {"--listen", GatewayLab::host_addr4(h) + ":7300", "--peer",
                             std::string(name == "a" ? "b" : "a") + "=" +
                                 GatewayLab::host_addr4(o) + ":7300",
                             "--peer", "gw=" + GatewayLab::gw_addr4(Host::a) + ":7300",
                             "--gateway", "gw"});
  }
  argv.insert(argv.end(), opt_.extra_agent_args.begin(), opt_.extra_agent_args.end());
  argv.insert(argv.end(), extra.begin(), extra.end());
  auto pid = spawn(name, argv, name);
  if (!pid) {
    return std::move(pid).take_error();
  }
  if (!wait_log(name, "ready", 10000)) {
    return make_error(std::errc::timed_out, "rendr-agent " + name + " did not start: " + log(name));
  }
  return {};
}

Result<std::unique_ptr<AgentStack>> AgentStack::start(const GatewayLab& lab, AgentStackOptions o) {
  std::unique_ptr<AgentStack> s(new AgentStack(lab, std::move(o)));
  char tmpl[] = "/tmp/rendr-agents-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    return errno_error("mkdtemp");
  }
  s->dir_ = tmpl;
  std::vector<std::string> names = {"gw", "a", "b"};
  names.insert(names.end(), s->opt_.extra_certs.begin(), s->opt_.extra_certs.end());
  RENDR_TRY(make_certs(s->opt_.rendrctl_bin, s->dir_, names));
  if (!s->opt_.unprivileged.empty()) {
    // What the unprivileged agents open: the dir (control sockets), their certificate and key,
    // and the TUN clone node (char 10:200, the same driver as /dev/net/tun).
    const std::string owner =
        std::to_string(s->opt_.unpriv_uid) + ":" + std::to_string(s->opt_.unpriv_gid);
    std::string cmd = "mknod -m 0600 " + shell_quote(s->dir_ + "/tun") + " c 10 200 && chown " +
                      owner + " " + shell_quote(s->dir_) + " " + shell_quote(s->dir_ + "/tun");
    for (const auto& n : s->opt_.unprivileged) {
      cmd += " " + shell_quote(s->dir_ + "/" + n + ".pem") + " " +
             shell_quote(s->dir_ + "/" + n + ".key");
    }
    std::string out;
    if (shell(cmd, &out) != 0) {
      return make_error(std::errc::io_error, "unprivileged agents: " + cmd + ": " + out);
    }
  }
  for (const char* n : {"gw", "a", "b"}) {
    auto it = s->opt_.agent_args.find(n);
    RENDR_TRY(s->start_agent(n, it == s->opt_.agent_args.end() ? std::vector<std::string>{}
                                                                : it->second));
  }
  return s;
}

AgentStack::~AgentStack() { stop_stack(procs_, dir_); }

Result<std::string> AgentStack::migrate(const std::string& from,
                                        const std::vector<std::string>& flows,
                                        const std::string& to, bool all,
                                        const std::string& service) const {
  auto s = agents::connect_control(sock(from));
  if (!s) {
    return std::move(s).take_error();
  }
  agents::Message m(agents::MsgType::migrate);
  m.add(agents::Tag::to, to);
  for (const auto& f : flows) {
    m.add(agents::Tag::tuple, f);
  }
  if (all) {
    m.add(agents::Tag::all, "1");
  }
  if (!service.empty()) {
    m.add(agents::Tag::service, service);
  }
  auto r = agents::call(s->get(), m, 120000);
  if (!r) {
    return std::move(r).take_error();
  }
  if (r->type() != agents::MsgType::json) {
    return agents::error_of(*r, "migrate");
  }
  return r->str_or(agents::Tag::text, "{}");
}

}  // namespace rendr::lab
