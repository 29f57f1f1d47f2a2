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
#include <rendr/engine/listener.hpp>
#include <rendr/common/endpoint.hpp>

#include "raw_peer.hpp"
#include "support/require_result.hpp"

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace rendr;
using namespace rendr::test;
using namespace std::chrono_literals;


TEST_CASE("engine net close: a dead flow's final BYE is not cut by close() while a write waits",
          "[engine][net][close]") {
  const UniqueFd lfd = listen_tcp(*Endpoint::parse("127.0.0.1:0"));

  // The peer: answer the HELLO, then read nothing more until told.
  int pfd = -1;
  std::thread peer([&] {
    pfd = ::accept4(lfd.get(), nullptr, nullptr, SOCK_CLOEXEC);
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
  p.address = local_of(lfd.get()).to_string();
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
}

TEST_CASE("engine net close: close() after the peer's BYE returns once the terminal ACK is out "
          "- a program that exits right after it does not cut it",
          "[engine][net][close]") {
  // The accepting side runs on an io_context of the test's, stopped right after close()
  // returns: a process that exits then, with whatever the io thread had not done yet. Its
  // carrier's writes are held up when the BYE comes (the hand-written dialer does not read
  // for 100 ms), so the terminal ACK waits behind them; before the fix close() returned at
  // once, the stop dropped the ACK, and a real dialer's close() timed out ("BYE not
  // acknowledged", the echo example under CPU load, 2-5 in 40 runs).
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::thread io_thread([&] { io.run(); });
  ListenOptions lo;
  lo.io = &io;
  lo.flow.ledger_max_bytes = 64U << 20;
  lo.flow.unsent_max_bytes = 64U << 20;
  auto l = listen_tcp("127.0.0.1:0", lo);
  REQUIRE_OK(l);
  auto ep = Endpoint::parse((*l)->local_address());
  REQUIRE_OK(ep);
  auto raw = connect_tcp(*ep);
  REQUIRE_OK(raw);
  const int fd = raw->get();
  engine::Hello h;
  h.flow_id[0] = 0x42;
  h.instance_id[0] = 0x17;
  send_frame(fd, h);
  auto s = (*l)->accept(deadline_in(5s));
  REQUIRE_OK(s);

  // 32 MiB from the server that the dialer does not read yet: far more than the loopback
  // socket buffers hold, so the carrier's write blocks.
  std::vector<std::byte> bulk(1U << 20, std::byte{0x6b});
  for (int i = 0; i < 32; ++i) {
    REQUIRE_OK((*s)->write(bulk, deadline_in(5s)));
  }
  const std::byte req[] = {std::byte{1}, std::byte{2}, std::byte{3}};
  send_frame(fd, engine::Data{1, req});
  send_frame(fd, engine::Bye{2, engine::ByeReason::normal});
  // The server reads the request, then EOF (the BYE), and closes: its terminal ACK is queued
  // behind the blocked write. The dialer starts reading 100 ms later (the server then has
  // 400 ms left of close()'s wait: kCloseDrainWait).
  std::vector<std::byte> in(64);
  auto r = (*s)->read(in, deadline_in(5s));
  REQUIRE_OK(r);
  CHECK(*r == sizeof req);
  auto eof = (*s)->read(in, deadline_in(5s));
  REQUIRE_OK(eof);
  CHECK(*eof == 0);
  std::optional<std::uint64_t> acked;
  std::thread peer([&] {
    std::this_thread::sleep_for(100ms);
    read_frames(fd, 3000, [&](const engine::Frame& f) {
      if (const auto* a = std::get_if<engine::Ack>(&f)) {
        acked = std::max(acked.value_or(0), a->next_seq);
      }
      return !(acked && *acked > 2);
    });
  });
  (void)(*s)->close();
  // "Exit": nothing more runs on the io thread.
  io.stop();
  io_thread.join();
  peer.join();
  INFO("highest ACK the dialer read: " << (acked ? std::to_string(*acked) : "none"));
  REQUIRE(acked.has_value());
  CHECK(*acked == 3);  // the BYE (SEQ 2) was acknowledged
  s->reset();
  l->reset();
}
