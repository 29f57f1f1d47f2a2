// SPDX-License-Identifier: Apache-2.0
// repair/'s syscall budget, driven through FakeSys: which calls an idle checkpoint and restore
// make, which ones are skipped when they could only repeat what is known (options equal to the
// namespace default, a plain bind that works, no ACK debt), and that options read before the
// freeze keep their reads out of the checkpoint.
#include "fake_sys.hpp"
#include "support/packet.hpp"
#include "support/require_result.hpp"
#include "support/snapshot_samples.hpp"

#include <rendr/repair/repair.hpp>

#include <catch2/catch.hpp>

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>

using namespace rendr;
using namespace rendr::repair;
using namespace rendr::repair::test;

TEST_CASE("an idle checkpoint + restore makes a bounded number of syscalls",
          "[repair][syscalls]") {
  // Empty queues, every option at its default. Each syscall either reads state, sets it, or
  // validates something that can really differ: 73 at first, 58 after re-reads, empty-queue peeks
  // and read-backs that could only repeat what a setter's success said were cut, 47 now (the
  // socket type read only to explain a failure, no SIOCOUTQNSD of an empty send queue, both
  // buffer sizes in one SO_MEMINFO, IP_FREEBIND only when a plain bind fails, no write_seq read-back since 4.18,
  // options equal to the netns default not set, no ACK kick without ACK debt). FakeSys has no
  // SO_NETNS_COOKIE, so TTL and congestion control are still set here (17 restore calls).
  FakeSys fake;
  const int fd = fake.add_connected("10.99.0.1:443", "10.0.1.2:51000");
  auto& s = fake.sock(fd);
  s.tcpi_options = TCPI_OPT_SACK | TCPI_OPT_TIMESTAMPS | TCPI_OPT_WSCALE;
  s.snd_wscale = 7;
  s.rcv_wscale = 7;
  s.recv_seq = 5000;
  s.send_seq = 9000;
  s.window = tcp_repair_window{5000, 64000, 65535, 64000, 5000};
  Repairer rep(fake, quiet());
  auto cp = rep.checkpoint(fd);
  REQUIRE_OK(cp);
  const auto& c = fake.calls();
  INFO("checkpoint:\n" << trace(c));
  CHECK(c.size() <= 30);
  // Kept: rcv_nxt read on both sides of the receive queue's length (traffic not frozen).
  std::size_t seq_reads = 0;
  for (const auto& call : c) {
    seq_reads += call.is_get(IPPROTO_TCP, TCP_QUEUE_SEQ) ? 1 : 0;
    CHECK_FALSE(call.is_get(SOL_SOCKET, SO_TYPE));
    CHECK_FALSE((call.op == Op::ioctl && call.name == SIOCOUTQNSD));
    CHECK_FALSE(call.is_get(SOL_SOCKET, SO_SNDBUF));
  }
  CHECK(seq_reads == 3);  // write_seq once, rcv_nxt twice

  FakeSys target;
  Repairer rep2(target, quiet());
  REQUIRE_OK(rep2.restore(cp->snapshot));
  const auto& r = target.calls();
  INFO("restore:\n" << trace(r));
  CHECK(r.size() <= 16);
  auto seq_reads_before_repair_off = [](const std::vector<Call>& calls) {
    std::size_t n = 0;
    for (const auto& call : calls) {
      if (is_repair_off(call)) {
        break;
      }
      n += call.is_get(IPPROTO_TCP, TCP_QUEUE_SEQ) ? 1 : 0;
      CHECK_FALSE(call.is_set(IPPROTO_IP, IP_FREEBIND));
    }
    return n;
  };
  // No write_seq read-back: since 4.18 connect leaves it alone in repair mode.
  CHECK(seq_reads_before_repair_off(r) == 0);
  CHECK(std::none_of(r.begin(), r.end(), [](const Call& k) { return k.op == Op::sendto; }));

  // A kernel before 4.18 could rewrite write_seq in connect: there it is read back.
  FakeSys old_kernel;
  old_kernel.kernel_release = "4.14.336";
  Repairer rep3(old_kernel, quiet());
  REQUIRE_OK(rep3.restore(cp->snapshot));
  INFO("restore on 4.14:\n" << trace(old_kernel.calls()));
  CHECK(seq_reads_before_repair_off(old_kernel.calls()) == 1);
}

