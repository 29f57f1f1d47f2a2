// SPDX-License-Identifier: Apache-2.0
// Batches under ordinary churn: connections that end before or while their batch exports are
// dropped from it and reported, the rest of the batch commits, and the agent forgets flows
// whose socket is gone, so they never poison a later batch. A selection larger than the
// agent's descriptor limit allows moves in several batches.
#include "agent_lab.hpp"

#include "support/netns.hpp"

#include <rendr/common/json.hpp>

#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

using namespace rendr;
using namespace rendr::test;

namespace {

// served_here: whether the agent's `flows --json` lists |tuple| as tracked (serving or
// migrating; flows in freeze grace have left).
bool tracked(const std::string& flows_json, const std::string& tuple) {
  auto p = flows_json.find("\"tuple\":\"" + tuple + "\"");
  if (p == std::string::npos) {
    return false;
  }
  auto end = flows_json.find('}', p);
  auto st = flows_json.substr(p, end - p);
  return st.find("\"serving\"") != std::string::npos ||
         st.find("\"migrating\"") != std::string::npos;
}

std::size_t count_tracked(const std::string& flows_json) {
  std::size_t n = 0;
  for (const char* s : {"\"state\":\"serving\"", "\"state\":\"migrating\""}) {
    for (auto p = flows_json.find(s); p != std::string::npos; p = flows_json.find(s, p + 1)) {
      ++n;
    }
  }
  return n;
}

std::string flows_of(const AgentLab& al, const std::string& agent) {
  std::string out;
  if (al.rendrctl(agent, {"flows", "--json"}, out) != 0) {
    throw std::runtime_error("rendrctl flows failed on " + agent);
  }
  return out;
}

// ChurnClients: |n| threads in the peer, each opening short connections to the VIP in a loop:
// read 16 KiB of the server's pattern (checked), hold the connection 0-200 ms (the server fills
// the window meanwhile), half-close, read to EOF (checked), close, pause 0-50 ms. The
// half-close first lets the server close with nothing unread, so a clean run sends no RST.
class ChurnClients {
 public:
  ChurnClients(const GatewayFixture& lab, int n) {
    for (int i = 0; i < n; ++i) {
      ts_.emplace_back([this, &lab, i] { run(lab, static_cast<unsigned>(i) + 1); });
    }
  }
  ~ChurnClients() { stop(); }
  void stop() {
    stop_.store(true);
    for (auto& t : ts_) {
      if (t.joinable()) {
        t.join();
      }
    }
  }
  [[nodiscard]] std::uint64_t done() const { return done_.load(); }
  [[nodiscard]] std::uint64_t errors() const { return errors_.load(); }
  [[nodiscard]] std::string first_error() const {
    std::lock_guard<std::mutex> g(mu_);
    return first_error_;
  }

 private:
  void error(const std::string& e) {
    ++errors_;
    std::lock_guard<std::mutex> g(mu_);
    if (first_error_.empty()) {
      first_error_ = e;
    }
  }
  void run(const GatewayFixture& lab, unsigned seed) {
    std::minstd_rand rng(seed);
    NetnsScope scope(lab.peer);
    auto ep = Endpoint::parse_address(GatewayFixture::kVip4, 8000);
    sockaddr_storage ss{};
    const socklen_t len = ep->to_sockaddr(ss);
    const Pattern down(1);
    std::vector<std::byte> buf(64 * 1024);
    while (!stop_.load()) {
      UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      int rcvbuf = 16 * 1024;  // a small window keeps what the server queues (and we drain) small
      ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
      timeval tv{10, 0};
      ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        error(std::string("connect: ") + std::strerror(errno));
      } else {
        std::uint64_t got = 0;
        bool shut = false;
        for (;;) {
          ssize_t n = ::recv(fd.get(), buf.data(), buf.size(), 0);
          if (n > 0) {
            if (down.mismatch(got, std::span(buf.data(), static_cast<std::size_t>(n))) >= 0) {
              error("short connection: pattern mismatch after " + std::to_string(got));
              break;
            }
            got += static_cast<std::uint64_t>(n);
            if (!shut && got >= 16 * 1024) {
              ::usleep(static_cast<useconds_t>(rng() % 200000));
              ::shutdown(fd.get(), SHUT_WR);
              shut = true;
            }
            continue;
          }
          if (n == 0 && shut) {
            ++done_;
          } else if (n == 0) {
            error("short connection: EOF after " + std::to_string(got) + " bytes");
          } else {
            error("short connection: recv after " + std::to_string(got) +
                  " bytes: " + std::strerror(errno));
          }
          break;
        }
      }
      ::usleep(static_cast<useconds_t>(rng() % 50000));
    }
  }

