// SPDX-License-Identifier: Apache-2.0
#include "bench/migrate_load.hpp"

#include "bench/stats.hpp"

#include <rendr/common/endpoint.hpp>
#include <rendr/common/json.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace rendr::bench {

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

std::uint8_t file_byte(std::uint64_t i) { return static_cast<std::uint8_t>((i >> 12) ^ (i * 131)); }

Status write_bench_file(const std::string& path, std::uint64_t size) {
  UniqueFd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!f.valid()) {
    return errno_error("create " + path);
  }
  std::vector<std::uint8_t> b(1 << 20);
  for (std::uint64_t off = 0; off < size; off += b.size()) {
    for (std::size_t i = 0; i < b.size(); ++i) {
      b[i] = file_byte(off + i);
    }
    if (::write(f.get(), b.data(), b.size()) != static_cast<ssize_t>(b.size())) {
      return errno_error("write " + path);
    }
  }
  return {};
}

void start_fileservers(lab::AgentStack& stack, const std::string& root) {
  for (const char* h : {"a", "b"}) {
    const std::string lg = std::string("fs-") + h;
    (void)stack.spawn(h, {RENDR_FILESERVER_BIN, "--agent", stack.sock(h), "--service", "http",
                          "--root", root, "--listen", "10.99.0.1:8080"},
                      lg);
    (void)stack.wait_log(lg, "ready", 10000);
  }
}

Result<UniqueFd> connect_vip(const lab::GatewayLab& lab, std::uint16_t port) {
  auto ns = lab.netns_fd("peer");
  if (!ns) {
    return std::move(ns).take_error();
  }
  auto in = lab::NetnsEnter::enter(ns->get());
  if (!in) {
    return std::move(in).take_error();
  }
  auto ep = *Endpoint::parse_address(lab::GatewayLab::kVip4, port);
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage ss{};
  socklen_t sl = ep.to_sockaddr(ss);
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&ss), sl) != 0) {
    return errno_error("connect " + ep.to_string());
  }
  int one = 1;
  ::setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return s;
}

std::string server_tuple(int fd) {
  auto t = FourTuple::of_socket(fd);
  return t ? FourTuple{t->remote, t->local}.to_string() : std::string();
}

namespace {

// Body reads a fileserver response: it skips the header and checks every body byte.
struct Body {
  std::string head;
  bool in_body = false;
  std::uint64_t got = 0;
  std::uint64_t bad = 0;
  // feed takes one recv's bytes; returns the body bytes among them.
  std::size_t feed(const std::uint8_t* p, std::size_t n) {
    std::size_t off = 0;
    if (!in_body) {
      const std::size_t before = head.size();
      head.append(reinterpret_cast<const char*>(p), n);
      const auto e = head.find("\r\n\r\n");
      if (e == std::string::npos) {
        return 0;
      }
      in_body = true;
      off = e + 4 - before;
    }
    for (std::size_t i = off; i < n; ++i) {
      bad += p[i] != file_byte(got + (i - off)) ? 1 : 0;
    }
    got += n - off;
    return n - off;
  }
};

}  // namespace

Result<UniqueFd> request_file(const lab::GatewayLab& lab, const std::string& file,
                              bool half_close) {
  auto fd = connect_vip(lab, 8080);
  if (!fd) {
    return fd;
  }
  const std::string req = "GET /" + file + " HTTP/1.1\r\nHost: vip\r\n\r\n";
  if (::send(fd->get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    return errno_error("send request");
  }
  if (half_close) {
    ::shutdown(fd->get(), SHUT_WR);  // the server's socket goes to CLOSE_WAIT
  }
  return fd;
}

Download read_body(int fd, std::uint64_t size, int idle_timeout_ms) {
  Download d;
  Body body;
  std::vector<std::uint8_t> buf(1 << 20);
  while (body.got < size) {
    pollfd p{fd, POLLIN, 0};
    const int pr = ::poll(&p, 1, idle_timeout_ms);
    if (pr <= 0) {
      d.error = "no data for " + std::to_string(idle_timeout_ms) + " ms";
      break;
    }
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n < 0) {
      d.error = std::string("recv: ") + std::strerror(errno);
      break;
    }
    if (n == 0) {
      d.error = "the server closed the connection early";
      break;
    }
    body.feed(buf.data(), static_cast<std::size_t>(n));
  }
  d.got = body.got;
  d.bad = body.bad;
  return d;
}

