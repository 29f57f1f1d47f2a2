// SPDX-License-Identifier: Apache-2.0
// A hand-written wire peer for net tests: a plain socket that sends framed frames and reads
// the dialer's frames (tests that must see exactly what a carrier carries, or hold it up).
#pragma once

#include <rendr/engine/core/wire.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstdint>
#include <vector>

namespace rendr::test {

// listen_loopback: a listening TCP socket on 127.0.0.1 (port 0); |port| gets its port.
inline int listen_loopback(std::uint16_t& port) {
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(lfd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(lfd, 1) == 0);
  socklen_t alen = sizeof a;
  REQUIRE(::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &alen) == 0);
  port = ntohs(a.sin_port);
  return lfd;
}

inline void send_frame(int fd, const engine::Frame& f) {
  std::vector<std::byte> body;
  REQUIRE(engine::encode_frame(f, body).ok());
  std::vector<std::byte> out;
  engine::append_stream_prefix(body.size(), out);
  out.insert(out.end(), body.begin(), body.end());
  REQUIRE(::send(fd, out.data(), out.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(out.size()));
}

// read_frames reads |fd| until EOF, an error or |ms| of silence, handing every frame to |on|.
template <typename F>
void read_frames(int fd, int ms, F&& on) {
  engine::StreamDeframer d;
  std::vector<std::byte> buf(256 * 1024);
  while (true) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, ms) <= 0) {
      return;
    }
    const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
    if (n <= 0) {
      return;
    }
    d.feed(std::span(buf).first(static_cast<std::size_t>(n)));
    while (true) {
      auto f = d.next();
      REQUIRE(f.ok());
      if (!*f) {
        break;
      }
      auto fr = engine::decode_frame(**f);
      REQUIRE(fr.ok());
      if (!on(*fr)) {
        return;
      }
    }
  }
}

}  // namespace rendr::test
