// SPDX-License-Identifier: Apache-2.0
// repair/'s error paths, driven through FakeSys (no kernel, no privileges, no network): missing
// CAP_NET_ADMIN, kernels without TCP_REPAIR_WINDOW, and a failure at every single step of
// checkpoint and restore. The guarantees under test are the ones repair.hpp promises: EPERM names
// the capability and the userstack fallback; a failed checkpoint leaves the caller's socket
// working (thawed); a failed restore closes its socket while still in repair mode (silently) and
// never switches repair off; an invalid snapshot is refused before any syscall.
#include "fake_sys.hpp"
#include "support/require_result.hpp"
#include "support/snapshot_samples.hpp"

#include <rendr/repair/repair.hpp>

#include <catch2/catch.hpp>

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <string>

using namespace rendr;
using namespace rendr::repair;
using rendr::repair::test::Call;
using rendr::repair::test::FakeSys;
using rendr::repair::test::Op;
using namespace rendr::repair::test;

namespace {

std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    ++n;
  }
  return n;
}

void require_cap_hint(const Error& e) {
  INFO("error: " << e.message());
  CHECK(e.code == std::errc::operation_not_permitted);
  CHECK_THAT(e.message(), Catch::Contains("CAP_NET_ADMIN"));
  // It names what helps, and no method this build does not have (no userstack yet).
  CHECK_THAT(e.message(), Catch::Contains("rendrctl status"));
  CHECK_THAT(e.message(), !Catch::Contains("userstack"));
}

}  // namespace

// ---- without CAP_NET_ADMIN ------------------------------------------------------------------

TEST_CASE("checkpoint without CAP_NET_ADMIN fails with EPERM naming the capability",
          "[repair][errors][cap]") {
  FakeSys fake;
  const int fd = source(fake);
  fake.fail_if([](const Call& c) { return c.is_set(IPPROTO_TCP, TCP_REPAIR); }, EPERM);
  Repairer rep(fake, quiet());
  auto r = rep.checkpoint(fd);
  REQUIRE_FALSE(r.ok());
  require_cap_hint(r.error());
  CHECK_THAT(r.error().message(), Catch::Contains("10.99.0.1:443->10.0.1.2:51000"));
  // Nothing changed: the caller's socket is open, not in repair mode, nothing else was tried.
  CHECK(fake.is_open(fd));
  CHECK_FALSE(fake.sock(fd).repair);
  INFO(trace(fake.calls()));
  CHECK(is_repair_on(fake.calls().back()));
  CHECK(count_if(fake.calls(), is_repair_off) == 0);
}

TEST_CASE("restore without CAP_NET_ADMIN fails with EPERM naming the capability",
          "[repair][errors][cap]") {
  FakeSys fake;
  fake.fail_if([](const Call& c) { return c.is_set(IPPROTO_TCP, TCP_REPAIR); }, EPERM);
  Repairer rep(fake, quiet());
  const auto samples = rendr::test::sample_snapshots();
  auto r = rep.restore(samples.at(1).snapshot);
  REQUIRE_FALSE(r.ok());
  require_cap_hint(r.error());
  CHECK_THAT(r.error().message(), Catch::Contains("restore "));
  INFO(trace(fake.calls()));
  REQUIRE(fake.created().size() == 1);
  CHECK(fake.closed(0));
  CHECK(is_repair_on(fake.calls().back()));  // nothing after the refused TCP_REPAIR
}

TEST_CASE("thaw without CAP_NET_ADMIN fails with EPERM and leaves the socket to the caller",
          "[repair][errors][cap]") {
  FakeSys fake;
  const int fd = source(fake);
  Repairer rep(fake, quiet());
  auto cp = rep.checkpoint(fd);
  REQUIRE_OK(cp);
  REQUIRE(fake.sock(fd).repair);
  fake.fail_if([](const Call& c) { return is_repair_off(c); }, EPERM);
  auto r = rep.thaw(std::move(cp->socket));
  REQUIRE_FALSE(r.ok());
  require_cap_hint(r.error());
  CHECK_THAT(r.error().message(), Catch::Contains("thaw "));
  // The RepairSocket was not consumed: the caller can retry (or release) once privileged.
  REQUIRE(cp->socket.valid());
  fake.clear_faults();
  auto again = rep.thaw(std::move(cp->socket));
  REQUIRE_OK(again);
  CHECK_FALSE(fake.sock(fd).repair);
  CHECK(fake.sock(again->get()).state == TCP_ESTABLISHED);
}