  std::vector<std::thread> ts_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> done_{0};
  std::atomic<std::uint64_t> errors_{0};
  mutable std::mutex mu_;
  std::string first_error_;
};

}  // namespace

TEST_CASE("a connection that ends while its batch exports leaves the batch, the rest commits",
          "[.agents][agents][netns]") {
  // The server closes every connection whose client sent nothing when the batch asks for it:
  // with an untrack (a well-behaved server), or without one (the agent finds the socket gone).
  for (bool untrack : {true, false}) {
    DYNAMIC_SECTION((untrack ? "the server untracks it" : "the server closes it silently")) {
      AgentLabOptions o;
      o.server_args = {"--end-quiet-on-export", "1"};
      if (!untrack) {
        o.server_args.insert(o.server_args.end(), {"--no-untrack", "1"});
      }
      AgentLab al(o);
      std::vector<std::unique_ptr<PatternClient>> live;
      std::vector<std::unique_ptr<PatternClient>> quiet;
      for (int i = 0; i < 3; ++i) {
        live.push_back(std::make_unique<PatternClient>(al.lab, 8000, 1 << 20));
        quiet.push_back(std::make_unique<PatternClient>(al.lab, 8000, 0));
      }
      for (auto& c : live) {
        REQUIRE(c->wait_down(256 << 10, 10000));
      }
      for (auto& c : quiet) {
        REQUIRE(c->wait_down(64 << 10, 10000));
      }
      const long long rst0 = peer_resets(al.lab.peer);
      int st = -1;
      std::string rep = al.migrate("a", {"--all"}, "b", &st);
      INFO(rep << "\nagent a log:\n" << al.log("a"));
      CHECK(st == 0);
      CHECK(json_scalar(rep, "result") == "committed");
      CHECK(json_scalar(rep, "flows") == "3");
      CHECK(json_scalar(rep, "ended") == "3");
      std::string fa = flows_of(al, "a");
      std::string fb = flows_of(al, "b");
      for (auto& c : quiet) {
        const std::string t = c->tuple().to_string();
        CHECK(rep.find(t) != std::string::npos);  // listed in ended_flows
        CHECK_FALSE(tracked(fa, t));
        CHECK_FALSE(tracked(fb, t));
      }
      for (auto& c : live) {
        CHECK(tracked(fb, c->tuple().to_string()));
        INFO(c->error());
        CHECK(c->wait_down(512 << 10, 20000));
      }
      // Nothing stale is left behind to poison the next batches.
      const char* hops[][2] = {{"b", "a"}, {"a", "b"}};
      for (const auto& hop : hops) {
        rep = al.migrate(hop[0], {"--all"}, hop[1], &st);
        INFO(rep);
        CHECK(st == 0);
        CHECK(json_scalar(rep, "result") == "committed");
        CHECK(json_scalar(rep, "flows") == "3");
        CHECK(json_scalar(rep, "ended") == "0");
      }
      for (auto& c : live) {
        INFO(c->error());
        CHECK(c->wait_down(512 << 10, 20000));
        CHECK_FALSE(c->failed());
      }
      CHECK(peer_resets(al.lab.peer) == rst0);
    }
  }
}

