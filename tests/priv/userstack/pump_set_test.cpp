// SPDX-License-Identifier: Apache-2.0
// Pumps without threads: one PumpSet, driven by one thread's poll loop (as the userstack
// keeper drives it), serves many bridged connections at once, a bulk one among them, with
// every byte intact; and a server that closes its end while its pump holds bytes for it ends
// that pump and the connection, instead of leaving both behind. A PumpHub (one pump thread for
// connections attached from many threads, as rendr-tun does) ends, aborts and waits per ticket.
#include "tun_lab.hpp"

#include "support/require_result.hpp"

#include <rendr/userstack/pump.hpp>
#include <rendr/userstack/pump_hub.hpp>
#include <rendr/userstack/stack.hpp>

#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

using namespace rendr;
using namespace rendr::test;
using namespace std::chrono_literals;

namespace {

// echo_server: a plain blocking echo loop on a server fd (an unmodified server).
void echo_server(UniqueFd fd) {
  std::vector<char> buf(128 * 1024);
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n <= 0) {
      break;
    }
    for (ssize_t off = 0; off < n;) {
      const ssize_t w = ::write(fd.get(), buf.data() + off, static_cast<std::size_t>(n - off));
      if (w <= 0) {
        return;
      }
      off += w;
    }
  }
  ::shutdown(fd.get(), SHUT_WR);
}