TEST_CASE("probe_tcp_repair without CAP_NET_ADMIN fails with EPERM and closes its socket",
          "[repair][errors][cap]") {
  FakeSys fake;
  fake.fail_if([](const Call& c) { return c.is_set(IPPROTO_TCP, TCP_REPAIR); }, EPERM);
  auto r = probe_tcp_repair(fake);
  REQUIRE_FALSE(r.ok());
  require_cap_hint(r.error());
  CHECK_THAT(r.error().message(), Catch::Contains("probe"));
  REQUIRE(fake.created().size() == 1);
  CHECK(fake.closed(0));
  CHECK(fake.calls().back().op == Op::close);

  FakeSys ok;
  REQUIRE_OK(probe_tcp_repair(ok));
  REQUIRE(ok.created().size() == 1);
  CHECK(ok.closed(0));
}

TEST_CASE("every EPERM during restore names the capability", "[repair][errors][cap]") {
  // SO_MARK, SO_*BUFFORCE and IP_TRANSPARENT need CAP_NET_ADMIN as well.
  const auto samples = rendr::test::sample_snapshots();
  TcpSnapshot snap = samples.at(1).snapshot;  // established, queues, mark set
  REQUIRE(snap.options.mark != 0);
  RestoreOptions opts;
  opts.transparent = true;
  for (int name : {SO_MARK, SO_RCVBUFFORCE, IP_TRANSPARENT}) {
    FakeSys fake;
    fake.fail_if([name](const Call& c) { return c.op == Op::setsockopt && c.name == name; },
                 EPERM);
    Repairer rep(fake, quiet());
    auto r = rep.restore(snap, opts);
    INFO("option " << name);
    REQUIRE_FALSE(r.ok());
    require_cap_hint(r.error());
    CHECK(fake.closed(0));
  }
}

// ---- kernels without TCP_REPAIR_WINDOW ------------------------------------------------------

TEST_CASE("ENOPROTOOPT on TCP_REPAIR_WINDOW yields has_window=false, not an error",
          "[repair][errors][window]") {
  FakeSys fake;
  const int fd = source(fake);
  fake.sock(fd).window_supported = false;
  Repairer rep(fake, quiet());
  auto cp = rep.checkpoint(fd);
  REQUIRE_OK(cp);
  CHECK_FALSE(cp->snapshot.has_window);
  CHECK(cp->snapshot.window == TcpWindow{});
  CHECK(fake.sock(fd).repair);  // the checkpoint holds it frozen

  // Restore of such a snapshot never touches TCP_REPAIR_WINDOW.
  FakeSys target;
  Repairer rep2(target, quiet());
  auto fd2 = rep2.restore(cp->snapshot);
  REQUIRE_OK(fd2);
  for (const auto& c : target.calls()) {
    INFO(c.describe());
    CHECK_FALSE(c.is_set(IPPROTO_TCP, TCP_REPAIR_WINDOW));
  }
}

TEST_CASE("TCP_REPAIR_WINDOW is captured when the kernel has it, and other errors fail",
          "[repair][errors][window]") {
  FakeSys fake;
  const int fd = source(fake);
  fake.sock(fd).window = tcp_repair_window{7, 5000, 6000, 7000, 5700};
  Repairer rep(fake, quiet());
  {
    auto cp = rep.checkpoint(fd);
    REQUIRE_OK(cp);
    CHECK(cp->snapshot.has_window);
    CHECK(cp->snapshot.window == TcpWindow{7, 5000, 6000, 7000, 5700});
    auto th = rep.thaw(std::move(cp->socket));
    REQUIRE_OK(th);
  }
  fake.fail_if([](const Call& c) { return c.is_get(IPPROTO_TCP, TCP_REPAIR_WINDOW); }, EIO, 1);
  auto cp = rep.checkpoint(fd);
  REQUIRE_ERROR(cp, std::errc::io_error, "TCP_REPAIR_WINDOW");
  CHECK_FALSE(fake.sock(fd).repair);
}

