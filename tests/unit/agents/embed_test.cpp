// SPDX-License-Identifier: Apache-2.0
// The embedder Session against a fake agent (a SOCK_SEQPACKET listener in a temp dir): what it
// does when the agent goes away and when one answers at the same path again.
#include <rendr/agents/embed.hpp>
#include <rendr/agents/packet.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>

using namespace rendr;
using namespace rendr::agents;

namespace {

UniqueFd listen_unix(const std::string& path) {
  ::unlink(path.c_str());
  UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  REQUIRE(::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(s.get(), 8) == 0);
  return s;
}

// answer_register accepts one client on |l|, checks its register_service and answers ok.
UniqueFd answer_register(int l, const std::string& service) {
  UniqueFd c(::accept4(l, nullptr, nullptr, SOCK_CLOEXEC));
  REQUIRE(c.valid());
  auto p = recv_packet(c.get());
  REQUIRE(p.ok());
  CHECK(p->msg.type() == MsgType::register_service);
  CHECK(p->msg.str_or(Tag::service, "") == service);
  REQUIRE(send_packet(c.get(), ok_msg("registered")).ok());
  return c;
}

// tcp_conn returns the accepted end of a loopback TCP connection (|client| keeps the other).
UniqueFd tcp_conn(UniqueFd& client) {
  UniqueFd l(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  REQUIRE(::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(l.get(), 1) == 0);
  REQUIRE(::getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &al) == 0);
  client = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(::connect(client.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  UniqueFd s(::accept4(l.get(), nullptr, nullptr, SOCK_CLOEXEC));
  REQUIRE(s.valid());
  return s;
}

// next_event waits (poll on fd(), bounded by timeout_ms()) until poll_event returns an event.
std::optional<Session::Event> next_event(Session& s, int budget_ms) {
  for (int waited = 0; waited < budget_ms;) {
    int t = s.timeout_ms();
    t = t < 0 || t > 50 ? 50 : t;
    pollfd p{s.fd(), POLLIN, 0};
    (void)::poll(&p, 1, t);
    waited += t == 0 ? 1 : t;
    auto ev = s.poll_event();
    REQUIRE(ev.ok());
    if (*ev) {
      return std::move(*ev);
    }
  }
  return std::nullopt;
}

// FakeAgent: a temp dir with an agent socket whose listener answers one registration of
// service "svc", and the Session registered through it; the dir goes with the object.
struct FakeAgent {
  std::string dir;
  std::string path;
  UniqueFd listener;
  UniqueFd agent;  // the registered session's other end
  std::optional<Session> session;

  FakeAgent() {
    char tmpl[] = "/tmp/rendr-embed-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    path = dir + "/agent.sock";
    listener = listen_unix(path);
    std::thread t([this] { agent = answer_register(listener.get(), "svc"); });
    auto s = Session::connect(path, "svc");
    t.join();
    REQUIRE(s.ok());
    session.emplace(std::move(*s));
  }
  FakeAgent(const FakeAgent&) = delete;
  FakeAgent& operator=(const FakeAgent&) = delete;
  ~FakeAgent() { (void)std::system(("rm -rf '" + dir + "'").c_str()); }
};

}  // namespace

TEST_CASE("a Session reports a lost agent, serves on, and tracks again when one answers",
          "[agents][embed]") {
  FakeAgent fa;
  const std::string& path = fa.path;
  UniqueFd& l = fa.listener;
  UniqueFd& agent = fa.agent;
  auto& s = fa.session;
  CHECK(s->registered());
  CHECK(s->timeout_ms() == -1);

  UniqueFd peer1;
  UniqueFd peer2;
  UniqueFd c1 = tcp_conn(peer1);
  UniqueFd c2 = tcp_conn(peer2);
  auto id1 = s->track(c1.get());
  REQUIRE(id1.ok());
  auto p = recv_packet(agent.get());
  REQUIRE(p.ok());
  CHECK(p->msg.type() == MsgType::track);

  // The agent dies: its end of the session and its listener close.
  agent = UniqueFd();
  l = UniqueFd();
  ::unlink(path.c_str());
  auto ev = next_event(*s, 1000);
  REQUIRE(ev);
  auto* lost = std::get_if<Session::AgentLost>(&*ev);
  REQUIRE(lost != nullptr);
  CHECK(lost->why.find("closed by the other side") != std::string::npos);
  CHECK(lost->conns == 1);
  CHECK_FALSE(s->registered());
  CHECK(s->fd() == -1);
  CHECK(s->timeout_ms() > 0);
  CHECK(s->timeout_ms() <= 101);

  // Away: track and untrack only update the list; attempts find nobody and back off.
  auto id2 = s->track(c2.get());
  REQUIRE(id2.ok());
  CHECK(*id2 != *id1);
  CHECK(s->untrack(*id1).ok());
  CHECK_FALSE(s->export_conn(*id2, c2.get(), {}).ok());  // nobody to hand it to: still ours
  CHECK_FALSE(next_event(*s, 400));
  CHECK(s->fd() == -1);
  CHECK(s->timeout_ms() > 100);  // backed off past the first 100 ms

  // An agent at the same path again: one registration, then a track of what is still held.
  l = listen_unix(path);
  UniqueFd agent2;
  for (int i = 0; i < 300 && s->fd() < 0; ++i) {
    (void)::poll(nullptr, 0, s->timeout_ms() < 0 ? 10 : s->timeout_ms());
    REQUIRE(s->poll_event().ok());
  }
  REQUIRE(s->fd() >= 0);  // registering
  agent2 = answer_register(l.get(), "svc");
  ev = next_event(*s, 1000);
  REQUIRE(ev);
  auto* back = std::get_if<Session::AgentBack>(&*ev);
  REQUIRE(back != nullptr);
  CHECK(back->conns == 1);
  CHECK(back->attempts >= 2);
  CHECK(s->registered());
  p = recv_packet(agent2.get());
  REQUIRE(p.ok());
  CHECK(p->msg.type() == MsgType::track);
  CHECK(p->msg.u64(Tag::conn_id).value() == *id2);
  auto tuple = FourTuple::of_socket(c2.get());
  REQUIRE(tuple.ok());
  CHECK(p->msg.str_or(Tag::tuple, "") == tuple->to_string());
  int fl = ::fcntl(agent2.get(), F_GETFL);
  (void)::fcntl(agent2.get(), F_SETFL, fl | O_NONBLOCK);
  CHECK_FALSE(recv_packet(agent2.get()).ok());  // nothing else: id1 was untracked

  // An export that finds the agent gone fails, the connection stays held, the loss is reported.
  agent2 = UniqueFd();
  CHECK_FALSE(s->export_conn(*id2, c2.get(), {}).ok());
  ev = next_event(*s, 1000);
  REQUIRE(ev);
  lost = std::get_if<Session::AgentLost>(&*ev);
  REQUIRE(lost != nullptr);
  CHECK(lost->conns == 1);
}

TEST_CASE("an agent lost mid-migration: exports it had not frozen come back, frozen ones are "
          "kept and handed to the next agent",
          "[agents][embed]") {
  FakeAgent fa;
  const std::string& path = fa.path;
  UniqueFd& l = fa.listener;
  UniqueFd& agent = fa.agent;
  auto& s = fa.session;

  UniqueFd peer1;
  UniqueFd peer2;
  UniqueFd c1 = tcp_conn(peer1);
  UniqueFd c2 = tcp_conn(peer2);
  auto id1 = s->track(c1.get());
  auto id2 = s->track(c2.get());
  REQUIRE(id1.ok());
  REQUIRE(id2.ok());
  for (int i = 0; i < 2; ++i) {
    REQUIRE(recv_packet(agent.get()).ok());  // the tracks
  }
  const std::byte st1[] = {std::byte{'s'}, std::byte{'1'}};
  REQUIRE(s->export_conn(*id1, c1.get(), st1).ok());
  REQUIRE(s->export_conn(*id2, c2.get(), {}).ok());
  c1 = UniqueFd();  // the server closes its descriptors, as the contract says
  c2 = UniqueFd();
  auto x1 = recv_packet(agent.get());
  auto x2 = recv_packet(agent.get());
  REQUIRE(x1.ok());
  REQUIRE(x2.ok());
  REQUIRE(x2->fd.valid());
  // The agent freezes the second one (repair mode; needs CAP_NET_ADMIN, else both come back).
  int on = 1;
  const bool froze = ::setsockopt(x2->fd.get(), IPPROTO_TCP, 19 /* TCP_REPAIR */, &on,
                                  sizeof on) == 0;
  // ... and dies, with its descriptors.
  x1->fd = UniqueFd();
  x2->fd = UniqueFd();
  agent = UniqueFd();
  l = UniqueFd();
  ::unlink(path.c_str());

  auto ev = next_event(*s, 1000);
  REQUIRE(ev);
  auto* lost = std::get_if<Session::AgentLost>(&*ev);
  REQUIRE(lost != nullptr);
  CHECK(lost->exports_returned == (froze ? 1U : 2U));
  CHECK(lost->exports_frozen == (froze ? 1U : 0U));
  CHECK(lost->exports_lost == 0U);
  ev = next_event(*s, 1000);
  REQUIRE(ev);
  auto* back = std::get_if<Session::Returned>(&*ev);
  REQUIRE(back != nullptr);
  CHECK(back->conn_id == *id1);
  REQUIRE(back->state.size() == 2);
  CHECK(back->state[1] == std::byte{'1'});
  // It is the same connection, alive: bytes written on it reach the peer.
  REQUIRE(back->fd.valid());
  REQUIRE(::send(back->fd.get(), "hi", 2, MSG_NOSIGNAL) == 2);
  char buf[8];
  CHECK(::recv(peer1.get(), buf, sizeof buf, 0) == 2);
  if (froze) {
    // The frozen one went without a FIN or RST: its peer reads nothing, not EOF.
    CHECK(::recv(peer2.get(), buf, sizeof buf, MSG_DONTWAIT) == -1);
    CHECK(errno == EAGAIN);
    CHECK_FALSE(next_event(*s, 150));  // no other event

    // The next agent gets the returned one tracked and the frozen one to reclaim.
    l = listen_unix(path);
    for (int i = 0; i < 300 && s->fd() < 0; ++i) {
      (void)::poll(nullptr, 0, s->timeout_ms() < 0 ? 10 : s->timeout_ms());
      REQUIRE(s->poll_event().ok());
    }
    REQUIRE(s->fd() >= 0);
    UniqueFd agent2 = answer_register(l.get(), "svc");
    ev = next_event(*s, 1000);
    REQUIRE(ev);
    auto* ab = std::get_if<Session::AgentBack>(&*ev);
    REQUIRE(ab != nullptr);
    CHECK(ab->conns == 1);
    CHECK(ab->reclaimed == 1);
    auto tr = recv_packet(agent2.get());
    REQUIRE(tr.ok());
    CHECK(tr->msg.type() == MsgType::track);
    CHECK(tr->msg.u64(Tag::conn_id).value() == *id1);
    auto rc = recv_packet(agent2.get());
    REQUIRE(rc.ok());
    REQUIRE(rc->msg.type() == MsgType::reclaim);
    CHECK(rc->msg.u64(Tag::conn_id).value() == *id2);
    auto t2 = FourTuple::of_socket(peer2.get());  // the peer's view: reversed
    REQUIRE(t2.ok());
    auto tr2 = FourTuple::parse(rc->msg.str_or(Tag::tuple, ""));
    REQUIRE(tr2.ok());
    CHECK(tr2->local == t2->remote);
    CHECK(tr2->remote == t2->local);
    REQUIRE(rc->fd.valid());
    int rep = 0;
    socklen_t rl = sizeof rep;
    REQUIRE(::getsockopt(rc->fd.get(), IPPROTO_TCP, 19, &rep, &rl) == 0);
    CHECK(rep == 1);  // still frozen: only the agent decides

    // That agent finds the move never landed elsewhere: it thaws and returns the connection.
    int off = 0;
    REQUIRE(::setsockopt(rc->fd.get(), IPPROTO_TCP, 19, &off, sizeof off) == 0);
    Message rt(MsgType::returned);
    rt.add_u64(Tag::conn_id, *id2).add(Tag::state, rc->msg.str_or(Tag::state, ""));
    REQUIRE(send_packet(agent2.get(), rt, rc->fd.get()).ok());
    rc->fd = UniqueFd();
    ev = next_event(*s, 1000);
    REQUIRE(ev);
    auto* ret = std::get_if<Session::Returned>(&*ev);
    REQUIRE(ret != nullptr);
    CHECK(ret->conn_id == *id2);
    REQUIRE(::send(ret->fd.get(), "ok", 2, MSG_NOSIGNAL) == 2);
    CHECK(::recv(peer2.get(), buf, sizeof buf, 0) == 2);
  } else {
    WARN("no CAP_NET_ADMIN: the frozen case was not tried");
  }
}