TEST_CASE("restore reads no SO_NETNS_COOKIE when the caller names the netns",
          "[repair][syscalls]") {
  FakeSys fake;
  const int fd = fake.add_connected("10.99.0.1:443", "10.0.1.2:51000");
  fake.sock(fd).opts[{IPPROTO_TCP, TCP_KEEPIDLE}] = 7200;
  Repairer rep(fake, quiet());
  auto cp = rep.checkpoint(fd);
  REQUIRE_OK(cp);
  // Reads of the restored socket's cookie (the first socket a restore makes; the probe socket
  // that reads the netns defaults once checks its own).
  auto cookie_reads = [](const FakeSys& f) {
    return std::count_if(f.calls().begin(), f.calls().end(), [&](const Call& c) {
      return c.is_get(SOL_SOCKET, SO_NETNS_COOKIE) && c.fd == f.created().front();
    });
  };
  FakeSys target;
  target.netns_cookie = 7;
  target.socket_defaults = {{{IPPROTO_TCP, TCP_KEEPIDLE}, 7200}};
  SECTION("named: the defaults are still found and used") {
    Repairer rep2(target, quiet());
    RestoreOptions ro;
    ro.netns_cookie = 7;
    auto r = rep2.restore(cp->snapshot, ro);
    REQUIRE_OK(r);
    INFO(trace(target.calls()));
    CHECK(cookie_reads(target) == 0);
    CHECK(std::none_of(target.calls().begin(), target.calls().end(), [](const Call& c) {
      return c.is_set(IPPROTO_TCP, TCP_KEEPIDLE);
    }));
  }
  SECTION("not named: read from the restored socket") {
    Repairer rep2(target, quiet());
    REQUIRE_OK(rep2.restore(cp->snapshot));
    INFO(trace(target.calls()));
    CHECK(cookie_reads(target) >= 1);
  }
}

TEST_CASE("restore sets keepalive timing, TTL and congestion only where they differ from the "
          "netns default",
          "[repair][syscalls]") {
  FakeSys fake;
  const int fd = fake.add_connected("10.99.0.1:443", "10.0.1.2:51000");
  auto& s = fake.sock(fd);
  s.opts[{IPPROTO_TCP, TCP_KEEPIDLE}] = 7200;
  s.opts[{IPPROTO_TCP, TCP_KEEPINTVL}] = 30;  // the application's own
  s.opts[{IPPROTO_TCP, TCP_KEEPCNT}] = 9;
  s.opts[{IPPROTO_IP, IP_TTL}] = 64;
  Repairer rep(fake, quiet());
  auto cp = rep.checkpoint(fd);
  REQUIRE_OK(cp);

  FakeSys target;
  target.socket_defaults = {{{IPPROTO_TCP, TCP_KEEPIDLE}, 7200},
                            {{IPPROTO_TCP, TCP_KEEPINTVL}, 75},
                            {{IPPROTO_TCP, TCP_KEEPCNT}, 9},
                            {{IPPROTO_IP, IP_TTL}, 64}};
  auto sets = [&](int level, int name) {
    return std::count_if(target.calls().begin(), target.calls().end(), [&](const Call& c) {
      return c.is_set(level, name) && c.fd != -1 && c.fd == target.created().front();
    });
  };
  SECTION("the target netns is known (SO_NETNS_COOKIE)") {
    target.netns_cookie = 7;
    Repairer rep2(target, quiet());
    auto r = rep2.restore(cp->snapshot);
    REQUIRE_OK(r);
    INFO(trace(target.calls()));
    CHECK(sets(IPPROTO_TCP, TCP_KEEPIDLE) == 0);
    CHECK(sets(IPPROTO_TCP, TCP_KEEPINTVL) == 1);
    CHECK(sets(IPPROTO_TCP, TCP_KEEPCNT) == 0);
    CHECK(sets(IPPROTO_IP, IP_TTL) == 0);
    CHECK(sets(IPPROTO_TCP, TCP_CONGESTION) == 0);
    CHECK(target.sock(r->get()).opts[{IPPROTO_TCP, TCP_KEEPINTVL}] == 30);
    // A second restore in the same netns reads no defaults again: one probe socket in all.
    target.clear_calls();
    auto cp2 = rep.checkpoint(fake.add_connected("10.99.0.1:443", "10.0.1.2:51001"));
    REQUIRE_OK(cp2);
    REQUIRE_OK(rep2.restore(cp2->snapshot));
    CHECK(std::none_of(target.calls().begin(), target.calls().end(),
                       [](const Call& c) { return c.is_get(IPPROTO_TCP, TCP_KEEPIDLE); }));
  }
  SECTION("unknown netns: every non-zero value is set") {
    Repairer rep2(target, quiet());
    REQUIRE_OK(rep2.restore(cp->snapshot));
    INFO(trace(target.calls()));
    CHECK(sets(IPPROTO_TCP, TCP_KEEPIDLE) == 1);
    CHECK(sets(IPPROTO_TCP, TCP_KEEPINTVL) == 1);
    CHECK(sets(IPPROTO_TCP, TCP_KEEPCNT) == 1);
    CHECK(sets(IPPROTO_IP, IP_TTL) == 1);
    CHECK(sets(IPPROTO_TCP, TCP_CONGESTION) == 1);
  }
}

