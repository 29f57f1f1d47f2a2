// SPDX-License-Identifier: Apache-2.0
// A hand-written wire peer for net tests: a plain socket that sends framed frames and reads
// the dialer's frames (tests that must see exactly what a carrier carries, or hold it up).
#pragma once

#include <rendr/engine/core/wire.hpp>

#include "support/sockets.hpp"

#include <catch2/catch.hpp>

#include <poll.h>
#include <sys/socket.h>

#include <vector>

namespace rendr::test {

// framed: |f| as a stream carrier carries it (u16 length prefix, then the frame).
inline std::vector<std::byte> framed(const engine::Frame& f) {
  std::vector<std::byte> frame;
  REQUIRE(engine::encode_frame(f, frame).ok());
  std::vector<std::byte> out;
  engine::append_stream_prefix(frame.size(), out);
  out.insert(out.end(), frame.begin(), frame.end());
  return out;
}

// send_frame writes |f| framed to |fd| (support/sockets.hpp write_all).
inline void send_frame(int fd, const engine::Frame& f) { write_all(fd, framed(f)); }

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