// ---- checkpoint: refusals and a failure at every step ---------------------------------------

TEST_CASE("checkpoint refuses unsupported sockets before entering repair mode",
          "[repair][errors][checkpoint]") {
  FakeSys fake;
  Repairer rep(fake, quiet());
  SECTION("listening or closing states, named") {
    const int fd = source(fake);
    fake.sock(fd).state = TCP_TIME_WAIT;
    REQUIRE_ERROR(rep.checkpoint(fd), std::errc::not_supported, "TIME_WAIT");
  }
  SECTION("not TCP") {
    const int fd = source(fake);
    fake.sock(fd).type = SOCK_DGRAM;
    REQUIRE_ERROR(rep.checkpoint(fd), std::errc::protocol_not_supported, "not a TCP socket");
  }
  SECTION("not connected") {
    const int fd = source(fake);
    fake.sock(fd).connected = false;
    REQUIRE_ERROR(rep.checkpoint(fd), std::errc::not_connected, "connected");
  }
  SECTION("not a socket the fake knows: EBADF from the first call") {
    FakeSys other;
    const int fd = source(other);
    REQUIRE_ERROR(rep.checkpoint(fd), std::errc::bad_file_descriptor, "SO_TYPE");
  }
  INFO(trace(fake.calls()));
  CHECK(count_if(fake.calls(), is_repair_on) == 0);
}

TEST_CASE("checkpoint of a socket whose queues keep changing fails with EAGAIN and thaws",
          "[repair][errors][checkpoint]") {
  FakeSys fake;
  const int fd = source(fake);
  fake.sock(fd).kernel_grows_recv_queue = true;  // traffic was not frozen
  Repairer rep(fake, quiet());
  REQUIRE_ERROR(rep.checkpoint(fd), std::errc::resource_unavailable_try_again, "freeze");
  CHECK_FALSE(fake.sock(fd).repair);
  CHECK(is_repair_off(fake.calls().back()));
}

TEST_CASE("checkpoint failing at any step after entering repair mode thaws the socket",
          "[repair][errors][checkpoint]") {
  const bool v6 = GENERATE(false, true);
  // Reference run: every call a successful checkpoint makes.
  std::vector<Call> ref;
  {
    FakeSys fake;
    const int fd = source(fake, v6);
    Repairer rep(fake, quiet());
    auto cp = rep.checkpoint(fd);
    REQUIRE_OK(cp);
    CHECK(cp->snapshot.send_queue.size() == 1200);
    CHECK(cp->snapshot.send_unsent == 200);
    CHECK(cp->snapshot.recv_queue.size() == 700);
    ref = fake.calls();
  }
  std::size_t repair_on = ref.size();
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (is_repair_on(ref[i])) {
      repair_on = i;
      break;
    }
  }
  REQUIRE(repair_on < ref.size());
  REQUIRE(ref.size() >= repair_on + 25);  // the capture is really exercised

  for (std::size_t i = 0; i < ref.size(); ++i) {
    FakeSys fake;
    const int fd = source(fake, v6);
    fake.fail_nth(i, EIO);
    Repairer rep(fake, quiet());
    const std::size_t fds_before = open_fds();
    {
      auto r = rep.checkpoint(fd);
      INFO("failing call #" << i << " " << ref[i].describe() << "\n" << trace(fake.calls()));
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code.value() == EIO);
      CHECK_THAT(r.error().message(), Catch::Contains("checkpoint"));
      CHECK_FALSE(fake.sock(fd).repair);  // the caller's fd keeps working
      CHECK(fake.is_open(fd));
      if (i <= repair_on) {
        CHECK(count_if(fake.calls(), is_repair_off) == 0);
      } else {
        // Thawed after the failure: the last word on TCP_REPAIR was "off".
        REQUIRE(count_if(fake.calls(), is_repair_off) == 1);
        CHECK(is_repair_off(fake.calls().back()));
      }
    }
    CHECK(open_fds() == fds_before);  // the duplicate taken for the RepairSocket is gone
  }
}

