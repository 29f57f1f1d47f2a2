// SPDX-License-Identifier: Apache-2.0
#include "agent_lab.hpp"

#include "../repair/conn_util.hpp"
#include "support/netns.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <stdexcept>

namespace rendr::test {

namespace {

int run_capture(const std::vector<std::string>& argv, std::string& out, std::string* err) {
  char tmpo[] = "/tmp/rendr-ctl-outXXXXXX";
  char tmpe[] = "/tmp/rendr-ctl-errXXXXXX";
  int fo = ::mkstemp(tmpo);
  int fe = ::mkstemp(tmpe);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fo, 1);
    ::dup2(fe, 2);
    std::vector<char*> a;
    for (const auto& s : argv) {
      a.push_back(const_cast<char*>(s.c_str()));
    }
    a.push_back(nullptr);
    ::execv(a[0], a.data());
    ::_exit(127);
  }
  ::close(fo);
  ::close(fe);
  int st = wait_exit(pid, 120000);
  out = read_file(tmpo);
  if (err != nullptr) {
    *err = read_file(tmpe);
  }
  ::unlink(tmpo);
  ::unlink(tmpe);
  return st;
}

bool wait_socket(const std::string& path, int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < end) {
    int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    int r = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::close(s);
    if (r == 0) {
      return true;
    }
    ::usleep(10000);
  }
  return false;
}

}  // namespace

int scaled_ms(int ms) {
  if (const char* s = std::getenv("RENDR_TEST_TIME_SCALE"); s != nullptr) {
    const int k = std::atoi(s);
    if (k > 1 && k <= 20) {
      return ms * k;
    }
  }
  return ms;
}

long long peer_rsts(const GatewayLab& lab) {
  return snmp_counter(lab.peer, "Tcp", "EstabResets") + snmp_counter(lab.peer, "Tcp", "InErrs");
}

void AgentLab::make_certs(const std::string& d, const std::vector<std::string>& names,
                          const std::string& ca_name) {
  std::string ctl = RENDRCTL_BIN;
  std::string out;
  std::string err;
  if (run_capture({ctl, "cert", "init", "--dir", d, "--ca-name", ca_name, "--days", "2"}, out,
                  &err) != 0) {
    throw std::runtime_error("rendrctl cert init: " + out + err);
  }
  for (const auto& n : names) {
    if (run_capture({ctl, "cert", "issue", "--dir", d, "--name", n, "--days", "2"}, out, &err) !=
        0) {
      throw std::runtime_error("rendrctl cert issue " + n + ": " + out + err);
    }
  }
}

AgentLab::AgentLab(const AgentLabOptions& o) : opt_(o) {
  // RENDR_TEST_TIME_SCALE=N (tools/sanitize-test sets it): the agents' step timeout is N times
  // longer, for builds whose checkpoint and TLS are several times slower (ASan). What the
  // tests assert stays the same.
  opt_.step_timeout_ms = scaled_ms(opt_.step_timeout_ms);
  char tmpl[] = "/tmp/rendr-agentlab-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    throw std::runtime_error("mkdtemp failed");
  }
  dir = tmpl;
  std::vector<std::string> names = {"gw", "a", "b"};
  names.insert(names.end(), opt_.extra_certs.begin(), opt_.extra_certs.end());
  make_certs(dir, names);
  start_agent("gw", opt_.faults_gw);
  start_agent("a", opt_.faults_a);
  start_agent("b", opt_.faults_b);
  if (opt_.start_servers) {
    start_server("a");
    start_server("b");
  }
}

AgentLab::~AgentLab() {
  for (auto& [name, pid] : procs_) {
    ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
  }
  (void)std::system(("rm -rf '" + dir + "'").c_str());
}

