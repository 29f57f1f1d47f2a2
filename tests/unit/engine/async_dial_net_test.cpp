// SPDX-License-Identifier: Apache-2.0
// Dialer::async_dial and Admin::async_close / async_refuse over loopback: the event-driven face
// an io-thread program (rendr-tun) uses - every completion on the Dialer's io thread, no call
// that blocks it, and the same outcomes as dial / close / refuse.
#include <rendr/common/unique_fd.hpp>
#include <rendr/engine/conn.hpp>
#include <rendr/engine/dialer.hpp>
#include <rendr/engine/errors.hpp>
#include <rendr/engine/listener.hpp>

#include "api_helpers.hpp"
#include "support/require_result.hpp"

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>

#include <netinet/in.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

using namespace rendr;
using namespace std::chrono_literals;
using namespace rendr::test::api;

namespace {

// IoThread: an io_context run by one thread (the Dialer's io, given as DialOptions::io).
struct IoThread {
  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  std::thread t{[this] { io.run(); }};
  ~IoThread() {
    work.reset();
    io.stop();
    t.join();
  }
};

// io_dialer: a Dialer over |paths| (dial_opts) running its flows on |io|.
std::unique_ptr<Dialer> io_dialer(IoThread& io, std::vector<PathSpec> paths) {
  auto o = dial_opts(std::move(paths));
  o.io = &io.io;
  auto d = Dialer::create(o);
  REQUIRE_OK(d);
  return std::move(*d);
}

engine::L3Identity identity() {
  auto id = engine::make_l3_identity(6, "10.9.8.7:51000", "203.0.113.9:80");
  REQUIRE(id);
  return *id;
}

// Outcome: what async_dial's handler saw.
struct Outcome {
  Result<ConnPtr> conn = make_error(std::errc::operation_canceled, "not run");
  bool on_io_thread = false;
};

Outcome dial_async(Dialer& d, IoThread& io, Deadline deadline) {
  std::promise<Outcome> p;
  d.async_dial(identity(), deadline, [&](Result<ConnPtr> r) {
    Outcome o;
    o.on_io_thread = std::this_thread::get_id() == io.t.get_id();
    o.conn = std::move(r);
    p.set_value(std::move(o));
  });
  auto f = p.get_future();
  REQUIRE(f.wait_for(10s) == std::future_status::ready);
  return f.get();
}

// A listening TCP socket that accepts nothing: a connect completes, a HELLO is never answered.
struct Mute {
  UniqueFd fd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  std::string address;
  Mute() {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd.get(), 16) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0);
    address = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  }
};

// read_last_then_end reads |last| from |c| (checked) and returns the read after it: the flow's
// end as the peer sees it (0 = EOF, or the error).
Result<std::size_t> read_last_then_end(Conn& c, const std::string& last) {
  std::string got(last.size(), '\0');
  auto n = c.read(std::as_writable_bytes(std::span(got)), deadline_in(5s));
  REQUIRE_OK(n);
  CHECK(got == last);
  std::byte b[1];
  return c.read_some(b, deadline_in(5s));
}

}  // namespace