// blocking_client connects to |vip| (connect_tcp) and makes the socket blocking, its sends and
// receives bounded by 5 s.
Result<UniqueFd> blocking_client(const char* vip) {
  auto fd = connect_tcp(Endpoint::parse(vip).value());
  if (fd) {
    set_nonblocking(fd->get(), false);
    const timeval tv{5, 0};
    ::setsockopt(fd->get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    ::setsockopt(fd->get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  return fd;
}

// PumpLoop: the accept handler queues connections; one thread pumps them all in a PumpSet and
// starts an echo server thread per connection (or closes the server's end at once).
class PumpLoop {
 public:
  PumpLoop(userstack::Stack& st, bool echo) : echo_(echo) {
    st.set_accept_handler([this](userstack::ConnectionPtr c) {
      {
        std::lock_guard lk(mu_);
        accepted_.push_back(std::move(c));
      }
      const std::uint64_t one = 1;
      (void)!::write(wake_.get(), &one, sizeof one);
    });
    thread_ = std::thread([this] { run(); });
  }
  ~PumpLoop() {
    stop_ = true;
    const std::uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
    thread_.join();
    for (auto& t : servers_) {
      t.join();
    }
  }
  std::map<userstack::Pump::State, int> ended() {
    std::lock_guard lk(mu_);
    return ended_;
  }
  std::size_t max_running() const { return max_running_; }
  std::string error() {
    std::lock_guard lk(mu_);
    return error_;
  }

 private:
  void fail(const std::string& e) {  // Catch2's assertions are for the test's own thread
    std::lock_guard lk(mu_);
    error_ = e;
  }

  void run() {
    auto set = userstack::PumpSet::create();
    if (!set) {
      fail(set.error().message());
      return;
    }
    std::map<userstack::Pump*, std::unique_ptr<userstack::Pump>> pumps;
    auto end = [&](userstack::Pump& p) {
      set->remove(p);
      std::lock_guard lk(mu_);
      ++ended_[p.state()];
      pumps.erase(&p);
    };
    while (!stop_) {
      pollfd pf[2] = {{wake_.get(), POLLIN, 0}, {set->fd(), POLLIN, 0}};
      ::poll(pf, 2, 100);
      std::uint64_t v = 0;
      (void)!::read(wake_.get(), &v, sizeof v);
      std::vector<userstack::ConnectionPtr> batch;
      {
        std::lock_guard lk(mu_);
        batch.swap(accepted_);
      }
      for (auto& c : batch) {
        auto p = userstack::Pump::start(std::move(c));
        if (!p) {
          fail(p.error().message());
          continue;
        }
        UniqueFd fd = (*p)->take_fd();
        if (echo_) {
          servers_.emplace_back(echo_server, std::move(fd));
        }  // else: the server closes its end at once, before reading a byte
        userstack::Pump& pump = **p;
        pumps[&pump] = std::move(*p);
        if (auto st = set->add(pump); !st) {
          fail(st.error().message());
        }
        if (pump.state() != userstack::Pump::State::running) {
          end(pump);
        }
      }
      for (userstack::Pump* p : set->run()) {
        end(*p);
      }
      max_running_ = std::max(max_running_.load(), pumps.size());
    }
  }

  bool echo_;
  UniqueFd wake_{::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)};
  std::mutex mu_;
  std::vector<userstack::ConnectionPtr> accepted_;
  std::map<userstack::Pump::State, int> ended_;
  std::string error_;
  std::vector<std::thread> servers_;
  std::atomic<std::size_t> max_running_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace

TEST_CASE("userstack one PumpSet thread serves 16 bridged echoes at once, a bulk one among them",
          "[.netns][userstack][netns]") {
  StackLab lab;
  const long long resets0 = lab.resets();
  std::vector<std::future<EchoResult>> clients;
  {
    PumpLoop loop(lab.stack(), true);
    for (std::uint32_t i = 0; i < 16; ++i) {
      const std::uint64_t total = i == 0 ? (48ULL << 20) : (512ULL << 10);
      const std::string vip = (i % 2 == 0 ? "198.18.0." : "[fd99::") + std::to_string(20 + i) +
                              (i % 2 == 0 ? ":" : "]:") + std::to_string(9000 + i);
      clients.push_back(std::async(std::launch::async, [vip, total, i] {
        return echo_client(Endpoint::parse(vip).value(), total, 100 + i, 60s);
      }));
    }
    for (std::size_t i = 0; i < clients.size(); ++i) {
      EchoResult r = clients[i].get();
      INFO("client " << i << ": " << r.error);
      CHECK(r.error.empty());
      CHECK(r.first_bad == -1);
      CHECK(r.received == r.sent);
      CHECK(r.eof);
    }
    // Every pump ended by itself, both directions finished.
    for (int w = 0; w < 100 && loop.ended()[userstack::Pump::State::done] < 16; ++w) {
      std::this_thread::sleep_for(20ms);
    }
    auto ended = loop.ended();
    CHECK(ended[userstack::Pump::State::done] == 16);
    CHECK(ended[userstack::Pump::State::reset] == 0);
    CHECK(ended[userstack::Pump::State::server_gone] == 0);
    CHECK(loop.max_running() >= 2);  // they really were pumped side by side
    CHECK(loop.error().empty());
  }
  CHECK(lab.resets() == resets0);
}

TEST_CASE("userstack a server closing its end with bytes pending ends the pump and the connection",
          "[.netns][userstack][netns]") {
  StackLab lab;
  PumpLoop loop(lab.stack(), false);
  auto fd = blocking_client("198.18.0.40:9100");
  REQUIRE_OK(fd);
  // The client keeps sending; the server never reads. The connection must end (a reset or an
  // EOF) instead of taking bytes nobody will read until the client gives up.
  std::vector<char> chunk(64 * 1024, 'x');
  bool ended = false;
  const auto t0 = std::chrono::steady_clock::now();
  while (!ended && std::chrono::steady_clock::now() - t0 < 10s) {
    const ssize_t n = ::send(fd->get(), chunk.data(), chunk.size(), MSG_NOSIGNAL);
    if (n < 0) {
      ended = errno == ECONNRESET || errno == EPIPE;
      REQUIRE((ended || errno == EAGAIN || errno == EINTR));
    }
  }
  CHECK(ended);
  // The reset leaves from inside the pump's step; its end is counted once the step returns.
  auto e = loop.ended();
  for (int i = 0; i < 500 && e.empty(); ++i) {
    std::this_thread::sleep_for(10ms);
    e = loop.ended();
  }
  CHECK(e[userstack::Pump::State::server_gone] == 1);
  CHECK(e[userstack::Pump::State::done] == 0);
  CHECK(loop.error().empty());
}

TEST_CASE("userstack PumpHub pumps connections attached from other threads, and abort resets one",
          "[.netns][userstack][netns]") {
  StackLab lab;
  userstack::Stack& st = lab.stack();
  auto hub = userstack::PumpHub::start();
  REQUIRE_OK(hub);
  // An echo through the hub: the pump ends by itself once both directions finished.
  auto client = std::async(std::launch::async, [] {
    return echo_client(Endpoint::parse("198.18.0.50:9200").value(), 4U << 20, 7, 30s);
  });
  auto acc = st.accept(5s);
  REQUIRE_OK(acc);
  UniqueFd server_fd;
  auto t = (*hub)->attach(std::move(acc).value(), server_fd);
  REQUIRE_OK(t);
  std::thread server(echo_server, std::move(server_fd));
  EchoResult r = client.get();
  server.join();
  CHECK(r.error.empty());
  CHECK(r.first_bad == -1);
  CHECK(r.eof);
  (*hub)->wait(**t);
  CHECK((*t)->state == userstack::Pump::State::done);
  CHECK((*t)->stats.to_server == (4U << 20));
  CHECK((*hub)->size() == 0);

  // abort: the app's connection is reset, not closed with a FIN.
  const long long resets0 = lab.resets();
  auto fd = blocking_client("198.18.0.51:9201");
  REQUIRE_OK(fd);
  auto acc2 = st.accept(5s);
  REQUIRE_OK(acc2);
  UniqueFd server2;
  auto t2 = (*hub)->attach(std::move(acc2).value(), server2);
  REQUIRE_OK(t2);
  CHECK((*hub)->size() == 1);
  (*hub)->abort(**t2);
  (*hub)->wait(**t2);  // returns at once: aborted
  CHECK((*t2)->state == userstack::Pump::State::reset);
  char c = 0;
  const ssize_t n = ::recv(fd->get(), &c, 1, 0);
  CHECK(n < 0);
  CHECK(errno == ECONNRESET);
  CHECK(lab.resets() > resets0);
  CHECK((*hub)->size() == 0);
}