TEST_CASE("restore binds with IP_FREEBIND only when the address is not local",
          "[repair][restore]") {
  const auto samples = rendr::test::sample_snapshots();
  const TcpSnapshot& snap = samples.at(0).snapshot;
  const bool v6 = snap.tuple.local.family == IpFamily::v6;
  auto is_freebind = [v6](const Call& c) {
    return v6 ? c.is_set(IPPROTO_IPV6, IPV6_FREEBIND) : c.is_set(IPPROTO_IP, IP_FREEBIND);
  };
  FakeSys fake;
  Repairer rep(fake, quiet());
  SECTION("local: one bind, no freebind") {
    REQUIRE_OK(rep.restore(snap));
    CHECK(std::count_if(fake.calls().begin(), fake.calls().end(),
                        [](const Call& c) { return c.op == Op::bind; }) == 1);
    CHECK(std::none_of(fake.calls().begin(), fake.calls().end(), is_freebind));
  }
  SECTION("not local: freebind, then bind again") {
    fake.fail_if([](const Call& c) { return c.op == Op::bind; }, EADDRNOTAVAIL, 1);
    REQUIRE_OK(rep.restore(snap));
    const auto& c = fake.calls();
    INFO(trace(c));
    std::vector<std::size_t> binds;
    std::size_t fb = c.size();
    for (std::size_t i = 0; i < c.size(); ++i) {
      if (c[i].op == Op::bind) {
        binds.push_back(i);
      }
      if (is_freebind(c[i])) {
        fb = i;
      }
    }
    REQUIRE(binds.size() == 2);
    CHECK(binds[0] < fb);
    CHECK(fb < binds[1]);
  }
  SECTION("not local and freebind off: the bind error") {
    fake.fail_if([](const Call& c) { return c.op == Op::bind; }, EADDRNOTAVAIL, 1);
    RestoreOptions ro;
    ro.freebind = false;
    REQUIRE_ERROR(rep.restore(snap, ro), std::errc::address_not_available, "try freebind");
    CHECK(std::none_of(fake.calls().begin(), fake.calls().end(), is_freebind));
  }
}