// ---- restore: invalid input and a failure at every step before repair-off --------------------

TEST_CASE("restore rejects an invalid snapshot before any syscall", "[repair][errors][restore]") {
  const auto samples = rendr::test::sample_snapshots();
  TcpSnapshot bad = samples.at(1).snapshot;
  SECTION("unsent beyond the queue") {
    bad.send_unsent = static_cast<std::uint32_t>(bad.send_queue.size() + 1);
  }
  SECTION("unsupported state") { bad.state = TcpState::listen; }
  SECTION("families differ") { bad.tuple.remote = *Endpoint::parse("[fd00::2]:80"); }
  SECTION("port 0") { bad.tuple.local.port = 0; }
  SECTION("FIN flags contradict the state") { bad.peer_fin = true; }
  FakeSys fake;
  Repairer rep(fake, quiet());
  auto r = rep.restore(bad);
  REQUIRE_ERROR(r, std::errc::invalid_argument, "restore ");
  CHECK(fake.calls().empty());
  CHECK(fake.created().empty());
}

TEST_CASE("restore rebuilds every sample snapshot in the kernel's order",
          "[repair][restore]") {
  for (const auto& sample : rendr::test::sample_snapshots()) {
    INFO(sample.name);
    const TcpSnapshot& snap = sample.snapshot;
    FakeSys fake;
    Repairer rep(fake, quiet());
    auto fd = rep.restore(snap);
    REQUIRE_OK(fd);
    INFO(trace(fake.calls()));
    const auto& s = fake.created_sock(0);
    CHECK_FALSE(s.repair);
    CHECK(s.recv_seq == snap.recv_seq);
    CHECK(s.send_seq == snap.send_seq);
    CHECK(s.recv_queue == snap.recv_queue);
    CHECK(s.send_queue.size() == snap.send_unacked());
    CHECK(s.live_sends == snap.send_unsent);
    CHECK(s.peer_fin == snap.peer_fin);
    CHECK(s.our_fin == snap.fin_queued);
    // Ordering: repair on first; options before queue refills; window after them; off last of
    // the repair-mode steps.
    const auto& calls = fake.calls();
    auto first = [&](auto pred) {
      for (std::size_t i = 0; i < calls.size(); ++i) {
        if (pred(calls[i])) {
          return i;
        }
      }
      return calls.size();
    };
    const auto on = first(is_repair_on);
    const auto opts = first([](const Call& c) { return c.is_set(IPPROTO_TCP, TCP_REPAIR_OPTIONS); });
    const auto refill = first([](const Call& c) { return c.op == Op::send; });
    const auto window = first([](const Call& c) { return c.is_set(IPPROTO_TCP, TCP_REPAIR_WINDOW); });
    const auto off = first(is_repair_off);
    CHECK(on == 1);  // right after socket()
    CHECK(on < opts);
    CHECK(opts < off);
    CHECK(off < calls.size());
    if (snap.has_window) {
      CHECK(window < off);
      if (!snap.recv_queue.empty() || snap.send_unacked() > 0) {
        CHECK(refill < window);
      }
    } else {
      CHECK(window == calls.size());
    }
  }
}

