// SPDX-License-Identifier: Apache-2.0
// The last frames of a flow that ended reach the peer even when the application closes at once:
// a dialer on a real loopback TCP carrier talks to a hand-written peer (a plain socket that
// speaks just enough wire: HELLO_ACK, then a frame that ends the flow) which stops reading, so
// the dialer's carrier write is pending when its flow dies and its application calls close().
// The peer then reads everything: the flow's BYE must be there (before the fix the carrier was
// closed at once, cutting the BYE, and a real peer waited out its migration budget).
#include <rendr/engine/conn.hpp>
#include <rendr/engine/core/wire.hpp>
#include <rendr/engine/dialer.hpp>
#include <rendr/engine/errors.hpp>

#include "support/require_result.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

using namespace rendr;
using namespace std::chrono_literals;

namespace {

void send_frame(int fd, const engine::Frame& f) {
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

}  // namespace

TEST_CASE("engine net close: a dead flow's final BYE is not cut by close() while a write waits",
          "[engine][net][close]") {
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(lfd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(lfd, 1) == 0);
  socklen_t alen = sizeof a;
  REQUIRE(::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &alen) == 0);

  // The peer: answer the HELLO, then read nothing more until told.
  int pfd = -1;
  std::thread peer([&] {
    pfd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (pfd < 0) {
      return;
    }
    read_frames(pfd, 5000, [&](const engine::Frame& f) {
      if (const auto* h = std::get_if<engine::Hello>(&f)) {
        engine::HelloAck ack;
        ack.flow_id = h->flow_id;
        ack.instance_id[0] = 7;
        ack.caps = 0;  // no half-close: the SHUTDOWN_WRITE below is a protocol violation
        send_frame(pfd, ack);
        return false;
      }
      return true;
    });
  });

  DialOptions o;
  PathSpec p;
  p.transport = "tcp";
  p.address = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  o.paths.push_back(p);
  o.ledger_max_bytes = 64U << 20;
  o.unsent_max_bytes = 64U << 20;
  auto d = Dialer::create(o);
  REQUIRE_OK(d);
  auto c = (*d)->dial();
  REQUIRE_OK(c);
  peer.join();
  REQUIRE(pfd >= 0);

  // 32 MiB into the ledger: far more than the loopback socket buffers hold, so the carrier's
  // write stays pending while the peer does not read.
  std::vector<std::byte> chunk(1U << 20, std::byte{0x5a});
  for (int i = 0; i < 32; ++i) {
    REQUIRE_OK((*c)->write(chunk, deadline_in(5s)));
  }
  // The peer ends the flow: SHUTDOWN_WRITE without half-close negotiated (peer_protocol); the
  // dialer answers with BYE(proto_version), queued behind the pending data.
  send_frame(pfd, engine::ShutdownWrite{1});
  std::vector<std::byte> rbuf(64);
  auto r = (*c)->read_some(rbuf, deadline_in(5s));
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().code == make_error_code(engine::errc::peer_protocol));
  (void)(*c)->close();  // at once, as an application that saw its flow end would

  // Now the peer reads: every byte the dialer had handed its carrier, then the BYE.
  std::optional<engine::ByeReason> bye;
  std::uint64_t data_frames = 0;
  read_frames(pfd, 5000, [&](const engine::Frame& f) {
    if (std::holds_alternative<engine::Data>(f)) {
      data_frames += 1;
    }
    if (const auto* b = std::get_if<engine::Bye>(&f)) {
      bye = b->reason;
      return false;
    }
    return true;
  });
  INFO("data frames before the end: " << data_frames);
  REQUIRE(bye.has_value());
  CHECK(*bye == engine::ByeReason::proto_version);
  ::close(pfd);
  ::close(lfd);
}
