// SPDX-License-Identifier: Apache-2.0
// rendr-bench hostile-listener: the engine echo listener `rendr-bench hostile` floods. It is
// written the way a server that expects floods should be: accept() on one thread, every flow
// echoed by an Asio coroutine on ONE application thread (Conn's Asio face), closes on one more.
// A thread per flow would leave glibc's per-thread malloc arenas holding their memory after a
// flood (measured: 9.4 -> 12.4 MB RSS 10 s after 10 000 HELLOs with a thread per flow, against
// +1.2 MB with one arena): that is the application's memory, not the engine's, and the bench
// reads the listener's RSS. `--threads` brings the thread-per-flow server back for comparison.
#include "bench/hostile_listener.hpp"
#include "bench/subcommand.hpp"

#include <rendr/engine/conn.hpp>
#include <rendr/engine/listener.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <malloc.h>

#include <array>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <string_view>
#include <thread>

namespace rendr::bench {

const std::vector<std::uint8_t>& bench_key() {
  static const std::vector<std::uint8_t> k = [] {
    std::vector<std::uint8_t> v(32);
    for (std::size_t i = 0; i < v.size(); ++i) {
      v[i] = static_cast<std::uint8_t>(0xa5 ^ (i * 29));
    }
    return v;
  }();
  return k;
}

namespace {

// Closer: Conn::close() waits for the peer's BYE acknowledgement (up to 2 s), so it runs off the
// echo thread, one flow after another.
class Closer {
 public:
  Closer() : t_([this] { run(); }) {}
  ~Closer() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    t_.join();
  }
  void push(ConnPtr c) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      q_.push_back(std::move(c));
    }
    cv_.notify_one();
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lk(mu_);
    for (;;) {
      cv_.wait(lk, [this] { return stop_ || !q_.empty(); });
      if (q_.empty()) {
        return;
      }
      ConnPtr c = std::move(q_.front());
      q_.pop_front();
      lk.unlock();
      (void)c->close();
      c.reset();
      lk.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ConnPtr> q_;
  bool stop_ = false;
  std::thread t_;
};

asio::awaitable<void> echo(ConnPtr c, Closer& closer) {
  std::array<std::byte, 4096> buf{};
  for (;;) {
    std::error_code ec;
    const std::size_t n =
        co_await c->async_read_some(asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
    if (ec || n == 0) {
      break;
    }
    co_await asio::async_write(*c, asio::buffer(buf.data(), n),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      break;
    }
  }
  closer.push(std::move(c));
}

void echo_thread_per_flow(ConnPtr conn) {
  std::thread([c = std::move(conn)] {
    std::vector<std::byte> buf(16384);
    for (;;) {
      auto n = c->read_some(buf);
      if (!n || *n == 0 || !c->write(std::span<const std::byte>(buf.data(), *n))) {
        break;
      }
    }
    (void)c->close();
  }).detach();
}

}  // namespace

int run_hostile_listener(std::span<char* const> args) {
  rendr::ListenOptions lo;
  bool usage = args.empty();
  bool per_flow_threads = false;
  for (std::size_t i = 1; i < args.size() && !usage; ++i) {
    const std::string_view a = args[i];
    if (a == "--key") {
      lo.listener_key = bench_key();
    } else if (a == "--threads") {
      per_flow_threads = true;
    } else if (a == "--arena-max" && i + 1 < args.size()) {
      // glibc: up to 8 arenas per core, each keeps its top resident after its threads are gone.
      (void)::mallopt(M_ARENA_MAX, std::atoi(args[++i]));
    } else {
      usage = true;
    }
  }
  if (usage) {
    std::fprintf(stderr,
                 "usage: rendr-bench hostile-listener IP:PORT [--key] [--threads] "
                 "[--arena-max N]\n");
    return kExitUsage;
  }
  auto l = listen_tcp(args[0], lo);
  if (!l) {
    std::fprintf(stderr, "hostile-listener: %s\n", l.error().message().c_str());
    return kExitFailed;
  }
  std::printf("ready %s\n", (*l)->local_address().c_str());
  std::fflush(stdout);
  // Its counters once a second, for the bench to read from the log.
  std::thread([lp = l->get()] {
    for (;;) {
      const auto s = lp->listener_stats();
      std::printf("stats flows=%zu key_refused=%llu\n", s.flows,
                  static_cast<unsigned long long>(s.key_missing + s.key_bad + s.key_stale +
                                                  s.key_replayed));
      std::fflush(stdout);
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  }).detach();
  asio::io_context app;
  auto work = asio::make_work_guard(app);
  std::thread app_thread([&app] { app.run(); });
  Closer closer;
  int rc = kExitOk;
  for (;;) {
    auto c = (*l)->accept();
    if (!c) {
      std::fprintf(stderr, "hostile-listener: accept: %s\n", c.error().message().c_str());
      rc = kExitFailed;
      break;
    }
    if (per_flow_threads) {
      echo_thread_per_flow(std::move(*c));
    } else {
      asio::co_spawn(app, echo(std::move(*c), closer), asio::detached);
    }
  }
  work.reset();
  app.stop();
  app_thread.join();
  return rc;
}

}  // namespace rendr::bench
