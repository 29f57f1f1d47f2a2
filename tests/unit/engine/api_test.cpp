// SPDX-License-Identifier: Apache-2.0
// The public engine API over real loopback sockets (port 0, 127.0.0.1 only): Dialer, listen_tcp,
// listen_udpflow, Conn (blocking + Asio face), PacketConn, Admin. Waits are on the API's own
// blocking calls and deadlines, never sleeps.
#include <rendr/engine/conn.hpp>
#include <rendr/engine/dialer.hpp>
#include <rendr/engine/errors.hpp>
#include <rendr/engine/listener.hpp>
#include <rendr/engine/stats_json.hpp>

#include "support/pattern.hpp"
#include "support/require_result.hpp"
#include "api_helpers.hpp"

#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/read.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <type_traits>

using namespace rendr;
using namespace std::chrono_literals;
using rendr::test::Pattern;

using namespace rendr::test::api;

TEST_CASE("engine api: tcp dial, two paths, bytes both ways, migrate, clean close is EOF",
          "[engine][api][tcp]") {
  auto l = listen_tcp("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  auto [d, c, s] = dial_pair(**l, dial_opts({tcp_path(**l, "a"), tcp_path(**l, "b")}));
  Conn& client = **c;
  Conn& server = **s;

  auto st = client.stats();
  REQUIRE(st.paths.size() == 2);
  CHECK(st.paths[0].state == engine::PathState::ready);
  CHECK(st.paths[1].state == engine::PathState::ready);
  CHECK(st.paths[0].transport == "tcp");
  CHECK(st.paths[0].remote == (*l)->local_address());
  CHECK_FALSE(st.paths[0].local.empty());
  CHECK(client.side() == engine::Side::client);
  CHECK(server.side() == engine::Side::server);
  CHECK(client.flow_id() == server.flow_id());

  std::atomic<int> migrations{0};
  const auto cb = client.on_migrate([&](const MigrateEvent& e) {
    CHECK(e.cause == engine::MigrateCause::explicit_request);
    migrations += 1;
  });
  const PathId first = client.active_path();
  const PathId other = st.paths[0].id == first ? st.paths[1].id : st.paths[0].id;
  constexpr std::uint64_t kTotal = 8U << 20;
  {
    Writer up(client, kTotal, 1);
    Writer down(server, kTotal, 2);
    bool migrated = false;
    read_verify(server, kTotal, 1, [&](std::uint64_t off) {
      if (!migrated && off >= kTotal / 2) {
        migrated = true;
        REQUIRE_OK(client.migrate(other));
      }
    });
    read_verify(client, kTotal, 2);
    up.t.join();
    down.t.join();
    CHECK(up.error.empty());
    CHECK(down.error.empty());
  }
  CHECK(client.active_path() == other);
  CHECK(client.migration_count() == 1);
  // on_migrate runs on the io thread, after the call that caused it returned.
  for (int i = 0; i < 200 && migrations.load() == 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  client.cancel_on_migrate(cb);

  // Clean close: the server reads EOF after everything, never an error.
  REQUIRE_OK(client.close());
  std::byte b[16];
  auto r = server.read_some(b, deadline_in(5s));
  REQUIRE_OK(r);
  CHECK(*r == 0);
  CHECK(server.state() == engine::FlowState::dead);
  CHECK(migrations.load() == 1);
}

TEST_CASE("engine api: a killed carrier is no error, bytes arrive over the other path",
          "[engine][api][tcp]") {
  auto l = listen_tcp("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  auto [d, c, s] = dial_pair(**l, dial_opts({tcp_path(**l), tcp_path(**l)}));
  std::atomic<int> deaths{0};
  (void)(*c)->on_migrate([&](const MigrateEvent& e) {
    if (e.cause == engine::MigrateCause::death) {
      deaths += 1;
    }
  });
  const auto k = transfer_killing_active(**c, **s, 8U << 20, 3);
  CHECK(k.writer_error.empty());
  for (int i = 0; i < 200 && deaths.load() == 0; ++i) {
    std::this_thread::sleep_for(10ms);  // on_migrate runs on the io thread
  }
  CHECK(deaths.load() == 1);
  CHECK((*c)->stats().paths.size() == 1);
  CHECK((*c)->state() == engine::FlowState::active);
}

TEST_CASE("engine api: with retry on, a killed only path is re-dialled and nothing is lost",
          "[engine][api][tcp][retry]") {
  auto l = listen_tcp("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  auto o = dial_opts({tcp_path(**l)});
  o.retry.enabled = true;
  o.retry.min_backoff = 50ms;
  o.retry.max_backoff = 200ms;
  o.retry.attempt_timeout = 2s;
  auto [d, c, s] = dial_pair(**l, o);
  const auto k = transfer_killing_active(**c, **s, 8U << 20, 5);
  CHECK(k.killed);
  CHECK(k.writer_error.empty());
  // The bytes may all have been in flight before the kill; the path comes back after >= 50 ms.
  for (int i = 0; i < 300 && (*c)->stats().path_redials == 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  const auto st = (*c)->stats();
  CHECK(st.paths_lost == 1);
  CHECK(st.path_redials == 1);
  CHECK(st.paths.size() == 1);
  CHECK((*c)->state() == engine::FlowState::active);
  // And the flow works on the re-dialled path, both ways.
  Writer more(**s, 1U << 20, 6);
  read_verify(**c, 1U << 20, 6);
  more.t.join();
  CHECK(more.error.empty());
}

TEST_CASE("engine api: retry leaves a path removed with remove_path alone, bad retry knobs",
          "[engine][api][tcp][retry]") {
  auto l = listen_tcp("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  auto o = dial_opts({tcp_path(**l, "p1"), tcp_path(**l, "p2")});
  o.retry.enabled = true;
  o.retry.min_backoff = 20ms;
  auto [d, c, s] = dial_pair(**l, o);
  REQUIRE((*c)->stats().paths.size() == 2);
  const PathId other = (*c)->stats().paths.at(0).active ? (*c)->stats().paths.at(1).id
                                                         : (*c)->stats().paths.at(0).id;
  REQUIRE_OK((*c)->remove_path(other));
  std::this_thread::sleep_for(300ms);  // 15 backoffs: a re-dial would have happened
  CHECK((*c)->stats().paths.size() == 1);
  CHECK((*c)->stats().path_redials == 0);

  auto bad = dial_opts({tcp_path(**l)});
  bad.retry.enabled = true;
  bad.retry.min_backoff = 0ms;
  REQUIRE_ERROR(Dialer::create(bad), engine::errc::invalid_config, "retry");
}

TEST_CASE("engine api: later_paths_after dials one path now and the others in the background",
          "[engine][api][tcp][later]") {
  auto l = listen_tcp("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  auto o = dial_opts({tcp_path(**l, "p1"), tcp_path(**l, "p2")});
  o.later_paths_after = 100ms;
  auto [d, c, s] = dial_pair(**l, o);
  // Right after the dial: one path on both sides, the other not dialled yet.
  CHECK((*c)->stats().paths.size() == 1);
  CHECK((*c)->stats().paths_later == 0);
  CHECK((*s)->stats().paths.size() == 1);
  for (int i = 0; i < 300 && (*c)->stats().paths_later == 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  auto st = (*c)->stats();
  CHECK(st.paths_later == 1);
  CHECK(st.path_redials == 0);
  REQUIRE(st.paths.size() == 2);
  for (int i = 0; i < 300 && (*s)->stats().paths.size() < 2; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  CHECK((*s)->stats().paths.size() == 2);
  // The deferred path carries the flow when the first one dies.
  const auto k = transfer_killing_active(**c, **s, 4U << 20, 7);
  CHECK(k.killed);
  CHECK(k.writer_error.empty());
  CHECK((*c)->state() == engine::FlowState::active);

  // A flow closed before the delay never dials the rest: its second path points at a plain
  // TCP listener of this test, which must see no connection.
  const int plain = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(plain >= 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  REQUIRE(::bind(plain, reinterpret_cast<sockaddr*>(&sa), sl) == 0);
  REQUIRE(::listen(plain, 4) == 0);
  REQUIRE(::getsockname(plain, reinterpret_cast<sockaddr*>(&sa), &sl) == 0);
  PathSpec q2;
  q2.address = "127.0.0.1:" + std::to_string(ntohs(sa.sin_port));
  auto o2 = dial_opts({tcp_path(**l, "q1"), q2});
  o2.later_paths_after = 50ms;
  auto d2 = Dialer::create(o2);
  REQUIRE_OK(d2);
  auto c2 = (*d2)->dial(deadline_in(5s));
  REQUIRE_OK(c2);
  CHECK((*c2)->stats().paths.size() == 1);
  auto s2 = (*l)->accept(deadline_in(5s));
  REQUIRE_OK(s2);
  REQUIRE_OK((*c2)->close());
  pollfd pf{plain, POLLIN, 0};
  CHECK(::poll(&pf, 1, 250) == 0);  // five delays: a deferred dial would have come
  ::close(plain);

  // Bytes moved bring them at once, long before the delay.
  auto o3 = dial_opts({tcp_path(**l, "r1"), tcp_path(**l, "r2")});
  o3.later_paths_after = 60s;
  o3.later_paths_bytes = 64U << 10;
  auto [d3, c3, s3] = dial_pair(**l, o3);
  CHECK((*c3)->stats().paths.size() == 1);
  {
    Writer up(**c3, 1U << 20, 8);
    read_verify(**s3, 1U << 20, 8);
    up.t.join();
    CHECK(up.error.empty());
  }
  for (int i = 0; i < 300 && (*c3)->stats().paths_later == 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  CHECK((*c3)->stats().paths_later == 1);
  CHECK((*c3)->stats().paths.size() == 2);

  auto bad = dial_opts({tcp_path(**l)});
  bad.later_paths_after = -1ms;
  REQUIRE_ERROR(Dialer::create(bad), engine::errc::invalid_config, "later_paths_after");
}

TEST_CASE("engine api: all paths gone past the budget is MigrationBudgetExceeded, not EOF",
          "[engine][api][tcp]") {
  auto lo = listen_opts();
  lo.flow.migration_budget = 300ms;
  auto l = listen_tcp("127.0.0.1:0", lo);
  REQUIRE_OK(l);
  auto o = dial_opts({tcp_path(**l)});
  o.migration_budget = 300ms;
  auto [d, c, s] = dial_pair(**l, o);
  (*c)->kill_path_for_test((*c)->active_path());
  std::byte b[8];
  auto r = (*c)->read_some(b, deadline_in(5s));
  REQUIRE_ERROR(r, engine::errc::migration_budget_exceeded, "");
  // The server saw its carrier end (a transport error, not EOF) and ran out of budget too.
  auto rs = (*s)->read_some(b, deadline_in(5s));
  REQUIRE_FALSE(rs.ok());
  CHECK(rs.error().code == make_error_code(engine::errc::migration_budget_exceeded));
}

TEST_CASE("engine api: deadlines, refused mode switch, remove_path, add_path",
          "[engine][api][admin]") {
  auto l = listen_tcp("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  auto [d, c, s] = dial_pair(**l, dial_opts({tcp_path(**l)}));
  Conn& client = **c;

  std::byte b[8];
  REQUIRE_ERROR(client.read_some(b, deadline_in(20ms)), std::errc::timed_out, "read");
  REQUIRE_ERROR((*l)->accept(deadline_in(10ms)), std::errc::timed_out, "accept");

  CHECK(client.mode() == Mode::prime);
  REQUIRE_OK(client.set_mode(Mode::race));
  REQUIRE_ERROR(client.set_mode(Mode::bond), engine::errc::mode_switch_illegal, "");
  REQUIRE_OK(client.set_mode(Mode::prime));
  REQUIRE_OK(client.set_mode(Mode::bond));
  REQUIRE_OK(client.set_mode(Mode::prime));

  REQUIRE_ERROR(client.remove_path(client.active_path()), engine::errc::last_path, "");
  auto p2 = client.add_path(tcp_path(**l, "added"));
  REQUIRE_OK(p2);
  CHECK(client.stats().paths.size() == 2);
  REQUIRE_OK(client.remove_path(client.active_path()));
  CHECK(client.active_path() == *p2);
  REQUIRE_ERROR(client.remove_path(999), engine::errc::unknown_path, "");
  REQUIRE_ERROR((*s)->add_path(tcp_path(**l)), engine::errc::wrong_side, "");

  // Still a working flow.
  const std::byte msg[] = {std::byte{1}, std::byte{2}, std::byte{3}};
  REQUIRE_OK(client.write(msg));
  auto r = (*s)->read(std::span<std::byte>(b, 3), deadline_in(5s));
  REQUIRE_OK(r);
  CHECK(*r == 3);
  CHECK(std::memcmp(b, msg, 3) == 0);

  // Stats JSON carries the per-path fields rendrctl shows.
  const std::string js = engine::flow_stats_json(client.stats());
  CHECK_THAT(js, Catch::Contains("\"transport\":\"tcp\""));
  CHECK_THAT(js, Catch::Contains("\"rtt_us\""));
  CHECK_THAT(js, Catch::Contains("\"name\":\"added\""));
}

TEST_CASE("engine api: dial errors", "[engine][api][dial]") {
  DialOptions none;
  REQUIRE_ERROR(Dialer::create(none), engine::errc::invalid_config, "no paths");
  auto o = dial_opts({PathSpec{"quic", "127.0.0.1:1", "", "", {}}});
  auto d = Dialer::create(o);
  REQUIRE_OK(d);
  REQUIRE_ERROR((*d)->dial(), std::errc::invalid_argument, "ca, cert and key are required");
  auto oq = dial_opts({PathSpec{"quic", "127.0.0.1:1", "", "",
                                {{"mode", "datagram"}, {"ca", "a"}, {"cert", "b"}, {"key", "c"}}}});
  auto dq = Dialer::create(oq);
  REQUIRE_OK(dq);
  // Datagram mode dials like stream mode: unreadable PEM files are named before any packet.
  REQUIRE_ERROR((*dq)->dial(), std::errc::invalid_argument, "quic ca \"a\"");
  o.migration_budget = 91s;
  REQUIRE_ERROR(Dialer::create(o), engine::errc::invalid_config, "");
  // Nothing listens on a port we just released: connection refused, as an error.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  auto o2 = dial_opts({PathSpec{"tcp", "127.0.0.1:" + std::to_string(ntohs(a.sin_port)), "", "", {}}});
  auto d2 = Dialer::create(o2);
  REQUIRE_OK(d2);
  REQUIRE_ERROR((*d2)->dial(deadline_in(2s)), std::errc::connection_refused, "connect");
  REQUIRE_FALSE((*d2)->add_stream_factory("tcp", nullptr).ok());
}

TEST_CASE("engine api: a custom stream factory carries the flow", "[engine][api][factory]") {
  auto l = listen_tcp("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  PathSpec p = tcp_path(**l);
  p.transport = "wrapped";
  auto d = Dialer::create(dial_opts({p}));
  REQUIRE_OK(d);
  std::atomic<int> calls{0};
  REQUIRE_OK((*d)->add_stream_factory(
      "wrapped", [&](asio::io_context& io, const PathSpec& spec, Deadline dl) {
        calls += 1;
        PathSpec t = spec;
        t.transport = "tcp";
        return dial_tcp(io, t, dl);
      }));
  REQUIRE_ERROR((*d)->add_stream_factory("wrapped", [](asio::io_context&, const PathSpec&,
                                                       Deadline) -> Result<StreamCarrierPtr> {
    return make_error(std::errc::invalid_argument, "x");
  }), std::errc::invalid_argument, "taken");
  auto c = (*d)->dial();
  REQUIRE_OK(c);
  CHECK(calls.load() == 1);
  auto s = (*l)->accept(deadline_in(5s));
  REQUIRE_OK(s);
  CHECK((*c)->stats().paths[0].transport == "wrapped");
  auto p2 = (*c)->add_path(p);
  REQUIRE_OK(p2);
  CHECK(calls.load() == 2);
}

TEST_CASE("engine api: udpflow serves stream and packet flows on one port",
          "[engine][api][udpflow]") {
  auto l = listen_udpflow("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  SECTION("stream over two udpflow paths, with a migration") {
    auto d = Dialer::create(dial_opts({udp_path(**l), udp_path(**l)}));
    REQUIRE_OK(d);
    auto c = (*d)->dial();
    REQUIRE_OK(c);
    auto s = (*l)->accept(deadline_in(5s));
    REQUIRE_OK(s);
    CHECK((*c)->stats().paths.size() == 2);
    CHECK((*c)->stats().paths[0].transport == "udpflow");
    constexpr std::uint64_t kTotal = 2U << 20;
    Writer up(**c, kTotal, 5);
    Writer down(**s, kTotal, 6);
    bool migrated = false;
    read_verify(**s, kTotal, 5, [&](std::uint64_t off) {
      if (!migrated && off >= kTotal / 2) {
        migrated = true;
        const auto st = (*c)->stats();
        const PathId other = st.paths[0].active ? st.paths[1].id : st.paths[0].id;
        REQUIRE_OK((*c)->migrate(other));
      }
    });
    read_verify(**c, kTotal, 6);
    up.t.join();
    down.t.join();
    CHECK(up.error.empty());
    CHECK(down.error.empty());
    REQUIRE_OK((*c)->close());
    std::byte b[4];
    auto r = (*s)->read_some(b, deadline_in(5s));
    REQUIRE_OK(r);
    CHECK(*r == 0);
  }
  SECTION("packets keep their boundaries, each arrives once") {
    auto [d, c, s] = dial_pair<PacketConnPtr>(**l, dial_opts({udp_path(**l)}));
    CHECK((*c)->max_packet() == kUdpFlowMaxFrame - engine::kHeaderSize);
    std::vector<std::byte> big((*c)->max_packet() + 1);
    REQUIRE_ERROR((*c)->write(big), engine::errc::packet_too_large, "");
    constexpr int kCount = 2000;
    std::thread w([&] {
      for (int i = 0; i < kCount; ++i) {
        std::vector<std::byte> p(static_cast<std::size_t>(i % 1300), std::byte(i & 0xff));
        REQUIRE((*c)->write(p, deadline_in(10s)).ok());
      }
    });
    std::vector<int> seen(kCount, 0);
    std::vector<std::byte> in;
    for (int n = 0; n < kCount; ++n) {
      auto r = (*s)->read(in, deadline_in(10s));
      REQUIRE_OK(r);
      REQUIRE(*r);
      // Packet i has length i % 1300 filled with i & 0xff: identify it by both.
      bool found = false;
      for (int i = static_cast<int>(in.size()); i < kCount; i += 1300) {
        if (seen[static_cast<std::size_t>(i)] == 0 &&
            (in.empty() || in[0] == std::byte(i & 0xff))) {
          seen[static_cast<std::size_t>(i)] = 1;
          found = true;
          break;
        }
      }
      REQUIRE(found);
    }
    w.join();
    // Echo one back: the server's direction works too.
    const std::byte pong[] = {std::byte{7}};
    REQUIRE_OK((*s)->write(pong));
    auto r = (*c)->read(in, deadline_in(5s));
    REQUIRE_OK(r);
    REQUIRE(in.size() == 1);
    REQUIRE_OK((*c)->close());
    r = (*s)->read(in, deadline_in(5s));
    REQUIRE_OK(r);
    CHECK_FALSE(*r);  // EOF
  }
}

TEST_CASE("engine api: packet flows over tcp carriers keep boundaries and bytes",
          "[engine][api][packet]") {
  // Over a stream carrier packets arrive as views of the receive chunks; read() hands each over
  // as its own buffer.
  auto l = listen_tcp("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  auto [d, c, s] = dial_pair<PacketConnPtr>(**l, dial_opts({tcp_path(**l)}));
  const std::size_t max = (*c)->max_packet();
  CHECK(max == engine::kMaxPayload);
  constexpr int kCount = 600;
  const auto packet = [max](int i) {
    const std::size_t n = i % 5 == 0 ? max : static_cast<std::size_t>(i * 977) % (max + 1);
    std::vector<std::byte> p(n);
    for (std::size_t k = 0; k < n; ++k) {
      p[k] = static_cast<std::byte>((k * 7 + static_cast<std::size_t>(i)) & 0xff);
    }
    return p;
  };
  std::thread w([&] {
    for (int i = 0; i < kCount; ++i) {
      REQUIRE((*c)->write(packet(i), deadline_in(10s)).ok());
    }
  });
  std::vector<std::byte> in;
  int bad = -1;
  for (int i = 0; i < kCount; ++i) {
    auto r = (*s)->read(in, deadline_in(10s));
    REQUIRE_OK(r);
    REQUIRE(*r);
    if (bad < 0 && in != packet(i)) {  // one path, so in order
      bad = i;
    }
  }
  w.join();
  CHECK(bad == -1);
  REQUIRE_OK((*c)->close());
  auto r = (*s)->read(in, deadline_in(5s));
  REQUIRE_OK(r);
  CHECK_FALSE(*r);  // EOF
}

TEST_CASE("engine api: listeners refuse non-rendr input without harm", "[engine][api][hostile]") {
  auto l = listen_tcp("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((*l)->port());
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  const char junk[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  REQUIRE(::send(fd, junk, sizeof junk, 0) > 0);
  char b[64];
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  CHECK(::recv(fd, b, sizeof b, 0) <= 0);  // closed by the listener
  ::close(fd);
  // The listener still serves rendr.
  auto d = Dialer::create(dial_opts({tcp_path(**l)}));
  REQUIRE_OK(d);
  auto c = (*d)->dial();
  REQUIRE_OK(c);
  // Held: a dropped server Conn leaves the listener's table (asynchronously).
  auto s = (*l)->accept(deadline_in(5s));
  REQUIRE_OK(s);
  CHECK((*l)->flow_ids().size() == 1);
  CHECK((*l)->stats().size() == 1);
}

TEST_CASE("engine api: the Asio face with C++20 coroutines on the caller's io_context",
          "[engine][api][asio]") {
  asio::io_context io(1);
  auto lo = listen_opts();
  lo.io = &io;
  auto l = listen_tcp("127.0.0.1:0", lo);
  REQUIRE_OK(l);
  // Dial on the engine's own thread (blocking dial must not run on |io|'s thread).
  auto d = Dialer::create(dial_opts({tcp_path(**l)}));
  REQUIRE_OK(d);
  std::thread runner([&] { io.run_for(10s); });
  auto c = (*d)->dial();
  REQUIRE_OK(c);
  auto s = (*l)->accept(deadline_in(5s));
  REQUIRE_OK(s);
  Conn* server = s->get();
  std::string got;
  std::error_code final_ec;
  std::atomic<bool> done{false};
  asio::co_spawn(
      io,
      [server, &got, &final_ec]() -> asio::awaitable<void> {
        char buf[5];
        auto [ec, n] = co_await asio::async_read(
            *server, asio::buffer(buf), asio::experimental::as_tuple(asio::use_awaitable));
        (void)n;
        if (ec) {
          final_ec = ec;
          co_return;
        }
        got.assign(buf, 5);
        auto [ec2, n2] = co_await asio::async_write(
            *server, asio::buffer(buf), asio::experimental::as_tuple(asio::use_awaitable));
        (void)n2;
        final_ec = ec2;
        char more[1];
        auto [ec3, n3] = co_await server->async_read_some(
            asio::buffer(more), asio::experimental::as_tuple(asio::use_awaitable));
        (void)n3;
        final_ec = ec3;  // EOF expected
      },
      [&done](std::exception_ptr) { done = true; });
  REQUIRE_OK((*c)->write(std::as_bytes(std::span("hello", 5))));
  std::byte back[5];
  auto r = (*c)->read(back, deadline_in(5s));
  REQUIRE_OK(r);
  CHECK(*r == 5);
  REQUIRE_OK((*c)->close());
  for (int i = 0; i < 500 && !done; ++i) {
    std::this_thread::sleep_for(10ms);  // joins the coroutine's end; bounded
  }
  CHECK(done.load());
  CHECK(got == "hello");
  CHECK(final_ec == asio::error::eof);
  s->reset();
  l->reset();
  io.stop();
  runner.join();
}

TEST_CASE("engine api: write_engine_status publishes flows for rendrctl status",
          "[engine][api][status]") {
  char tmpl[] = "/tmp/rendr-engine-status-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  auto l = listen_tcp("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  auto [d, c, s] = dial_pair(**l, dial_opts({tcp_path(**l, "one"), tcp_path(**l, "two")}));
  std::vector<engine::FlowStats> flows{(*c)->stats()};
  for (auto& f : (*l)->stats()) {
    flows.push_back(std::move(f));
  }
  REQUIRE_OK(engine::write_engine_status(flows, "api_test", dir));
  const std::string file = dir + "/" + std::to_string(::getpid()) + ".json";
  std::string js;
  {
    FILE* f = std::fopen(file.c_str(), "r");
    REQUIRE(f != nullptr);
    char buf[8192];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
      js.append(buf, n);
    }
    std::fclose(f);
  }
  CHECK_THAT(js, Catch::Contains("\"process\":\"api_test\""));
  CHECK_THAT(js, Catch::Contains("\"side\":\"client\""));
  CHECK_THAT(js, Catch::Contains("\"side\":\"server\""));
  CHECK_THAT(js, Catch::Contains("\"name\":\"two\""));
  CHECK_THAT(js, Catch::Contains(engine::id_hex((*c)->flow_id())));
  std::remove(file.c_str());
  ::rmdir(dir.c_str());
}