void AgentLab::start_agent(const std::string& name, const std::vector<std::string>& faults) {
  std::vector<std::string> argv = {RENDR_AGENT_BIN,
                                   "--name", name,
                                   "--cert", dir + "/" + name + ".pem",
                                   "--key", dir + "/" + name + ".key",
                                   "--ca", dir + "/ca.pem",
                                   "--control", sock(name),
                                   "--step-timeout-ms", std::to_string(opt_.step_timeout_ms),
                                   "--commit-resolve-ms", "3000",
                                   "--staged-timeout-ms", "5000"};
  const Netns* ns = &lab.gw;
  if (name == "gw") {
    for (const char* a : {"--listen", "10.0.2.1:7300", "--steer-iface", "vpeer", "--vip",
                          "10.99.0.1", "--backend", "a=va@10.0.2.2", "--default-backend", "a"}) {
      argv.emplace_back(a);
    }
    if (opt_.gw_knows_b) {
      argv.insert(argv.end(), {"--backend", "b=vb@10.0.3.2"});
    }
    argv.insert(argv.end(), opt_.gw_args.begin(), opt_.gw_args.end());
  } else {
    const bool is_a = name == "a";
    ns = is_a ? &lab.a : &lab.b;
    argv.insert(argv.end(), {"--listen", is_a ? "10.0.2.2:7300" : "10.0.3.2:7300", "--peer",
                             is_a ? "b=10.0.3.2:7300" : "a=10.0.2.2:7300", "--peer",
                             "gw=10.0.2.1:7300", "--gateway", "gw"});
  }
  for (const auto& f : faults) {
    argv.insert(argv.end(), {"--fault", f});
  }
  procs_[name] = ns->spawn(argv, dir + "/" + name + ".log");
  if (!wait_socket(sock(name), 10000)) {
    throw std::runtime_error("agent " + name + " did not start: " + log(name));
  }
}

void AgentLab::kill_agent(const std::string& name, int sig) {
  auto it = procs_.find(name);
  if (it == procs_.end()) {
    return;
  }
  ::kill(it->second, sig);
  int st = 0;
  ::waitpid(it->second, &st, 0);
  procs_.erase(it);
}

void AgentLab::start_server(const std::string& host) {
  const Netns& ns = host == "a" ? lab.a : lab.b;
  std::string key = "srv-" + host;
  std::vector<std::string> argv = {PATTERN_SERVER_BIN, "--agent", sock(host), "--service", "pat",
                                   "--listen", "10.99.0.1:8000", "--listen", "[fd99::1]:8000"};
  argv.insert(argv.end(), opt_.server_args.begin(), opt_.server_args.end());
  procs_[key] = ns.spawn(argv, dir + "/" + key + ".log");
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (log(key).find("ready") == std::string::npos) {
    if (std::chrono::steady_clock::now() > end) {
      throw std::runtime_error("pattern server in " + host + " did not start: " + log(key));
    }
    ::usleep(10000);
  }
}

bool AgentLab::server_alive(const std::string& host) const {
  auto it = procs_.find("srv-" + host);
  if (it == procs_.end()) {
    return false;
  }
  int st = 0;
  return ::waitpid(it->second, &st, WNOHANG) == 0;
}

std::string AgentLab::log(const std::string& name) const {
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

int AgentLab::rendrctl(const std::string& agent, const std::vector<std::string>& args,
                       std::string& out, std::string* err) const {
  std::vector<std::string> argv = {RENDRCTL_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), {"--agent", sock(agent)});
  return run_capture(argv, out, err);
}