TEST_CASE("flows a server closed without untracking vanish and do not poison later batches",
          "[.agents][agents][netns]") {
  AgentLabOptions o;
  o.server_args = {"--no-untrack", "1"};
  AgentLab al(o);
  std::vector<std::unique_ptr<PatternClient>> live;
  std::vector<std::unique_ptr<PatternClient>> gone;
  for (int i = 0; i < 2; ++i) {
    live.push_back(std::make_unique<PatternClient>(al.lab, 8000, 1 << 20));
    gone.push_back(std::make_unique<PatternClient>(al.lab, 8000, 0));
  }
  for (auto& c : live) {
    REQUIRE(c->wait_down(256 << 10, 10000));
  }
  std::vector<std::string> gone_tuples;
  for (auto& c : gone) {
    REQUIRE(c->wait_down(64 << 10, 10000));
    gone_tuples.push_back(c->tuple().to_string());
  }
  REQUIRE(tracked(flows_of(al, "a"), gone_tuples[0]));
  gone.clear();  // the clients close; the server closes its ends without telling the agent
  bool vanished = false;
  for (int i = 0; i < 100 && !vanished; ++i) {
    std::string fa = flows_of(al, "a");
    vanished = !tracked(fa, gone_tuples[0]) && !tracked(fa, gone_tuples[1]);
    if (!vanished) {
      ::usleep(50000);
    }
  }
  INFO(flows_of(al, "a") << "\nagent a log:\n" << al.log("a"));
  CHECK(vanished);
  int st = -1;
  std::string rep = al.migrate("a", {"--all"}, "b", &st);
  INFO(rep);
  CHECK(st == 0);
  CHECK(json_scalar(rep, "result") == "committed");
  CHECK(json_scalar(rep, "flows") == "2");
  for (auto& c : live) {
    INFO(c->error());
    CHECK(c->wait_down(512 << 10, 20000));
    CHECK_FALSE(c->failed());
  }
}

TEST_CASE("every --all batch commits under 50 clients of short connections",
          "[.agents][agents][netns]") {
  AgentLab al;
  // Ports for ~10 000 short connections in TIME_WAIT on the client side.
  al.lab.peer.must("sysctl -qw net.ipv4.ip_local_port_range='10000 65000'");
  std::vector<std::unique_ptr<PatternClient>> live;
  for (int i = 0; i < 5; ++i) {
    live.push_back(std::make_unique<PatternClient>(al.lab, 8000, 1 << 20));
  }
  for (auto& c : live) {
    REQUIRE(c->wait_down(256 << 10, 10000));
  }
  const long long rst0 = peer_resets(al.lab.peer);
  ChurnClients churn(al.lab, 50);
  ::usleep(500000);
  std::uint64_t moved = 0;
  std::uint64_t ended = 0;
  for (int round = 0; round < 5; ++round) {
    for (const char* from : {"a", "b"}) {
      const std::string to = std::string(from) == "a" ? "b" : "a";
      int st = -1;
      std::string rep = al.migrate(from, {"--all"}, to, &st);
      INFO("round " << round << " " << from << " -> " << to << ": " << rep);
      std::fprintf(stderr, "churn: %s -> %s result %s flows %s ended %s frozen_ms %s total_ms %s\n",
                   from, to.c_str(), json_scalar(rep, "result").c_str(),
                   json_scalar(rep, "flows").c_str(), json_scalar(rep, "ended").c_str(),
                   json_scalar(rep, "frozen_ms").c_str(), json_scalar(rep, "total_ms").c_str());
      CHECK(st == 0);
      CHECK(json_scalar(rep, "result") == "committed");
      moved += std::stoull("0" + json_scalar(rep, "flows"));
      ended += std::stoull("0" + json_scalar(rep, "ended"));
      // The long-lived connections moved with the batch and keep streaming.
      std::string ft = flows_of(al, to);
      for (auto& c : live) {
        INFO(c->error());
        CHECK(tracked(ft, c->tuple().to_string()));
        CHECK(c->wait_down(128 << 10, 20000));
      }
    }
  }
  churn.stop();
  std::fprintf(stderr, "churn: %llu short connections, %llu errors; %llu flows moved, %llu ended\n",
               static_cast<unsigned long long>(churn.done()),
               static_cast<unsigned long long>(churn.errors()),
               static_cast<unsigned long long>(moved), static_cast<unsigned long long>(ended));
  INFO("first short-connection error: " << churn.first_error());
  CHECK(churn.errors() == 0);
  CHECK(churn.done() > 100);
  for (auto& c : live) {
    INFO(c->error());
    CHECK(c->wait_down(512 << 10, 20000));
    CHECK_FALSE(c->failed());
  }
  CHECK(peer_resets(al.lab.peer) == rst0);
  // Afterwards the agents track exactly the long-lived connections (the servers close the last
  // short ones a moment after their clients).
  std::size_t n = 0;
  for (int i = 0; i < 100; ++i) {
    n = count_tracked(flows_of(al, "a")) + count_tracked(flows_of(al, "b"));
    if (n == live.size()) {
      break;
    }
    ::usleep(50000);
  }
  INFO(flows_of(al, "a") << "\n" << flows_of(al, "b"));
  CHECK(n == live.size());
  CHECK(al.server_alive("a"));
  CHECK(al.server_alive("b"));
}