TEST_CASE("restore kicks an ACK only when the old socket owed one", "[repair][syscalls]") {
  FakeSys fake;
  const int fd = fake.add_connected("10.99.0.1:443", "10.0.1.2:51000");
  auto& s = fake.sock(fd);
  s.recv_seq = 5000;
  s.send_seq = 9000;
  s.recv_queue = bytes(10, 3);
  const bool owed = GENERATE(false, true);
  // The last segment the old socket sent acknowledged everything but the queued 10 bytes (owed),
  // or everything (not owed: rcv_wup == rcv_nxt).
  s.window = tcp_repair_window{5000, 64000, 65535, 64000, owed ? 5000U : 5010U};
  Repairer rep(fake, quiet());
  auto cp = rep.checkpoint(fd);
  REQUIRE_OK(cp);
  FakeSys target;
  Repairer rep2(target, quiet());
  REQUIRE_OK(rep2.restore(cp->snapshot));
  const auto& r = target.calls();
  INFO("owed " << owed << "\n" << trace(r));
  const auto kicks = std::count_if(r.begin(), r.end(), [](const Call& k) {
    return k.op == Op::sendto;
  });
  CHECK(kicks == (owed ? 1 : 0));
  if (!owed) {
    // An ACK the freeze dropped is not in the snapshot: the caller says so, and the ACK is kicked.
    FakeSys again;
    Repairer rep3(again, quiet());
    RestoreOptions ro;
    ro.sent_into_freeze = true;
    REQUIRE_OK(rep3.restore(cp->snapshot, ro));
    CHECK(std::count_if(again.calls().begin(), again.calls().end(),
                        [](const Call& k) { return k.op == Op::sendto; }) == 1);
  }
}

TEST_CASE("checkpoint of a socket that takes TCP_INFO but not TCP_REPAIR says it is not TCP",
          "[repair][errors][checkpoint]") {
  // An MPTCP socket answers TCP_INFO; TCP_REPAIR fails (EOPNOTSUPP). The type is read only then.
  FakeSys fake;
  const int fd = source(fake);
  fake.fail_if([](const Call& c) { return is_repair_on(c); }, EOPNOTSUPP);
  Repairer rep(fake, quiet());
  SECTION("a TCP socket: the kernel's error") {
    REQUIRE_ERROR(rep.checkpoint(fd), std::errc::operation_not_supported, "TCP_REPAIR");
  }
  SECTION("another protocol: named") {
    fake.sock(fd).protocol = 262;  // IPPROTO_MPTCP
    fake.clear_faults();
    fake.fail_if([](const Call& c) { return is_repair_on(c) || c.is_get(IPPROTO_TCP, TCP_INFO); },
                 EOPNOTSUPP);
    REQUIRE_ERROR(rep.checkpoint(fd), std::errc::protocol_not_supported, "not a TCP socket");
  }
}

TEST_CASE("options read before the freeze keep every option read out of the checkpoint",
          "[repair][syscalls]") {
  FakeSys fake;
  const int fd = source(fake);
  auto& s = fake.sock(fd);
  s.opts[{SOL_SOCKET, SO_REUSEADDR}] = 1;
  s.opts[{IPPROTO_TCP, TCP_KEEPIDLE}] = 77;
  s.opts[{SOL_SOCKET, SO_MARK}] = 0x42;
  Repairer rep(fake, quiet());

  // The reference: a checkpoint that reads the options itself.
  auto plain = rep.checkpoint(fd);
  REQUIRE_OK(plain);
  const std::size_t plain_calls = fake.calls().size();
  auto thawed = rep.thaw(std::move(plain->socket));
  REQUIRE_OK(thawed);

  fake.clear_calls();
  auto opts = rep.read_options(fd);
  REQUIRE_OK(opts);
  CHECK(*opts == plain->snapshot.options);  // SO_REUSEADDR included, read outside repair mode
  CHECK(opts->reuseaddr);
  CHECK(opts->keepidle == 77);
  CHECK(opts->mark == 0x42);
  // Not one repair-mode call: reading options freezes nothing.
  CHECK(std::none_of(fake.calls().begin(), fake.calls().end(),
                     [](const Call& c) { return c.is_set(IPPROTO_TCP, TCP_REPAIR); }));

  fake.clear_calls();
  auto cp = rep.checkpoint(fd, &*opts);
  REQUIRE_OK(cp);
  const auto& c = fake.calls();
  INFO("checkpoint with options read before:\n" << trace(c));
  CHECK(cp->snapshot.options == plain->snapshot.options);
  CHECK(cp->snapshot.send_queue == plain->snapshot.send_queue);
  CHECK(cp->snapshot.recv_queue == plain->snapshot.recv_queue);
  const int option_reads[][2] = {
      {IPPROTO_TCP, TCP_NODELAY},     {IPPROTO_TCP, TCP_CORK},      {SOL_SOCKET, SO_KEEPALIVE},
      {IPPROTO_TCP, TCP_KEEPIDLE},    {IPPROTO_TCP, TCP_KEEPINTVL}, {IPPROTO_TCP, TCP_KEEPCNT},
      {IPPROTO_TCP, TCP_USER_TIMEOUT}, {IPPROTO_TCP, TCP_NOTSENT_LOWAT}, {SOL_SOCKET, SO_MARK},
      {IPPROTO_IP, IP_TOS},           {IPPROTO_IP, IP_TTL},         {SOL_SOCKET, SO_MEMINFO},
      {IPPROTO_TCP, TCP_CONGESTION},  {SOL_SOCKET, SO_LINGER},      {SOL_SOCKET, SO_REUSEADDR}};
  for (const auto& call : c) {
    for (const auto& o : option_reads) {
      CHECK_FALSE(call.is_get(o[0], o[1]));
    }
    CHECK(call.op != Op::get_fl);
  }
  CHECK(c.size() + 16 <= plain_calls);
  // Thawing restores SO_REUSEADDR from the options given (repair mode cleared it).
  REQUIRE_OK(rep.thaw(std::move(cp->socket)));
  CHECK(fake.sock(fd).opts[{SOL_SOCKET, SO_REUSEADDR}] == 1);
}