std::string AgentLab::migrate(const std::string& from, const std::vector<std::string>& select,
                              const std::string& to, int* status) const {
  std::vector<std::string> args = {"migrate"};
  args.insert(args.end(), select.begin(), select.end());
  args.insert(args.end(), {"--to", to, "--json"});
  std::string out;
  std::string err;
  int st = rendrctl(from, args, out, &err);
  if (status != nullptr) {
    *status = st;
  }
  if (out.empty()) {
    throw std::runtime_error("rendrctl migrate printed nothing (exit " + std::to_string(st) +
                             "): " + err);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

PatternClient::PatternClient(const GatewayLab& lab, std::uint16_t port, std::uint64_t up_limit,
                             bool v6)
    : up_limit_(up_limit) {
  auto ep = Endpoint::parse_address(v6 ? GatewayLab::kVip6 : GatewayLab::kVip4, port);
  fd_ = connect_from(lab.peer, *ep);
  // The server sees the tuple mirrored.
  const FourTuple mine = tuple_of(fd_.get());
  tuple_ = FourTuple{mine.remote, mine.local};
  set_nonblocking(fd_.get(), true);
  t_ = std::thread([this] { run(); });
}

PatternClient::~PatternClient() { stop(); }

void PatternClient::stop() {
  stop_.store(true);
  if (t_.joinable()) {
    t_.join();
  }
}

std::string PatternClient::error() const {
  std::lock_guard<std::mutex> g(mu_);
  return error_;
}

bool PatternClient::wait_down(std::uint64_t more, int timeout_ms) {
  const std::uint64_t target = down_.load() + more;
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (down_.load() < target && !failed_.load()) {
    if (std::chrono::steady_clock::now() > end) {
      return false;
    }
    ::usleep(2000);
  }
  return !failed_.load();
}

void PatternClient::run() {
  const Pattern down_p(1);
  const Pattern up_p(2);
  std::vector<std::byte> buf(256 * 1024);
  std::vector<std::byte> out(16 * 1024);
  auto fail = [&](const std::string& e) {
    std::lock_guard<std::mutex> g(mu_);
    error_ = e;
    failed_.store(true);
  };
  while (!stop_.load()) {
    pollfd p{fd_.get(), 0, 0};
    if (reading_.load()) {
      p.events |= POLLIN;
    }
    if (up_.load() < up_limit_) {
      p.events |= POLLOUT;
    }
    int r = ::poll(&p, 1, 20);
    if (r <= 0) {
      continue;
    }
    if ((p.revents & (POLLERR | POLLHUP)) != 0 && !reading_.load()) {
      fail("socket error/hangup");
      return;
    }
    if ((p.revents & (POLLIN | POLLERR | POLLHUP)) != 0 && reading_.load()) {
      ssize_t n = ::read(fd_.get(), buf.data(), buf.size());
      if (n > 0) {
        long long bad = down_p.mismatch(down_.load(), std::span(buf.data(), static_cast<std::size_t>(n)));
        if (bad >= 0) {
          fail("downstream mismatch at offset " + std::to_string(down_.load() + static_cast<std::uint64_t>(bad)));
          return;
        }
        down_ += static_cast<std::uint64_t>(n);
      } else if (n == 0) {
        fail("unexpected EOF after " + std::to_string(down_.load()) + " bytes");
        return;
      } else if (errno != EAGAIN && errno != EINTR) {
        fail(std::string("read: ") + std::strerror(errno));
        return;
      }
    }
    if ((p.revents & POLLOUT) != 0) {
      std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), up_limit_ - up_.load()));
      up_p.fill(up_.load(), std::span(out.data(), want));
      ssize_t w = ::send(fd_.get(), out.data(), want, MSG_NOSIGNAL);
      if (w > 0) {
        up_ += static_cast<std::uint64_t>(w);
      } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
        fail(std::string("write: ") + std::strerror(errno));
        return;
      }
    }
  }
}

void expect_healthy(AgentLab& al, PatternClient& c, long long rst_before) {
  INFO("client error: " << c.error());
  INFO("agent a log:\n" << al.log("a") << "\nagent b log:\n" << al.log("b"));
  CHECK(c.wait_down(8 << 20, 20000));
  CHECK_FALSE(c.failed());
  CHECK(peer_rsts(al.lab) == rst_before);
  CHECK(al.server_alive("a"));
  CHECK(al.server_alive("b"));
}

std::uint64_t metric(AgentLab& al, const std::string& agent, const std::string& name) {
  std::string out;
  if (al.rendrctl(agent, {"metrics"}, out) != 0) {
    return ~0ULL;
  }
  auto p = out.find("\n" + name + "{");
  if (p == std::string::npos) {
    return ~0ULL;
  }
  p = out.find("} ", p);
  return std::stoull(out.substr(p + 2));
}

}  // namespace rendr::test