TEST_CASE("engine async_dial: two tcp paths, the handler on the io thread, identity and bytes "
          "both ways",
          "[engine][async_dial]") {
  auto l = listen_tcp("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  IoThread io;
  auto d = io_dialer(io, {tcp_path(**l, "a"), tcp_path(**l, "b")});
  auto out = dial_async(*d, io, deadline_in(5s));
  REQUIRE_OK(out.conn);
  CHECK(out.on_io_thread);
  auto s = (*l)->accept(deadline_in(5s));
  REQUIRE_OK(s);
  REQUIRE((*s)->l3_identity().has_value());
  CHECK(*(*s)->l3_identity() == identity());
  // Every dialled path was ready when the handler ran (as dial returns).
  const auto st = (*out.conn)->stats();
  REQUIRE(st.paths.size() == 2);
  for (const auto& p : st.paths) {
    CHECK(p.state == engine::PathState::ready);
  }
  // Bytes both ways (blocking calls from this thread, not the io thread).
  const std::string up = "request", down = "answer!";
  REQUIRE_OK((*out.conn)->write(std::as_bytes(std::span(up))));
  std::string got(up.size(), '\0');
  auto n = (*s)->read(std::as_writable_bytes(std::span(got)), deadline_in(5s));
  REQUIRE_OK(n);
  CHECK(got == up);
  REQUIRE_OK((*s)->write(std::as_bytes(std::span(down))));
  n = (*out.conn)->read(std::as_writable_bytes(std::span(got)), deadline_in(5s));
  REQUIRE_OK(n);
  CHECK(got == down);
}

TEST_CASE("engine async_dial: a refused connect and a HELLO never answered end in errors on the "
          "io thread",
          "[engine][async_dial]") {
  IoThread io;
  SECTION("nothing listens: the connect's error") {
    Mute m;
    const std::string addr = m.address;
    m.fd.reset();  // the port is closed now
    PathSpec p;
    p.address = addr;
    auto d = io_dialer(io, {p});
    auto out = dial_async(*d, io, deadline_in(5s));
    REQUIRE_FALSE(out.conn);
    CHECK(out.on_io_thread);
    CHECK(out.conn.error().code == std::errc::connection_refused);
  }
  SECTION("a peer that never answers: timed out at the deadline, not before") {
    Mute m;
    PathSpec p;
    p.address = m.address;
    auto d = io_dialer(io, {p});
    const auto t0 = std::chrono::steady_clock::now();
    auto out = dial_async(*d, io, deadline_in(300ms));
    const auto took = std::chrono::steady_clock::now() - t0;
    REQUIRE_FALSE(out.conn);
    CHECK(out.on_io_thread);
    CHECK(out.conn.error().code == std::errc::timed_out);
    CHECK(took >= 290ms);
    CHECK(took < 3s);
  }
  SECTION("one of two paths refused: the flow lives on the other") {
    auto l = listen_tcp("127.0.0.1:0", listen_opts());
    REQUIRE_OK(l);
    Mute m;
    PathSpec dead;
    dead.address = m.address;
    m.fd.reset();
    auto d = io_dialer(io, {dead, tcp_path(**l)});
    auto out = dial_async(*d, io, deadline_in(5s));
    REQUIRE_OK(out.conn);
    CHECK((*out.conn)->stats().paths.size() == 1);
    auto s = (*l)->accept(deadline_in(5s));
    REQUIRE_OK(s);
  }
}

TEST_CASE("engine async_close / async_refuse: done on the io thread, the peer sees EOF or the "
          "refusal, the handle dropped inside done",
          "[engine][async_dial]") {
  auto l = listen_tcp("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  IoThread io;
  auto d = io_dialer(io, {tcp_path(**l)});
  const bool refuse = GENERATE(false, true);
  // The last handle dropped inside done, or only with done itself (its captures go after it ran).
  const bool drop_inside = GENERATE(true, false);
  auto out = dial_async(*d, io, deadline_in(5s));
  REQUIRE_OK(out.conn);
  auto s = (*l)->accept(deadline_in(5s));
  REQUIRE_OK(s);
  const std::string last = "last bytes";
  REQUIRE_OK((*out.conn)->write(std::as_bytes(std::span(last))));
  std::promise<std::pair<Status, bool>> p;
  // Started on the io thread, as an event-driven relay does; the Conn goes inside done.
  std::shared_ptr<Conn> conn(std::move(*out.conn));
  asio::post(io.io, [&, conn]() mutable {
    auto done = [&, conn](Status st) mutable {
      if (drop_inside) {
        conn.reset();  // ~Conn's close() must not block here
      }
      p.set_value({std::move(st), std::this_thread::get_id() == io.t.get_id()});
    };
    if (refuse) {
      conn->async_refuse(engine::RefusalCode::flow_denied, "not here", std::move(done));
    } else {
      conn->async_close(std::move(done));
    }
  });
  conn.reset();
  auto f = p.get_future();
  REQUIRE(f.wait_for(10s) == std::future_status::ready);
  auto [st, on_io] = f.get();
  CHECK(st);
  CHECK(on_io);
  // The peer reads every byte, then EOF (close) or the refusal.
  auto end = read_last_then_end(**s, last);
  if (refuse) {
    REQUIRE_FALSE(end);
    CHECK(end.error().code == make_error_code(engine::errc::flow_refused));
    REQUIRE((*s)->peer_refusal().has_value());
    CHECK((*s)->peer_refusal()->code == engine::RefusalCode::flow_denied);
  } else {
    REQUIRE_OK(end);
    CHECK(*end == 0);
  }
}

namespace {
// threads: this process's thread count (/proc/self/task).
std::size_t threads() {
  std::size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    (void)e;
    ++n;
  }
  return n;
}
}  // namespace

TEST_CASE("engine dialer: deferred paths and re-dials wait on the io thread, not a thread per "
          "flow",
          "[engine][async_dial][later]") {
  auto l = listen_tcp("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  IoThread io;
  auto o = dial_opts({tcp_path(**l, "p1"), tcp_path(**l, "p2")});
  o.io = &io.io;
  o.later_paths_after = 60s;  // still waiting when the test looks
  o.retry.enabled = true;
  auto d = Dialer::create(o);
  REQUIRE_OK(d);
  const std::size_t before = threads();
  constexpr int kFlows = 24;
  std::vector<ConnPtr> conns;
  for (int i = 0; i < kFlows; ++i) {
    auto c = i % 2 == 0 ? (*d)->dial(deadline_in(5s)) : dial_async(**d, io, deadline_in(5s)).conn;
    REQUIRE_OK(c);
    CHECK((*c)->stats().paths.size() == 1);
    conns.push_back(std::move(*c));
  }
  const std::size_t during = threads();
  INFO(kFlows << " flows, each with a deferred path waiting: threads " << before << " -> "
              << during);
  CHECK(during < before + 4);
  conns.clear();  // closing them all ends their waits
  CHECK(threads() < before + 4);
}

TEST_CASE("engine listener: set_accept_handler hands every stream flow to the io thread, waiting "
          "ones first, identities in",
          "[engine][async_dial][listener]") {
  auto l = listen_tcp("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  auto o = dial_opts({tcp_path(**l)});
  auto d = Dialer::create(o);
  REQUIRE_OK(d);
  // One flow waits in the queue before the handler is set.
  auto early = (*d)->dial(identity(), deadline_in(5s));
  REQUIRE_OK(early);
  std::mutex mu;
  std::condition_variable cv;
  std::vector<ConnPtr> got;
  std::vector<std::thread::id> on;
  (*l)->set_accept_handler([&](ConnPtr c) {
    std::lock_guard lk(mu);
    on.push_back(std::this_thread::get_id());
    got.push_back(std::move(c));
    cv.notify_all();
  });
  std::vector<ConnPtr> dialled;
  for (int i = 0; i < 3; ++i) {
    auto c = (*d)->dial(identity(), deadline_in(5s));
    REQUIRE_OK(c);
    dialled.push_back(std::move(*c));
  }
  std::unique_lock lk(mu);
  REQUIRE(cv.wait_for(lk, 5s, [&] { return got.size() == 4; }));
  // All on the listener's io thread: where its flows' executor runs.
  std::promise<std::thread::id> io_id;
  asio::post(got.front()->get_executor(), [&] { io_id.set_value(std::this_thread::get_id()); });
  const auto io = io_id.get_future().get();
  for (const auto& id : on) {
    CHECK(id == io);
  }
  for (const auto& c : got) {
    REQUIRE(c->l3_identity().has_value());
    CHECK(*c->l3_identity() == identity());
  }
  // accept() no longer sees them; with the handler gone it does again.
  lk.unlock();
  CHECK_FALSE((*l)->accept(deadline_in(100ms)));
  (*l)->set_accept_handler(nullptr);
  auto late = (*d)->dial(identity(), deadline_in(5s));
  REQUIRE_OK(late);
  CHECK((*l)->accept(deadline_in(5s)));
  // Bytes flow on a handed-out Conn (blocking calls from this thread).
  const std::string hi = "hi";
  REQUIRE_OK((*early)->write(std::as_bytes(std::span(hi))));
  std::string buf(2, '\0');
  bool found = false;
  for (auto& c : got) {
    if (c->flow_id() == (*early)->flow_id()) {
      auto n = c->read(std::as_writable_bytes(std::span(buf)), deadline_in(5s));
      REQUIRE_OK(n);
      found = buf == hi;
    }
  }
  CHECK(found);
}

TEST_CASE("engine listener: set_packet_accept_handler hands packet flows over, stream flows "
          "still wait for accept()",
          "[engine][async_dial][listener]") {
  auto l = listen_tcp("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  auto d = Dialer::create(dial_opts({tcp_path(**l)}));
  REQUIRE_OK(d);
  std::promise<PacketConnPtr> got;
  (*l)->set_packet_accept_handler([&](PacketConnPtr c) { got.set_value(std::move(c)); });
  auto udp = engine::make_l3_identity(17, "10.0.0.2:5000", "198.51.100.53:53");
  REQUIRE(udp);
  auto pc = (*d)->dial_packet(*udp, deadline_in(5s));
  REQUIRE_OK(pc);
  auto f = got.get_future();
  REQUIRE(f.wait_for(5s) == std::future_status::ready);
  auto s = f.get();
  REQUIRE(s->l3_identity().has_value());
  CHECK(*s->l3_identity() == *udp);
  const std::string ping = "ping";
  REQUIRE_OK((*pc)->write(std::as_bytes(std::span(ping))));
  std::vector<std::byte> pkt;
  auto r = s->read(pkt, deadline_in(5s));
  REQUIRE_OK(r);
  CHECK(*r);
  CHECK(pkt.size() == ping.size());
  // A stream flow is not the packet handler's: accept() gets it.
  auto c = (*d)->dial(deadline_in(5s));
  REQUIRE_OK(c);
  CHECK((*l)->accept(deadline_in(5s)));
}

TEST_CASE("engine conn: a handle dropped on the io thread closes the flow without waiting for "
          "that thread",
          "[engine][async_dial]") {
  auto l = listen_tcp("127.0.0.1:0", listen_opts());
  REQUIRE_OK(l);
  IoThread io;
  auto d = io_dialer(io, {tcp_path(**l)});
  std::promise<bool> dropped;
  const std::string last = "bye";
  d->async_dial(identity(), deadline_in(5s), [&](Result<ConnPtr> c) {
    if (!c) {
      dropped.set_value(false);
      return;
    }
    (void)(*c)->write_some(std::as_bytes(std::span(last)));  // fits: no wait
    c->reset();  // ~Conn on the io thread: close() must not wait for this thread
    dropped.set_value(true);
  });
  auto f = dropped.get_future();
  REQUIRE(f.wait_for(10s) == std::future_status::ready);
  REQUIRE(f.get());
  auto s = (*l)->accept(deadline_in(5s));
  REQUIRE_OK(s);
  auto end = read_last_then_end(**s, last);
  REQUIRE_OK(end);
  CHECK(*end == 0);  // BYE(normal): EOF, the flow closed cleanly
}
