// SPDX-License-Identifier: Apache-2.0
// Any destination at scale: 500 concurrent connections to 500 addresses (250 IPv4, 250 IPv6)
// over 300 ports, each echoing its own pattern. Client and server are each one poll() loop
// (the server drives lwIP Connections directly), so nothing here scales with threads.
#include "tun_lab.hpp"

#include "support/require_result.hpp"

#include <rendr/userstack/stack.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <thread>
#include <vector>

using namespace rendr;
using namespace rendr::test;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kConns = 500;
constexpr std::size_t kBytes = 8192;  // each way per connection

struct ClientConn {
  UniqueFd fd;
  Endpoint to;
  std::size_t sent = 0;
  std::size_t got = 0;
  bool bad = false;
  bool eof = false;
  bool shut = false;
};

}  // namespace

TEST_CASE("userstack serves 500 concurrent connections to 500 addresses and 300 ports",
          "[.netns][userstack][netns]") {
  StackLab lab;
  userstack::Stack& st = lab.stack();
  const long long resets0 = lab.resets();

  // Server: one thread echoing on every accepted Connection.
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> served{0};
  std::thread server([&] {
    std::vector<userstack::ConnectionPtr> conns;
    std::vector<std::vector<std::byte>> pending;
    std::vector<std::byte> buf(16384);
    while (!stop) {
      while (true) {
        auto a = st.accept(0ms);
        if (!a) {
          break;
        }
        conns.push_back(std::move(a).value());
        pending.emplace_back();
      }
      std::vector<pollfd> pfs;
      for (std::size_t i = 0; i < conns.size(); ++i) {
        userstack::Connection& c = *conns[i];
        if (!c.alive() && pending[i].empty()) {
          continue;
        }
        c.clear_event();
        auto r = c.read(buf);
        if (r && *r > 0) {
          pending[i].insert(pending[i].end(), buf.begin(),
                            buf.begin() + static_cast<std::ptrdiff_t>(*r));
        } else if (r && *r == 0 && pending[i].empty()) {
          if (c.shutdown_write()) {
            ++served;
          }
          c.close();
          continue;
        }
        if (!pending[i].empty()) {
          auto w = c.write(pending[i]);
          if (w && *w > 0) {
            pending[i].erase(pending[i].begin(),
                             pending[i].begin() + static_cast<std::ptrdiff_t>(*w));
          }
        }
        pfs.push_back({c.event_fd(), POLLIN, 0});
      }
      ::poll(pfs.data(), pfs.size(), 5);
    }
  });
  struct StopServer {
    std::atomic<bool>& stop;
    std::thread& t;
    ~StopServer() {
      stop = true;
      t.join();
    }
  } stop_server{stop, server};

  // Client: 500 non-blocking connections, 250 v4 + 250 v6 addresses, ports 2000..2299.
  std::vector<ClientConn> cs(kConns);
  for (std::size_t i = 0; i < kConns; ++i) {
    const bool v6 = i % 2 == 1;
    const std::size_t host = i / 2 + 1;  // 1..250
    const auto port = static_cast<std::uint16_t>(2000 + i % 300);
    std::string addr = v6 ? "fd99::" + std::to_string(host) : "198.18.0." + std::to_string(host);
    cs[i].to = Endpoint::parse_address(addr, port).value();
    cs[i].fd = UniqueFd(::socket(cs[i].to.af(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    REQUIRE(cs[i].fd.valid());
    sockaddr_storage ss{};
    socklen_t len = cs[i].to.to_sockaddr(ss);
    int rc = ::connect(cs[i].fd.get(), reinterpret_cast<sockaddr*>(&ss), len);
    REQUIRE((rc == 0 || errno == EINPROGRESS));
  }
  auto byte_of = [](std::size_t conn, std::size_t off) {
    return static_cast<std::byte>((conn * 131 + off * 7) & 0xff);
  };
  std::vector<std::byte> buf(16384);
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  std::size_t done = 0;
  while (done < kConns && std::chrono::steady_clock::now() < deadline) {
    std::vector<pollfd> pfs;
    std::vector<std::size_t> idx;
    for (std::size_t i = 0; i < kConns; ++i) {
      ClientConn& c = cs[i];
      if (c.eof) {
        continue;
      }
      short ev = POLLIN;
      if (c.sent < kBytes) {
        ev |= POLLOUT;
      }
      pfs.push_back({c.fd.get(), ev, 0});
      idx.push_back(i);
    }
    ::poll(pfs.data(), pfs.size(), 50);
    for (std::size_t k = 0; k < pfs.size(); ++k) {
      ClientConn& c = cs[idx[k]];
      const std::size_t i = idx[k];
      if ((pfs[k].revents & POLLOUT) != 0 && c.sent < kBytes) {
        std::size_t n = std::min(buf.size(), kBytes - c.sent);
        for (std::size_t j = 0; j < n; ++j) {
          buf[j] = byte_of(i, c.sent + j);
        }
        ssize_t w = ::send(c.fd.get(), buf.data(), n, MSG_NOSIGNAL);
        if (w > 0) {
          c.sent += static_cast<std::size_t>(w);
        }
      }
      if (c.sent == kBytes && !c.shut) {
        ::shutdown(c.fd.get(), SHUT_WR);
        c.shut = true;
      }
      if ((pfs[k].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
        ssize_t n = ::recv(c.fd.get(), buf.data(), buf.size(), 0);
        if (n > 0) {
          for (ssize_t j = 0; j < n; ++j) {
            if (buf[static_cast<std::size_t>(j)] !=
                byte_of(i, c.got + static_cast<std::size_t>(j))) {
              c.bad = true;
            }
          }
          c.got += static_cast<std::size_t>(n);
        } else if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINPROGRESS)) {
          c.eof = true;
          ++done;
        }
      }
    }
  }
  std::size_t ok = 0;
  for (const auto& c : cs) {
    if (c.eof && !c.bad && c.got == kBytes && c.sent == kBytes) {
      ++ok;
    }
  }
  CHECK(ok == kConns);
  CHECK(st.counters().accepted == kConns);
  CHECK(st.counters().listeners == 300);
  CHECK(lab.resets() == resets0);
  std::printf(
      "userstack many: %zu of %zu connections echoed %zu bytes intact (250 v4 + 250 v6 "
      "addresses, 300 ports)\n",
      ok, kConns, kBytes);
}