TEST_CASE("read_options of a descriptor that is not a socket fails naming the step",
          "[repair][errors]") {
  FakeSys fake;
  Repairer rep(fake, quiet());
  auto o = rep.read_options(12345);
  REQUIRE_ERROR(o, std::errc::bad_file_descriptor, "read socket options");
}

TEST_CASE("a tuple read before the freeze keeps getsockname and getpeername out of the checkpoint",
          "[repair][syscalls]") {
  FakeSys fake;
  const int fd = source(fake);
  Repairer rep(fake, quiet());
  auto opts = rep.read_options(fd);
  REQUIRE_OK(opts);
  // What the caller read from this socket before the freeze (FourTuple::of_socket on a real one).
  const FourTuple known{*Endpoint::parse("10.99.0.1:443"), *Endpoint::parse("10.0.1.2:51000")};

  fake.clear_calls();
  auto cp = rep.checkpoint(fd, &*opts, &known);
  REQUIRE_OK(cp);
  const auto& c = fake.calls();
  INFO("checkpoint with tuple and options read before:\n" << trace(c));
  CHECK(std::none_of(c.begin(), c.end(), [](const Call& k) {
    return k.op == Op::getsockname || k.op == Op::getpeername;
  }));
  CHECK(cp->snapshot.tuple == known);
  CHECK(cp->socket.tuple() == known);
  // The data-protecting reads stay: the rcv_nxt bracket and both queues.
  CHECK(std::count_if(c.begin(), c.end(), [](const Call& k) {
          return k.is_get(IPPROTO_TCP, TCP_QUEUE_SEQ);
        }) == 3);
  CHECK(cp->snapshot.recv_queue.size() == 700);
  CHECK(cp->snapshot.send_queue.size() == 1200);

  // The restore builds that tuple (bind + connect) from the snapshot alone.
  FakeSys target;
  Repairer rep2(target, quiet());
  auto r = rep2.restore(cp->snapshot);
  REQUIRE_OK(r);
  auto& t = target.sock(r->get());
  CHECK(Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&t.local), t.local_len)
            .value() == known.local);
  CHECK(Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&t.remote), t.remote_len)
            .value() == known.remote);
  // Options read before the freeze are still restored: the source's TCP_NODELAY (not default).
  CHECK(t.opts[{IPPROTO_TCP, TCP_NODELAY}] == 1);
}