TEST_CASE("restore failing at any step before repair-off closes its socket silently",
          "[repair][errors][restore]") {
  int checked = 0;
  // Both recipes: with the write_seq read-back (a kernel before 4.18) and without.
  for (const char* release : {"6.1.0", "4.17.0"}) {
    for (const auto& sample : rendr::test::sample_snapshots()) {
      const TcpSnapshot& snap = sample.snapshot;
      std::vector<Call> ref;
      {
        FakeSys fake;
        fake.kernel_release = release;
        Repairer rep(fake, quiet());
        auto fd = rep.restore(snap);
        INFO(sample.name);
        REQUIRE_OK(fd);
        ref = fake.calls();
      }
      std::size_t off = ref.size();
      std::size_t injected = ref.size();  // first raw sendto: a forged peer FIN
      for (std::size_t i = 0; i < ref.size(); ++i) {
        if (is_repair_off(ref[i]) && off == ref.size()) {
          off = i;
        }
        if (ref[i].op == Op::sendto && injected == ref.size()) {
          injected = i;
        }
      }
      REQUIRE(off < ref.size());
      // FIN_WAIT2: the forged ACK of our FIN (from its netns lookup on) is best effort.
      std::size_t soft_from = ref.size();
      for (std::size_t i = 0; i < off && snap.state == TcpState::fin_wait2; ++i) {
        if (ref[i].is_get(SOL_SOCKET, SO_NETNS_COOKIE)) {
          soft_from = i;
          break;
        }
      }

      for (std::size_t i = 0; i < off; ++i) {
        if (ref[i].op == Op::close) {
          continue;  // closing the raw injection socket: its result is irrelevant
        }
        FakeSys fake;
        fake.kernel_release = release;
        fake.fail_nth(i, EIO);
        Repairer rep(fake, quiet());
        auto r = rep.restore(snap);
        INFO(sample.name << " on " << release << ": failing call #" << i << " " << ref[i].describe() << "\n"
                         << trace(fake.calls()));
        if (r.ok()) {
          // Only the bounded wait for the forged FIN polls, so one failed read there is retried.
          const bool poll_step = i > injected && (ref[i].is_set(IPPROTO_TCP, TCP_REPAIR_QUEUE) ||
                                                  ref[i].is_get(IPPROTO_TCP, TCP_QUEUE_SEQ));
          CHECK((poll_step || i >= soft_from));
          continue;
        }
        ++checked;
        CHECK(r.error().code.value() == EIO);
        CHECK_THAT(r.error().message(), Catch::Contains("restore " + snap.tuple.to_string()));
        // Silently: repair mode was never left, nothing was sent outside it, and every socket
        // restore opened (the TCP socket, a raw injection socket) is closed again.
        CHECK(count_if(fake.calls(), is_repair_off) == 0);
        for (std::size_t k = 0; k < fake.created().size(); ++k) {
          CHECK(fake.closed(k));
          CHECK(fake.created_sock(k).live_sends == 0);
        }
      }
    }
  }
  CHECK(checked >= 550);
}

TEST_CASE("thaw of an empty RepairSocket is EBADF", "[repair][errors]") {
  FakeSys fake;
  Repairer rep(fake, quiet());
  REQUIRE_ERROR(rep.thaw(RepairSocket{}), std::errc::bad_file_descriptor, "thaw");
  CHECK(fake.calls().empty());
}

TEST_CASE("SO_REUSEADDR survives checkpoint + thaw and checkpoint + restore",
          "[repair][reuseaddr]") {
  // The kernel clears SO_REUSEADDR when repair mode is left (and reports 2 while it is on): the
  // saved value must be set again, or the connection's TIME_WAIT blocks a restarting server.
  const bool reuse = GENERATE(false, true);
  FakeSys fake;
  const int fd = source(fake);
  fake.sock(fd).opts[{SOL_SOCKET, SO_REUSEADDR}] = reuse ? 1 : 0;
  Repairer rep(fake, quiet());
  auto cp = rep.checkpoint(fd);
  REQUIRE_OK(cp);
  CHECK(cp->snapshot.options.reuseaddr == reuse);
  FakeSys target;
  Repairer rep2(target, quiet());
  auto restored = rep2.restore(cp->snapshot);
  REQUIRE_OK(restored);
  CHECK(target.sock(restored->get()).opts[{SOL_SOCKET, SO_REUSEADDR}] == (reuse ? 1 : 0));
  auto thawed = rep.thaw(std::move(cp->socket));
  REQUIRE_OK(thawed);
  CHECK(fake.sock(fd).opts[{SOL_SOCKET, SO_REUSEADDR}] == (reuse ? 1 : 0));
  // A checkpoint that fails after entering repair mode thaws the socket the same way.
  fake.sock(fd).kernel_grows_recv_queue = true;
  REQUIRE_ERROR(rep.checkpoint(fd), std::errc::resource_unavailable_try_again, "freeze");
  CHECK_FALSE(fake.sock(fd).repair);
  CHECK(fake.sock(fd).opts[{SOL_SOCKET, SO_REUSEADDR}] == (reuse ? 1 : 0));
}

