// SPDX-License-Identifier: Apache-2.0
#include "bench/migrate_downtime.hpp"

#include "bench/migrate_load.hpp"
#include "bench/stats.hpp"

#include <rendr/common/json.hpp>

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace rendr::bench {

namespace {

// Echo client: 16-byte messages (seq, send time) every |period_us|; RTT per message.
struct EchoClient {
  UniqueFd fd;
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<std::pair<double, double>> samples;  // (send ms since t0, rtt ms)
  std::uint64_t lost = 0;
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  std::string error;
  Clock::time_point t0 = Clock::now();
  std::thread th;

  void run(int period_us) {
    std::vector<std::uint8_t> in;
    auto next = Clock::now();
    std::map<std::uint64_t, Clock::time_point> pending;
    std::uint64_t expect = 0;
    // take parses replies: each must be the next one sent (else the gap counts as lost);
    // |sample| records its round trip (not for the replies drained at the end).
    const auto take = [&](const std::uint8_t* buf, std::size_t n, bool sample) {
      in.insert(in.end(), buf, buf + n);
      const auto t = Clock::now();
      std::size_t off = 0;
      for (; in.size() - off >= 16; off += 16) {
        std::uint64_t seq = 0;
        std::memcpy(&seq, in.data() + off, 8);
        if (seq != expect) {
          std::lock_guard<std::mutex> g(mu);
          lost += seq > expect ? (seq - expect) * 16 : 16;
          error = "echo out of order: got " + std::to_string(seq) + " expected " +
                  std::to_string(expect);
        }
        expect = seq + 1;
        auto it = pending.find(seq);
        if (it != pending.end()) {
          if (sample) {
            std::lock_guard<std::mutex> g(mu);
            samples.emplace_back(ms_between(t0, it->second), ms_between(it->second, t));
          }
          pending.erase(it);
        }
        std::lock_guard<std::mutex> g(mu);
        ++received;
      }
      in.erase(in.begin(), in.begin() + static_cast<std::ptrdiff_t>(off));
    };
    while (!stop.load()) {
      auto now = Clock::now();
      if (now >= next) {
        std::uint64_t msg[2] = {sent, 0};
        if (::send(fd.get(), msg, sizeof msg, MSG_NOSIGNAL | MSG_DONTWAIT) == sizeof msg) {
          pending[sent] = now;
          ++sent;
        }
        next += std::chrono::microseconds(period_us);
      }
      pollfd p{fd.get(), POLLIN, 0};
      int wait = static_cast<int>(std::max<long long>(
          0, std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()).count()));
      if (::poll(&p, 1, wait) > 0) {
        std::uint8_t buf[4096];
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN)) {
          std::lock_guard<std::mutex> g(mu);
          error = n == 0 ? "EOF" : std::strerror(errno);
          return;
        }
        if (n > 0) {
          take(buf, static_cast<std::size_t>(n), true);
        }
      }
    }
    // Replies to the last messages may still be in flight: closing with them unread would make
    // this socket send a RST (TCPAbortOnClose), which rst_seen counts. Half-close, and read to
    // the server's EOF (bounded): they are counted (a reply still on its way is not lost), not
    // sampled.
    ::shutdown(fd.get(), SHUT_WR);
    const auto drain_until = Clock::now() + std::chrono::seconds(2);
    while (Clock::now() < drain_until) {
      pollfd p{fd.get(), POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) {
        continue;
      }
      std::uint8_t buf[4096];
      const ssize_t n = ::recv(fd.get(), buf, sizeof buf, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN)) {
        break;  // EOF (the server closed after our FIN) or an error: nothing more to read
      }
      if (n > 0) {
        take(buf, static_cast<std::size_t>(n), false);
      }
    }
  }
};

}  // namespace

Result<DowntimeResult> measure_downtime(const lab::GatewayLab& lab, const lab::AgentStack& stack,
                                        std::uint16_t port, int migrations) {
  DowntimeResult res;
  {
    EchoClient ec;
    auto fd = connect_vip(lab, port);
    if (!fd) {
      return std::move(fd).take_error().with_context("downtime: echo client");
    }
    ec.fd = std::move(*fd);
    const std::string tuple = server_tuple(ec.fd.get());
    ec.th = std::thread([&ec] { ec.run(1000); });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    {
      std::lock_guard<std::mutex> g(ec.mu);
      std::vector<double> r;
      for (auto& s : ec.samples) {
        r.push_back(s.second);
      }
      res.baseline_p99_ms = percentile(r, 99);
    }
    std::string on = "a";
    std::vector<std::pair<double, double>> windows;
    for (std::uint64_t i = 0; i < static_cast<std::uint64_t>(migrations); ++i) {
      const std::string from_host = on;
      std::string to = on == "a" ? "b" : "a";
      double w0 = ms_between(ec.t0, Clock::now());
      auto rep = stack.migrate(on, {tuple}, to);
      double w1 = ms_between(ec.t0, Clock::now());
      if (!rep || json_scalar(*rep, "result") != "committed") {
        res.failures += "downtime migration " + std::to_string(i) + ": " +
                        (rep ? json_scalar(*rep, "error") : rep.error().message()) + "; ";
      } else {
        on = to;
        res.frozen_ms.push_back(std::atof(json_scalar(*rep, "frozen_ms").c_str()));
      }
      if (rep) {
        auto steps = rep->find("\"steps_ms\":");
        auto steps_end = steps == std::string::npos ? steps : rep->find('}', steps);
        std::fprintf(stderr, "migration %llu: %s, total %s ms, frozen %s ms, replayed %s (unrecorded %s) %s\n",
                     static_cast<unsigned long long>(i), json_scalar(*rep, "result").c_str(),
                     json_scalar(*rep, "total_ms").c_str(), json_scalar(*rep, "frozen_ms").c_str(),
                     json_scalar(*rep, "replayed_packets").c_str(), json_scalar(*rep, "replay_unrecorded").c_str(),
                     steps == std::string::npos
                         ? ""
                         : rep->substr(steps, steps_end + 1 - steps).c_str());
      }
      windows.emplace_back(w0, w1);
      res.from.push_back(from_host);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ec.stop = true;
    ec.th.join();
    std::lock_guard<std::mutex> g(ec.mu);
    if (!ec.error.empty()) {
      res.failures += "echo: " + ec.error + "; ";
    }
    for (auto& [w0, w1] : windows) {
      double worst = 0;
      for (auto& [t, rtt] : ec.samples) {
        if (t >= w0 - 5 && t <= w1 + 50) {
          worst = std::max(worst, rtt);
        }
      }
      res.downtime_ms.push_back(worst);
    }
    // Every reply was read to the server's EOF (or for 2 s): what never came back is lost. A
    // gap in the sequence is part of that count; a repeated reply is not, so take the larger.
    const std::uint64_t missing = ec.sent > ec.received ? (ec.sent - ec.received) * 16 : 0;
    res.bytes_lost += std::max(ec.lost, missing);
  }
  return res;
}

}  // namespace rendr::bench