TEST_CASE("an owning checkpoint takes the descriptor without a duplicate and leaves it on error",
          "[repair][syscalls]") {
  FakeSys fake;
  const int raw = source(fake);
  Repairer rep(fake, quiet());
  SECTION("success: the Checkpoint holds the caller's descriptor itself") {
    UniqueFd fd(raw);
    auto cp = rep.checkpoint(fd);
    REQUIRE_OK(cp);
    CHECK_FALSE(fd.valid());
    CHECK(cp->socket.fd() == raw);  // a dup would have another number
    CHECK(fake.sock(raw).repair);
    rep.release(std::move(cp->socket));
    CHECK(fake.closed(0));
  }
  SECTION("error: the descriptor stays with the caller, thawed") {
    fake.fail_if([](const Call& k) { return k.is_get(IPPROTO_TCP, TCP_MAXSEG); }, EIO);
    UniqueFd fd(raw);
    auto cp = rep.checkpoint(fd);
    REQUIRE_FALSE(cp.ok());
    CHECK(fd.valid());
    CHECK(fd.get() == raw);
    CHECK_FALSE(fake.sock(raw).repair);
    CHECK_FALSE(fake.closed(0));
  }
  SECTION("borrowed: a duplicate, the caller's descriptor stays open") {
    auto cp = rep.checkpoint(raw);
    REQUIRE_OK(cp);
    CHECK(cp->socket.fd() != raw);
    CHECK(fake.is_open(raw));
    ::close(raw);
  }
}

TEST_CASE("replay feeds a connection's packets in sequence order through one marked raw socket "
          "and refuses others",
          "[repair][replay]") {
  FakeSys fake;
  Repairer rep(fake, quiet());
  const FourTuple t{rendr::test::endpoint("10.99.0.1:443"),
                    rendr::test::endpoint("10.0.1.2:51000")};
  auto l3 = [](const char* src, const char* dst, std::size_t len, std::uint32_t seq) {
    rendr::test::TcpFrameSpec s;
    s.src = rendr::test::endpoint(src);
    s.dst = rendr::test::endpoint(dst);
    s.seq = seq;
    s.payload.assign(len, std::byte{7});
    auto frame = rendr::test::tcp_frame(s);
    return std::vector<std::byte>(frame.begin() + 14, frame.end());  // without Ethernet
  };
  // Recorded out of order (two CPUs' records in one ring), across the sequence wrap.
  const std::vector<std::vector<std::byte>> pk{
      l3("10.0.1.2:51000", "10.99.0.1:443", 100, 0xFFFFFF00U),
      l3("10.0.1.3:51000", "10.99.0.1:443", 200, 0xFFFFFF64U),  // another peer: refused
      l3("10.0.1.2:51000", "10.99.0.1:443", 400, 0x164U),
      l3("10.0.1.2:51000", "10.99.0.1:443", 300, 0xFFFFFF64U),
  };
  auto n = rep.replay(t, pk);
  REQUIRE_OK(n);
  CHECK(*n == 3);
  const auto& r = fake.calls();
  INFO(trace(r));
  std::vector<std::size_t> sent;
  int raw = -1;
  bool marked = false;
  for (const auto& c : r) {
    if (c.op == Op::socket) {
      CHECK((c.name & 0xF) == SOCK_RAW);  // (with SOCK_CLOEXEC)
    }
    if (c.is_set(SOL_SOCKET, SO_MARK)) {
      marked = c.value == 0xC114;
      raw = c.fd;
    }
    if (c.op == Op::sendto) {
      CHECK(c.fd == raw);
      sent.push_back(c.len);
    }
  }
  CHECK(marked);
  // Fed in sequence order: 0xFFFFFF00, 0xFFFFFF64, 0x164.
  CHECK(sent == std::vector<std::size_t>{pk[0].size(), pk[3].size(), pk[2].size()});
  // Nothing to feed: no socket at all.
  FakeSys idle;
  Repairer rep2(idle, quiet());
  auto none = rep2.replay(t, {});
  REQUIRE_OK(none);
  CHECK(*none == 0);
  CHECK(idle.calls().empty());
}

