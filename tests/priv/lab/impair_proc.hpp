// SPDX-License-Identifier: Apache-2.0
// Test helpers for rendr-impair: start the relay as a child (stdout piped), read its
// "listening A:P" line, stop it with SIGTERM; small UDP/TCP echo servers on loopback or in a
// namespace (port 0, read back). Throw/REQUIRE on failure.
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/unique_fd.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace rendr::test {

class ImpairProc {
 public:
  explicit ImpairProc(std::vector<std::string> args) {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::dup2(p[1], 1);
      std::vector<char*> argv;
      static char bin[] = RENDR_IMPAIR_BIN;
      argv.push_back(bin);
      for (auto& a : args) {
        argv.push_back(a.data());
      }
      argv.push_back(nullptr);
      ::execv(bin, argv.data());
      ::_exit(127);
    }
    ::close(p[1]);
    out_.reset(p[0]);
    // First line: "listening A:P" (bounded wait).
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (line.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline) {
      pollfd pf{out_.get(), POLLIN, 0};
      if (::poll(&pf, 1, 100) > 0) {
        char c[256];
        ssize_t n = ::read(out_.get(), c, sizeof c);
        if (n <= 0) {
          break;
        }
        line.append(c, static_cast<std::size_t>(n));
      }
    }
    INFO("rendr-impair said: " << line);
    REQUIRE(line.rfind("listening ", 0) == 0);
    auto ep = Endpoint::parse(line.substr(10, line.find('\n') - 10));
    REQUIRE(ep.ok());
    listen = *ep;
  }
  ~ImpairProc() {
    if (pid_ > 0) {
      (void)stop();
    }
  }
  ImpairProc(const ImpairProc&) = delete;
  ImpairProc& operator=(const ImpairProc&) = delete;

  // stop sends SIGTERM and returns the exit status (-1 if it did not exit within 5 s).
  int stop() {
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 500; ++i) {
      int st = 0;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
    return -1;
  }

  Endpoint listen;

 private:
  pid_t pid_ = -1;
  UniqueFd out_;
};

inline UniqueFd bound(const Endpoint& ep, int type) {
  auto s = UniqueFd::socket(ep.af(), type, 0);
  REQUIRE(s.ok());
  sockaddr_storage ss{};
  socklen_t len = ep.to_sockaddr(ss);
  REQUIRE(::bind(s->get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
  return std::move(*s);
}

inline Endpoint local_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0);
  auto ep = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  REQUIRE(ep.ok());
  return *ep;
}

// UdpEcho: echoes every datagram on |ep| (port 0: any) until destroyed.
class UdpEcho {
 public:
  explicit UdpEcho(const Endpoint& ep) : fd_(bound(ep, SOCK_DGRAM)) {
    addr = local_of(fd_.get());
    t_ = std::thread([this] {
      char buf[65536];
      while (!stop_) {
        pollfd pf{fd_.get(), POLLIN, 0};
        if (::poll(&pf, 1, 50) <= 0) {
          continue;
        }
        sockaddr_storage from{};
        socklen_t fl = sizeof from;
        ssize_t n = ::recvfrom(fd_.get(), buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &fl);
        if (n > 0) {
          (void)::sendto(fd_.get(), buf, static_cast<std::size_t>(n), 0,
                         reinterpret_cast<sockaddr*>(&from), fl);
        }
      }
    });
  }
  ~UdpEcho() {
    stop_ = true;
    t_.join();
  }
  UdpEcho(const UdpEcho&) = delete;
  UdpEcho& operator=(const UdpEcho&) = delete;
  Endpoint addr;

 private:
  UniqueFd fd_;
  std::atomic<bool> stop_{false};
  std::thread t_;
};

// TcpEcho: accepts connections on |ep| one at a time and echoes until EOF (then closes).
class TcpEcho {
 public:
  explicit TcpEcho(const Endpoint& ep) : fd_(bound(ep, SOCK_STREAM)) {
    REQUIRE(::listen(fd_.get(), 16) == 0);
    addr = local_of(fd_.get());
    t_ = std::thread([this] {
      std::vector<char> buf(1 << 16);
      while (!stop_) {
        pollfd pf{fd_.get(), POLLIN, 0};
        if (::poll(&pf, 1, 50) <= 0) {
          continue;
        }
        UniqueFd c(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        while (c.valid() && !stop_) {
          pollfd cp{c.get(), POLLIN, 0};
          if (::poll(&cp, 1, 50) <= 0) {
            continue;
          }
          ssize_t n = ::recv(c.get(), buf.data(), buf.size(), 0);
          if (n <= 0) {
            break;
          }
          std::size_t off = 0;
          while (off < static_cast<std::size_t>(n)) {
            ssize_t w = ::send(c.get(), buf.data() + off, static_cast<std::size_t>(n) - off,
                               MSG_NOSIGNAL);
            if (w <= 0) {
              break;
            }
            off += static_cast<std::size_t>(w);
          }
        }
      }
    });
  }
  ~TcpEcho() {
    stop_ = true;
    t_.join();
  }
  TcpEcho(const TcpEcho&) = delete;
  TcpEcho& operator=(const TcpEcho&) = delete;
  Endpoint addr;

 private:
  UniqueFd fd_;
  std::atomic<bool> stop_{false};
  std::thread t_;
};

// udp_rtt_ms sends one datagram to |to| from |fd| and waits up to |timeout_ms| for the echo;
// returns the round trip in ms, or -1 on timeout.
inline double udp_rtt_ms(int fd, const Endpoint& to, int timeout_ms) {
  sockaddr_storage ss{};
  socklen_t len = to.to_sockaddr(ss);
  char msg[64] = "rendr-impair probe";
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(::sendto(fd, msg, sizeof msg, 0, reinterpret_cast<sockaddr*>(&ss), len) ==
          static_cast<ssize_t>(sizeof msg));
  pollfd pf{fd, POLLIN, 0};
  if (::poll(&pf, 1, timeout_ms) <= 0) {
    return -1;
  }
  char buf[128];
  REQUIRE(::recv(fd, buf, sizeof buf, 0) == static_cast<ssize_t>(sizeof msg));
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace rendr::test
