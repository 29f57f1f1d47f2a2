// SPDX-License-Identifier: Apache-2.0
// An async dial's first transmit after the handshake waits for its completion handler: what the
// handler writes at once (rendr-tun: the app's first bytes) leaves in the same carrier segment
// as the flow's first probe and its L3 record. A hand-written peer (a plain loopback socket)
// answers the HELLO and counts the dialer's data segments from then on with TCP_INFO.
#include <rendr/engine/conn.hpp>
#include <rendr/engine/core/wire.hpp>
#include <rendr/engine/dialer.hpp>
#include <rendr/engine/types.hpp>

#include "raw_peer.hpp"
#include "support/require_result.hpp"

#include <asio/buffer.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>

#include <netinet/tcp.h>
#include <unistd.h>

#include <cstddef>

#include <catch2/catch.hpp>

#include <future>
#include <string>
#include <thread>

using namespace rendr;
using namespace rendr::test;
using namespace std::chrono_literals;

namespace {

// glibc's struct tcp_info ends at tcpi_total_retrans; the kernel's goes on (linux/tcp.h, which
// cannot be included next to netinet/tcp.h) to the data segment counters (Linux >= 4.6).
struct TcpInfoExt {
  ::tcp_info base;
  std::uint64_t pacing_rate, max_pacing_rate, bytes_acked, bytes_received;
  std::uint32_t segs_out, segs_in, notsent_bytes, min_rtt, data_segs_in, data_segs_out;
};
static_assert(offsetof(TcpInfoExt, data_segs_in) == 152);

std::uint32_t data_segs_in(int fd) {
  TcpInfoExt ti{};
  socklen_t len = sizeof ti;
  REQUIRE(::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0);
  REQUIRE(len >= offsetof(TcpInfoExt, data_segs_out));
  return ti.data_segs_in;
}

}  // namespace

TEST_CASE("engine async_dial: what the handler writes at once leaves with the flow's first "
          "frames, in one carrier segment",
          "[engine][net][async_dial]") {
  const UniqueFd lfd = listen_tcp(*Endpoint::parse("127.0.0.1:0"));
  asio::io_context io;
  auto work = asio::make_work_guard(io);
  std::thread io_thread([&] { io.run(); });

  DialOptions o;
  PathSpec p;
  p.transport = "tcp";
  p.address = local_of(lfd.get()).to_string();
  o.paths.push_back(p);
  o.io = &io;
  auto d = Dialer::create(o);
  REQUIRE_OK(d);
  auto id = engine::make_l3_identity(6, "10.9.8.7:51000", "203.0.113.9:80");
  REQUIRE(id);
  const std::string request = "GET / HTTP/1.1\r\n\r\n";
  std::promise<ConnPtr> dialled;
  (*d)->async_dial(*id, deadline_in(5s), [&](Result<ConnPtr> c) {  // io thread: no REQUIRE
    if (!c) {
      dialled.set_value(nullptr);
      return;
    }
    // As rendr-tun's relay does: an async write of what is there already, from the handler.
    (*c)->async_write_some(asio::buffer(request), [](std::error_code, std::size_t) {});
    dialled.set_value(std::move(*c));
  });

  const UniqueFd peer = accept_one(lfd.get());
  const int pfd = peer.get();
  std::uint32_t before = 0;
  std::string got;
  int l3_records = 0;
  read_frames(pfd, 5000, [&](const engine::Frame& f) {
    if (const auto* h = std::get_if<engine::Hello>(&f)) {
      engine::HelloAck ack;
      ack.flow_id = h->flow_id;
      ack.instance_id[0] = 7;
      ack.caps = h->caps & (engine::kCapsL3Identity | engine::kCapsL3Record |
                            engine::kCapsHalfClose | engine::kCapsRefuse);
      before = data_segs_in(pfd);  // the HELLO's
      send_frame(pfd, ack);
      return true;
    }
    if (std::holds_alternative<engine::L3IdentityFrame>(f)) {
      l3_records += 1;
    }
    if (const auto* data = std::get_if<engine::Data>(&f)) {
      const auto b = data->payload;
      got.append(reinterpret_cast<const char*>(b.data()), b.size());
    }
    return got.size() < request.size();
  });
  CHECK(got == request);
  CHECK(l3_records == 1);
  // The probe, the L3 record and the request: one segment (two before the handler held the
  // flow's first transmit).
  CHECK(data_segs_in(pfd) - before == 1);

  auto fut = dialled.get_future();
  REQUIRE(fut.wait_for(5s) == std::future_status::ready);
  auto conn = fut.get();
  CHECK(conn != nullptr);
  conn.reset();
  d->reset();
  work.reset();
  io.stop();
  io_thread.join();
}