TEST_CASE("an export that comes after its batch gave up is handed back to the server",
          "[.agents][agents][netns]") {
  AgentLabOptions o;
  // Past the agents' step timeout (3000 ms, scaled for slow builds).
  o.server_args = {"--export-delay-ms", std::to_string(scaled_ms(o.step_timeout_ms) + 500)};
  AgentLab al(o);
  PatternClient c(al.lab, 8000, 1 << 20);
  REQUIRE(c.wait_down(256 << 10, 10000));
  const long long rst0 = peer_resets(al.lab.peer);
  int st = -1;
  std::string rep = al.migrate("a", {"--flow", c.tuple().to_string()}, "b", &st);
  INFO(rep << "\nagent a log:\n" << al.log("a"));
  CHECK(st == 1);
  CHECK(json_scalar(rep, "failed_in") == "exporting");
  CHECK(json_scalar(rep, "error").find("did not export") != std::string::npos);
  // The late export reaches the agent after the abort; the server gets the connection back.
  INFO(c.error());
  CHECK(c.wait_down(1 << 20, 20000));
  CHECK_FALSE(c.failed());
  CHECK(tracked(flows_of(al, "a"), c.tuple().to_string()));
  CHECK(peer_resets(al.lab.peer) == rst0);
}

TEST_CASE("a selection larger than the agent's descriptor limit moves in several batches",
          "[.agents][agents][netns]") {
  // Each batch carries ~60 MB of full queues: on 2 busy cores its checkpoint and offer took
  // over the lab's 3 s step timeout. This test is about the split, not about speed.
  AgentLabOptions o;
  o.step_timeout_ms = 15000;
  AgentLab al(o);
  // Two descriptors per flow on the source: 300 flows need ~600, the agent gets 256.
  const rlimit rl{256, 256};
  REQUIRE(::prlimit(al.pid("a"), RLIMIT_NOFILE, &rl, nullptr) == 0);
  std::vector<std::unique_ptr<PatternClient>> cs;
  for (int i = 0; i < 300; ++i) {
    cs.push_back(std::make_unique<PatternClient>(al.lab, 8000, 0));
    cs.back()->set_reading(false);  // idle: the windows fill, nothing streams meanwhile
  }
  std::size_t n = 0;
  for (int i = 0; i < 200 && n < cs.size(); ++i) {
    n = count_tracked(flows_of(al, "a"));
    if (n < cs.size()) {
      ::usleep(50000);
    }
  }
  REQUIRE(n == cs.size());
  const long long rst0 = peer_resets(al.lab.peer);
  int st = -1;
  std::string err;
  std::string rep = al.migrate("a", {"--all"}, "b", &st);
  INFO(rep.substr(0, 2000) << "\nagent a log:\n" << al.log("a").substr(0, 4000));
  std::fprintf(stderr, "fd limit: result %s flows %s batches %s/%s (max %s each) total_ms %s\n",
               json_scalar(rep, "result").c_str(), json_scalar(rep, "flows").c_str(),
               json_scalar(rep, "batches_committed").c_str(),
               json_scalar(rep, "batches_run").c_str(),
               json_scalar(rep, "batch_max_flows").c_str(), json_scalar(rep, "total_ms").c_str());
  CHECK(st == 0);
  CHECK(json_scalar(rep, "result") == "committed");
  CHECK(json_scalar(rep, "flows") == "300");
  CHECK(json_scalar(rep, "fd_limit") == "256");
  CHECK(std::stoi("0" + json_scalar(rep, "batches_run")) >= 3);
  CHECK(json_scalar(rep, "batches_committed") == json_scalar(rep, "batches_run"));
  CHECK(json_scalar(rep, "not_moved") == "0");
  CHECK(al.log("a").find("Too many open files") == std::string::npos);
  CHECK(count_tracked(flows_of(al, "b")) == cs.size());
  for (auto& c : cs) {
    c->set_reading(true);
  }
  for (auto& c : cs) {
    INFO(c->error());
    CHECK(c->wait_down(256 << 10, 20000));
    CHECK_FALSE(c->failed());
  }
  CHECK(peer_resets(al.lab.peer) == rst0);
}