namespace {

struct Window {
  double t0_ms = 0;  // asked
  double t1_ms = 0;  // report received
  double frozen_ms = 0;
  std::string steps;  // the report's "steps_ms" object
};

struct Gap {
  double ms = 0;
  double from_ms = 0;  // the receive that starts it
};

// longest_gap: the longest interval between consecutive receive times |t| (ms) that overlaps
// [w0, w1]; the receive before w0 starts the first candidate interval.
Gap longest_gap(const std::vector<double>& t, double w0, double w1) {
  Gap worst;
  for (std::size_t i = 1; i < t.size(); ++i) {
    if (t[i] >= w0 && t[i - 1] <= w1 && t[i] - t[i - 1] > worst.ms) {
      worst = {t[i] - t[i - 1], t[i - 1]};
    }
  }
  return worst;
}

// A stall above the target (30 ms) is reported with its migration's steps.
constexpr double kReportStallMs = 30;

}  // namespace

StallResult measure_stalls(const lab::GatewayLab& lab, const lab::AgentStack& stack,
                           const StallOptions& o) {
  StallResult res;
  std::vector<std::uint8_t> buf(1 << 20);
  for (int d = 0; d <= o.max_downloads &&
                  static_cast<int>(res.stall_ms.size()) < o.migrations;
       ++d) {
    const bool baseline = d == 0;  // the first download runs without migrations
    auto fd = request_file(lab, o.file, o.half_close);
    if (!fd) {
      res.failures += "stall download: " + fd.error().message() + "; ";
      return res;
    }
    const std::string tuple = server_tuple(fd->get());
    std::string on = "a";  // the gateway steers new connections to host a
    const auto t0 = Clock::now();
    std::vector<double> recv_ms;
    recv_ms.reserve(1 << 16);
    std::vector<Window> windows;
    std::atomic<bool> done{false};
    std::atomic<std::uint64_t> got{0};
    std::vector<std::string> fails;
    std::uint64_t after_end = 0;
    std::thread mig([&] {
      if (baseline) {
        return;
      }
      while (!done) {
        const auto next = Clock::now() + o.interval;
        while (!done && Clock::now() < next) {
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        if (done || got.load() + (o.size >> 4) >= o.size) {
          break;  // too close to the end for a clean sample
        }
        const std::string to = on == "a" ? "b" : "a";
        Window w;
        w.t0_ms = ms_between(t0, Clock::now());
        auto rep = stack.migrate(on, {tuple}, to);
        w.t1_ms = ms_between(t0, Clock::now());
        const std::string result = rep ? json_scalar(*rep, "result") : "";
        if (result == "committed") {
          on = to;
          w.frozen_ms = std::atof(json_scalar(*rep, "frozen_ms").c_str());
          if (const auto st = rep->find("\"steps_ms\":"); st != std::string::npos) {
            w.steps = rep->substr(st, rep->find('}', st) + 1 - st);
          }
          windows.push_back(w);
        } else if (result == "empty") {
          ++after_end;  // the server had finished the flow
        } else {
          fails.push_back(rep ? json_scalar(*rep, "error") : rep.error().message());
        }
      }
    });
    Body body;
    while (body.got < o.size) {
      const ssize_t n = ::recv(fd->get(), buf.data(), buf.size(), 0);
      if (n <= 0) {
        break;
      }
      if (body.feed(buf.data(), static_cast<std::size_t>(n)) > 0) {
        recv_ms.push_back(ms_between(t0, Clock::now()));
      }
      got = body.got;
    }
    done = true;
    mig.join();
    res.bytes_bad += body.bad + (o.size - std::min(o.size, body.got));
    if (body.bad != 0 || body.got < o.size) {
      std::fprintf(stderr, "stall download %d: %llu of %llu body bytes, %llu wrong\n", d,
                   static_cast<unsigned long long>(body.got),
                   static_cast<unsigned long long>(o.size),
                   static_cast<unsigned long long>(body.bad));
    }
    for (const auto& f : fails) {
      // Asked while the last bytes were in flight: the server had written everything and
      // closed the flow, so nothing was left to move (as the bulk part judges it).
      if (body.got == o.size && (f.find("no tracked flow") != std::string::npos ||
                                 f.find("unknown connection") != std::string::npos)) {
        ++after_end;
        continue;
      }
      res.failures += "stall migration: " + f + "; ";
    }
    res.after_end += after_end;
    if (baseline) {
      res.baseline_gap_ms = longest_gap(recv_ms, 0, recv_ms.empty() ? 0 : recv_ms.back()).ms;
      continue;
    }
    for (const auto& w : windows) {
      const Gap g = longest_gap(recv_ms, w.t0_ms, w.t1_ms);
      if (g.ms > kReportStallMs) {
        std::fprintf(stderr,
                     "%s stall of %.1f ms: no data from %.1f ms on; migration %zu asked at "
                     "%.1f ms, answered at %.1f ms, frozen %.1f ms %s\n",
                     o.half_close ? "half-closed" : "bulk", g.ms, g.from_ms,
                     res.stall_ms.size(), w.t0_ms, w.t1_ms, w.frozen_ms, w.steps.c_str());
      }
      res.stall_ms.push_back(g.ms);
      res.frozen_ms.push_back(w.frozen_ms);
      ++res.committed;
    }
  }
  return res;
}

BusyBatchResult measure_busy_batch(const lab::GatewayLab& lab, const lab::AgentStack& stack,
                                   const std::string& file, std::uint64_t size, int flows) {
  BusyBatchResult res;
  std::vector<UniqueFd> fds;
  for (int i = 0; i < flows; ++i) {
    auto fd = request_file(lab, file, false);
    if (!fd) {
      res.failures += "busy batch connect: " + fd.error().message() + "; ";
      return res;
    }
    fds.push_back(std::move(*fd));
  }
  res.flows = fds.size();
  std::vector<Body> bodies(fds.size());
  std::atomic<bool> stop{false};
  std::atomic<int> started{0};
  // One reader drains every download as fast as it can (the flows saturate the path).
  std::thread reader([&] {
    std::vector<std::uint8_t> buf(256 << 10);
    std::vector<pollfd> p(fds.size());
    for (std::size_t i = 0; i < fds.size(); ++i) {
      p[i] = {fds[i].get(), POLLIN, 0};
    }
    while (!stop) {
      if (::poll(p.data(), p.size(), 50) <= 0) {
        continue;
      }
      for (std::size_t i = 0; i < p.size(); ++i) {
        if ((p[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
          continue;
        }
        const ssize_t n = ::recv(p[i].fd, buf.data(), buf.size(), MSG_DONTWAIT);
        if (n > 0) {
          const bool was = bodies[i].got > 0;
          bodies[i].feed(buf.data(), static_cast<std::size_t>(n));
          if (!was && bodies[i].got > 0) {
            ++started;
          }
        } else if (n == 0) {
          p[i].fd = -1;  // ended (the whole file arrived, or the server closed)
        }
      }
    }
  });
  // Every download must be in its body (the server tracks it) before the batch is asked.
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (started.load() < flows && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // queues fill up
  const auto t0 = Clock::now();
  auto rep = stack.migrate("a", {}, "b", false, "http");
  res.total_ms = ms_between(t0, Clock::now());
  if (!rep) {
    res.failures += "busy batch: " + rep.error().message() + "; ";
  } else {
    res.result = json_scalar(*rep, "result");
    res.frozen_ms = std::atof(json_scalar(*rep, "frozen_ms").c_str());
    res.bytes_carried = std::strtoull(json_scalar(*rep, "bytes_carried").c_str(), nullptr, 10);
    if (const auto st = rep->find("\"steps_ms\":"); st != std::string::npos) {
      res.steps = rep->substr(st, rep->find('}', st) + 1 - st);
    }
    if (res.result != "committed") {
      res.failures += "busy batch: " + res.result + ": " + json_scalar(*rep, "error") + "; ";
    }
  }
  // Keep reading a while after the commit: the moved flows must go on from host b.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  std::vector<std::uint64_t> before;
  for (const auto& b : bodies) {
    before.push_back(b.got);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop = true;
  reader.join();
  for (std::size_t i = 0; i < bodies.size(); ++i) {
    res.bytes_bad += bodies[i].bad;
    if (bodies[i].bad != 0) {
      std::fprintf(stderr, "busy batch flow %zu: %llu wrong bytes in %llu\n", i,
                   static_cast<unsigned long long>(bodies[i].bad),
                   static_cast<unsigned long long>(bodies[i].got));
    }
    if (bodies[i].got == before[i] && bodies[i].got < size) {
      res.failures += "busy batch: flow " + std::to_string(i) + " stalled after the move; ";
    }
  }
  return res;
}

}  // namespace rendr::bench