TEST_CASE("the peer's window from an ACK hint is used also when the ACK acknowledges nothing new",
          "[repair][peer_ack]") {
  // The peer closed its window, then opened it while the freeze dropped its window updates (same
  // ACK number as before): the hint's window must become the restored socket's send window.
  FakeSys fake;
  const int fd = source(fake);
  fake.sock(fd).window = tcp_repair_window{5700, 0, 65535, 64000, 5700};  // peer window closed
  Repairer rep(fake, quiet());
  auto cp = rep.checkpoint(fd);
  REQUIRE_OK(cp);
  const TcpSnapshot& snap = cp->snapshot;
  REQUIRE(snap.window.snd_wnd == 0);
  REQUIRE(snap.snd_wscale == 7);
  const std::uint32_t rcv_nxt = snap.recv_seq + static_cast<std::uint32_t>(snap.recv_queue.size());
  const std::uint32_t ahead = GENERATE(0U, 300U);  // a window update; an ACK of 300 bytes too
  const PeerAck hint{snap.send_seq + ahead, 1000};  // 1000 << 7 = 128000 bytes

  SECTION("at offer: restore_staged(RestoreOptions::peer_ack)") {
    FakeSys target;
    Repairer rep2(target, quiet());
    RestoreOptions opts;
    opts.peer_ack = hint;
    auto staged = rep2.restore_staged(snap, opts);
    REQUIRE_OK(staged);
    CHECK(staged->snapshot().send_seq == snap.send_seq + ahead);
    CHECK(staged->snapshot().window.snd_wnd == 128000);
    const auto& w = target.created_sock(0).window;
    CHECK(w.snd_wnd == 128000);
    CHECK(w.max_window == 128000);
    CHECK(w.snd_wl1 == rcv_nxt);
  }
  SECTION("at commit: activate(PeerAck), before repair mode is left") {
    FakeSys target;
    Repairer rep2(target, quiet());
    auto staged = rep2.restore_staged(snap);
    REQUIRE_OK(staged);
    REQUIRE(target.created_sock(0).window.snd_wnd == 0);
    target.clear_calls();
    auto live = rep2.activate(std::move(*staged), hint);
    REQUIRE_OK(live);
    const auto& w = target.created_sock(0).window;
    CHECK(w.snd_wnd == ahead + 128000);  // the right edge is the ACK plus its window
    CHECK(w.max_window == ahead + 128000);
    CHECK(w.snd_wl1 == rcv_nxt);
    const auto& calls = target.calls();
    std::size_t set_window = calls.size();
    std::size_t off = calls.size();
    for (std::size_t i = 0; i < calls.size(); ++i) {
      if (calls[i].is_set(IPPROTO_TCP, TCP_REPAIR_WINDOW)) {
        set_window = i;
      }
      if (is_repair_off(calls[i]) && off == calls.size()) {
        off = i;
      }
    }
    INFO(trace(calls));
    CHECK(set_window < off);
  }
  SECTION("an ACK beyond what was sent is ignored") {
    FakeSys target;
    Repairer rep2(target, quiet());
    auto staged = rep2.restore_staged(snap);
    REQUIRE_OK(staged);
    auto live = rep2.activate(std::move(*staged), PeerAck{snap.send_seq + 5000, 1000});
    REQUIRE_OK(live);
    CHECK(target.created_sock(0).window.snd_wnd == 0);
  }
}

TEST_CASE("restore sets the saved MSS as TCP_MAXSEG before the repair-mode connect",
          "[repair][mss]") {
  // connect() sizes segments from the clamp in force then (536 by default); TCP_REPAIR_OPTIONS
  // changes only the clamp afterwards.
  const auto samples = rendr::test::sample_snapshots();
  const TcpSnapshot& snap = samples.at(1).snapshot;
  FakeSys fake;
  Repairer rep(fake, quiet());
  REQUIRE_OK(rep.restore(snap));
  const auto& calls = fake.calls();
  INFO(trace(calls));
  std::size_t set_mss = calls.size();
  std::size_t connect = calls.size();
  for (std::size_t i = 0; i < calls.size(); ++i) {
    if (calls[i].is_set(IPPROTO_TCP, TCP_MAXSEG)) {
      set_mss = i;
    }
    if (calls[i].op == Op::connect) {
      connect = i;
    }
  }
  REQUIRE(set_mss < calls.size());
  CHECK(calls[set_mss].value == static_cast<int>(snap.mss_clamp));
  CHECK(set_mss < connect);
}

