// SPDX-License-Identifier: Apache-2.0
#include "agent_lab.hpp"

#include "support/netns.hpp"
#include "support/sockets.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>
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


void AgentLab::make_certs(const std::string& d, const std::vector<std::string>& names,
                          const std::string& ca_name) {
  auto st = lab::make_certs(RENDRCTL_BIN, d, names, ca_name);
  if (!st) {
    throw std::runtime_error(st.error().message());
  }
}

AgentLab::AgentLab(const AgentLabOptions& o) : opt_(o) {
  // RENDR_TEST_TIME_SCALE=N (tools/sanitize-test sets it): the agents' step timeout is N times
  // longer, for builds whose checkpoint and TLS are several times slower (ASan). What the
  // tests assert stays the same.
  opt_.step_timeout_ms = scaled_ms(opt_.step_timeout_ms);
  lab::AgentStackOptions so;
  so.agent_bin = RENDR_AGENT_BIN;
  so.rendrctl_bin = RENDRCTL_BIN;
  so.step_timeout_ms = opt_.step_timeout_ms;
  so.extra_agent_args = {"--commit-resolve-ms", "3000", "--staged-timeout-ms", "5000"};
  so.gw_knows_b = opt_.gw_knows_b;
  so.extra_certs = opt_.extra_certs;
  so.agent_args["gw"] = opt_.gw_args;
  for (const auto& [name, faults] :
       {std::pair{"gw", &opt_.faults_gw}, {"a", &opt_.faults_a}, {"b", &opt_.faults_b}}) {
    for (const auto& f : *faults) {
      so.agent_args[name].insert(so.agent_args[name].end(), {"--fault", f});
    }
  }
  for (const auto& h : opt_.userstack_hosts) {
    if (auto st = lab.topology().use_userstack(h == "a" ? lab::Host::a : lab::Host::b); !st) {
      throw std::runtime_error("userstack host " + h + ": " + st.error().message());
    }
    so.agent_args[h].insert(so.agent_args[h].end(), {"--method", "userstack", "--tun", "rtun0",
                                                     "--service-port", "pat=8000"});
  }
  auto s = lab::AgentStack::start(lab.topology(), std::move(so));
  if (!s) {
    throw std::runtime_error("agent stack: " + s.error().message());
  }
  stack_ = std::move(*s);
  dir = stack_->dir();
  if (opt_.start_servers) {
    start_server("a");
    start_server("b");
  }
}

AgentLab::~AgentLab() = default;

pid_t AgentLab::pid(const std::string& name) const {
  const pid_t p = stack_->pid(name);
  return p > 0 ? p : 0;
}

void AgentLab::start_agent(const std::string& name, const std::vector<std::string>& faults) {
  std::vector<std::string> extra;
  if (name == "gw") {
    extra = opt_.gw_args;
  }
  if (std::find(opt_.userstack_hosts.begin(), opt_.userstack_hosts.end(), name) !=
      opt_.userstack_hosts.end()) {
    extra.insert(extra.end(), {"--method", "userstack", "--tun", "rtun0", "--service-port",
                               "pat=8000"});
  }
  for (const auto& f : faults) {
    extra.insert(extra.end(), {"--fault", f});
  }
  auto st = stack_->start_agent(name, extra);
  if (!st) {
    throw std::runtime_error("agent " + name + ": " + st.error().message());
  }
}

void AgentLab::kill_agent(const std::string& name, int sig) { stack_->stop(name, sig); }

void AgentLab::start_server(const std::string& host) {
  const std::string key = "srv-" + host;
  std::vector<std::string> argv = {PATTERN_SERVER_BIN, "--agent", sock(host), "--service", "pat"};
  if (std::find(opt_.userstack_hosts.begin(), opt_.userstack_hosts.end(), host) !=
      opt_.userstack_hosts.end()) {
    argv.insert(argv.end(), {"--listen", "127.0.0.1:8000"});
  } else {
    argv.insert(argv.end(), {"--listen", "10.99.0.1:8000", "--listen", "[fd99::1]:8000"});
  }
  argv.insert(argv.end(), opt_.server_args.begin(), opt_.server_args.end());
  auto pid = stack_->spawn(host, argv, key);
  if (!pid) {
    throw std::runtime_error("pattern server in " + host + ": " + pid.error().message());
  }
  if (!stack_->wait_log(key, "ready", 10000)) {
    throw std::runtime_error("pattern server in " + host + " did not start: " + log(key));
  }
}

bool AgentLab::server_alive(const std::string& host) const { return stack_->alive("srv-" + host); }

std::string AgentLab::log(const std::string& name) const { return stack_->log(name); }

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

PatternClient::PatternClient(const GatewayFixture& lab, std::uint16_t port, std::uint64_t up_limit,
                             bool v6)
    : up_limit_(up_limit) {
  auto ep = Endpoint::parse_address(v6 ? GatewayFixture::kVip6 : GatewayFixture::kVip4, port);
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

int PatternClient::wait_window_full(int stable_ms, int timeout_ms) const {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int last = -1;
  auto since = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() < end) {
    const int q = inq(fd_.get());
    const auto now = std::chrono::steady_clock::now();
    if (q != last) {
      last = q;
      since = now;
    } else if (q > 0 && now - since >= std::chrono::milliseconds(stable_ms)) {
      return q;
    }
    ::poll(nullptr, 0, 5);
  }
  return -1;
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
  CHECK(peer_resets(al.lab.peer) == rst_before);
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

AgentLabOptions userstack_options() {
  AgentLabOptions o;
  o.userstack_hosts = {"a", "b"};
  return o;
}

bool wait_tracked(const AgentLab& al, const std::string& agent, const std::string& flow,
                  int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    std::string out;
    if (al.rendrctl(agent, {"flows", "--json"}, out) == 0 && out.find(flow) != std::string::npos) {
      return true;
    }
    if (std::chrono::steady_clock::now() > end) {
      return false;
    }
    ::usleep(100000);
  }
}

bool wait_log(const AgentLab& al, const std::string& name, const std::string& text,
              int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (al.log(name).find(text) == std::string::npos) {
    if (std::chrono::steady_clock::now() > end) {
      return false;
    }
    ::usleep(10000);
  }
  return true;
}

int migrate_killing_a(AgentLab& al, const std::string& flow, std::string& out) {
  std::thread killer([&al] {
    ::usleep(1000000);
    al.kill_agent("a");
  });
  std::string err;
  const int rc = al.rendrctl("a", {"migrate", "--flow", flow, "--to", "b", "--json"}, out, &err);
  killer.join();
  out += err;
  return rc;
}

}  // namespace rendr::test