TEST_CASE("ask_peer_ack sends the peer one marked byte below snd_una, and nothing when nothing "
          "is in flight",
          "[repair][ask_peer_ack]") {
  FakeSys fake;
  const int fd = fake.add_connected("10.99.0.1:443", "10.0.1.2:51000");
  auto& s = fake.sock(fd);
  s.recv_seq = 5000;
  s.send_seq = 9000;
  s.recv_queue = bytes(10, 3);
  const std::uint32_t in_flight = GENERATE(0U, 1448U);
  s.send_queue = bytes(in_flight + 100, 5);
  s.unsent = 100;
  s.window = tcp_repair_window{5000, 64000, 65535, 64000, 5010};
  Repairer rep(fake, quiet());
  auto cp = rep.checkpoint(fd);
  REQUIRE_OK(cp);
  fake.clear_calls();
  fake.raw_sent.clear();
  REQUIRE_OK(rep.ask_peer_ack(cp->socket, cp->snapshot));
  INFO("in flight " << in_flight << "\n" << trace(fake.calls()));
  if (in_flight == 0) {
    CHECK(fake.raw_sent.empty());
    CHECK(fake.calls().empty());
    return;
  }
  REQUIRE(fake.raw_sent.size() == 1);
  CHECK(std::any_of(fake.calls().begin(), fake.calls().end(), [](const Call& c) {
    return c.is_set(SOL_SOCKET, SO_MARK) && c.value == 0xC114;
  }));
  const auto& p = fake.raw_sent[0];
  REQUIRE(p.size() == 20 + 20 + 1);  // IPv4, TCP without options, one byte
  auto u8 = [&](std::size_t i) { return std::to_integer<std::uint32_t>(p[i]); };
  auto u32 = [&](std::size_t i) { return (u8(i) << 24) | (u8(i + 1) << 16) | (u8(i + 2) << 8) | u8(i + 3); };
  CHECK(u32(12) == 0x0A630001U);  // from our address...
  CHECK(u32(16) == 0x0A000102U);  // ...to the peer
  CHECK(((u8(20) << 8) | u8(21)) == 443);
  CHECK(((u8(22) << 8) | u8(23)) == 51000);
  CHECK(u32(24) == 9000U - 1);   // one byte the peer already acknowledged
  CHECK(u32(28) == 5000U + 10);  // our rcv_nxt
  CHECK((u8(33) & 0x10U) != 0);  // ACK
  // Nothing once our FIN was sent: the restore resends nothing on an ACK's strength then.
  auto fin = cp->snapshot;
  fin.fin_queued = fin.fin_sent = true;
  fin.state = TcpState::fin_wait1;
  fake.raw_sent.clear();
  REQUIRE_OK(rep.ask_peer_ack(cp->socket, fin));
  CHECK(fake.raw_sent.empty());
}

TEST_CASE("restore sets the timestamp clock two ticks past the one read, keeping its mode bit",
          "[repair][syscalls]") {
  // The kernel reads TCP_TIMESTAMP with the low bit cleared (millisecond mode) or set
  // (microsecond mode), so what a checkpoint read may be 1 below the last TSval sent: the
  // restored clock starts 2 on, never behind what the peer has seen.
  for (const std::uint32_t read : {424242U, 424243U, 0xFFFFFFFEU}) {
    FakeSys fake;
    const int fd = fake.add_connected("10.99.0.1:443", "10.0.1.2:51000");
    auto& s = fake.sock(fd);
    s.tcpi_options = TCPI_OPT_TIMESTAMPS;
    s.timestamp = read;
    Repairer rep(fake, quiet());
    auto cp = rep.checkpoint(fd);
    REQUIRE_OK(cp);
    CHECK(cp->snapshot.timestamp == read);
    FakeSys target;
    Repairer rep2(target, quiet());
    auto restored = rep2.restore(cp->snapshot);
    REQUIRE_OK(restored);
    const std::uint32_t set = target.sock(restored->get()).timestamp;
    CHECK(set == read + 2U);  // wraps like the TCP clock
    CHECK((set & 1U) == (read & 1U));
  }
}