TEST_CASE("a FIN_WAIT2 snapshot is restored as FIN_WAIT2, its FIN acknowledged",
          "[repair][halfclose]") {
  for (const auto& sample : rendr::test::sample_snapshots()) {
    if (sample.snapshot.state != TcpState::fin_wait2) {
      continue;
    }
    INFO(sample.name);
    FakeSys fake;
    Repairer rep(fake, quiet());
    auto staged = rep.restore_staged(sample.snapshot);
    REQUIRE_OK(staged);
    // Already in repair mode, before anything can be transmitted.
    const auto& s = fake.created_sock(0);
    CHECK(s.state == TCP_FIN_WAIT2);
    CHECK(s.our_fin);
    CHECK(s.our_fin_acked);
  }
}

// ---- refusals read well ---------------------------------------------------------------------

namespace {

// require_refusal: |e| has |code| and says its cause, ending with |tail|, without the code's
// errno text (a refusal is a condition, not a failed call).
void require_refusal(const Error& e, std::errc code, const std::string& tail) {
  INFO("message: " << e.message());
  CHECK(e.code == code);
  CHECK_THAT(e.message(), Catch::EndsWith(tail));
  CHECK_THAT(e.message(), !Catch::Contains(e.code.message()));
}

// Rigged: a ForwardingSys whose restore-side reads or raw sends misbehave on demand.
struct Rigged : ForwardingSys {
  using ForwardingSys::ForwardingSys;
  int seq_skew = 0;          // added to every TCP_QUEUE_SEQ read
  bool drop_raw = false;     // raw sendto reports success but delivers nothing
  ssize_t raw_short = 0;     // raw sendto takes this many bytes fewer
  int getsockopt(int fd, int l, int n, void* v, socklen_t* len) override {
    int r = ForwardingSys::getsockopt(fd, l, n, v, len);
    if (r == 0 && l == IPPROTO_TCP && n == TCP_QUEUE_SEQ) {
      *static_cast<int*>(v) += seq_skew;
    }
    return r;
  }
  ssize_t sendto(int fd, const void* b, std::size_t n, int f, const sockaddr* a,
                 socklen_t al) override {
    if (drop_raw) {
      return static_cast<ssize_t>(n);
    }
    ssize_t r = ForwardingSys::sendto(fd, b, n, f, a, al);
    return r > 0 ? r - raw_short : r;
  }
};

}  // namespace

TEST_CASE("refusals say their cause without an unrelated errno text", "[repair][errors][text]") {
  const auto samples = rendr::test::sample_snapshots();
  SECTION("checkpoint of a socket that is not TCP") {
    FakeSys fake;
    const int fd = source(fake);
    fake.sock(fd).type = SOCK_DGRAM;
    Repairer rep(fake, quiet());
    auto r = rep.checkpoint(fd);
    REQUIRE_FALSE(r.ok());
    require_refusal(r.error(), std::errc::protocol_not_supported,
                    "checkpoint: fd " + std::to_string(fd) + " is not a TCP socket");
  }
  SECTION("checkpoint of an unsupported state") {
    FakeSys fake;
    const int fd = source(fake);
    fake.sock(fd).state = TCP_TIME_WAIT;
    Repairer rep(fake, quiet());
    auto r = rep.checkpoint(fd);
    REQUIRE_FALSE(r.ok());
    require_refusal(r.error(), std::errc::not_supported,
                    "TCP state TIME_WAIT is not supported (supported: ESTABLISHED, FIN_WAIT1, "
                    "FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING)");
  }
  SECTION("checkpoint of traffic that was not frozen") {
    FakeSys fake;
    const int fd = source(fake);
    fake.sock(fd).kernel_grows_recv_queue = true;
    Repairer rep(fake, quiet());
    auto r = rep.checkpoint(fd);
    REQUIRE_FALSE(r.ok());
    require_refusal(r.error(), std::errc::resource_unavailable_try_again,
                    "freeze the flow's traffic before checkpointing");
  }
  SECTION("restore of an invalid snapshot") {
    TcpSnapshot bad = samples.at(1).snapshot;
    bad.snd_wscale = 15;
    FakeSys fake;
    Repairer rep(fake, quiet());
    auto r = rep.restore(bad);
    REQUIRE_FALSE(r.ok());
    require_refusal(r.error(), std::errc::invalid_argument, "snapshot: window scale above 14");
    CHECK_THAT(r.error().message(), Catch::StartsWith("restore "));
  }
  SECTION("restore whose read-back differs from the snapshot") {
    FakeSys fake;
    fake.kernel_release = "4.17.19";
    Rigged rig(fake);
    rig.seq_skew = 1;
    Repairer rep(rig, quiet());
    const TcpSnapshot& snap = samples.at(1).snapshot;
    auto r = rep.restore(snap);
    REQUIRE_FALSE(r.ok());
    // write_seq is read back on a kernel before 4.18 (it rewrote it in connect); the sample's
    // FIN was not sent, so its unacked bytes are queued later, by activate.
    REQUIRE_FALSE(snap.fin_sent);
    require_refusal(r.error(), std::errc::io_error,
                    "restore validation: write_seq is " + std::to_string(snap.send_seq + 1) +
                        ", snapshot says " + std::to_string(snap.send_seq));
  }
  SECTION("restore whose read-back fails says why, keeping EIO") {
    FakeSys fake;
    fake.kernel_release = "3.10.0-1160.el7.x86_64";
    Repairer rep(fake, quiet());
    fake.fail_if([](const Call& c) { return c.is_get(IPPROTO_TCP, TCP_QUEUE_SEQ); }, ENOTCONN);
    auto r = rep.restore(samples.at(1).snapshot);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == std::errc::io_error);
    CHECK_THAT(r.error().message(),
               Catch::EndsWith("restore validation: cannot read sequences (get TCP_QUEUE_SEQ: " +
                               std::generic_category().message(ENOTCONN) + ")"));
  }
  SECTION("EPERM from TCP_REPAIR_OPTIONS is not blamed on CAP_NET_ADMIN") {
    FakeSys fake;
    fake.fail_if([](const Call& c) { return c.is_set(IPPROTO_TCP, TCP_REPAIR_OPTIONS); }, EPERM);
    Repairer rep(fake, quiet());
    auto r = rep.restore(samples.at(1).snapshot);
    REQUIRE_FALSE(r.ok());
    require_refusal(r.error(), std::errc::operation_not_permitted,
                    "TCP_REPAIR_OPTIONS: refused by the kernel (only before any data was sent, "
                    "in ESTABLISHED)");
    CHECK_THAT(r.error().message(), !Catch::Contains("CAP_NET_ADMIN"));
  }
  for (const auto& sample : samples) {
    if (!sample.snapshot.peer_fin) {
      continue;
    }
    DYNAMIC_SECTION("a re-injected peer FIN that never arrives: " << sample.name) {
      FakeSys fake;
      Rigged rig(fake);
      rig.drop_raw = true;
      Repairer rep(rig, quiet());
      auto r = rep.restore(sample.snapshot);
      REQUIRE_FALSE(r.ok());
      require_refusal(r.error(), std::errc::timed_out,
                      "the re-injected peer FIN was not accepted within 200 ms (did a firewall "
                      "or freeze drop it?)");
    }
    DYNAMIC_SECTION("a raw send that takes part of the packet: " << sample.name) {
      FakeSys fake;
      Rigged rig(fake);
      rig.raw_short = 1;
      Repairer rep(rig, quiet());
      auto r = rep.restore(sample.snapshot);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().code == std::errc::io_error);
      CHECK_THAT(r.error().message(), Catch::Contains(" bytes"));
      CHECK_THAT(r.error().message(), Catch::Matches(".*inject: sendto \\S+ took \\d+ of \\d+ bytes"));
    }
    break;  // one sample with the peer's FIN is enough
  }
}
