// SPDX-License-Identifier: Apache-2.0
// The userstack keeper process (us_keeper.hpp): the Stack on the TUN, the pumps to the
// servers, and the per-flow operations of a migration, run on its agent's requests. One
// thread polls the listening socket, the agent's two connections, the Stack's accept queue and
// every connection's pump (one PumpSet: no thread per connection, so a move stops and starts
// a pump without a thread hand-off); the Stack's reader runs on its own thread.
//
// What a migration leaves here when its agent goes away: a staged (restored, frozen)
// connection is dropped silently, its freeze kept for the grace (the source aborts the move);
// a captured one (the source's checkpoint taken, its pump stopped) stays captured and frozen
// until the next agent asks the peers where the move got to (a reclaim, as for a native
// connection frozen in repair mode) and then thaws or releases it.
#include "us_keeper.hpp"

#include "agent_internal.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <csignal>
#include <cstddef>

namespace rendr::agents {

std::string keeper_address(const std::string& tun) { return "rendr-keeper/" + tun; }

sockaddr_un keeper_sockaddr(const std::string& tun, socklen_t& len) {
  const std::string name = keeper_address(tun);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  const std::size_t n = std::min(name.size(), sizeof sa.sun_path - 1);
  std::memcpy(sa.sun_path + 1, name.data(), n);  // sun_path[0] == 0: the abstract namespace
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
  return sa;
}

Result<UniqueFd> blob_fd(const Message& m) {
  const int raw = ::memfd_create("rendr-blob", MFD_CLOEXEC);
  if (raw < 0) {
    return errno_error("memfd_create");
  }
  UniqueFd fd(raw);
  const std::vector<std::byte> body = m.encode();
  std::size_t off = 0;
  while (off < body.size()) {
    const ssize_t n = ::write(fd.get(), body.data() + off, body.size() - off);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return errno_error("write blob");
    }
    off += static_cast<std::size_t>(n);
  }
  return fd;
}

Result<Message> read_blob(int fd) {
  if (fd < 0) {
    return make_error(std::errc::bad_message, "keeper: a blob was expected");
  }
  std::vector<std::byte> body;
  std::byte buf[65536];
  for (off_t at = 0;;) {
    const ssize_t n = ::pread(fd, buf, sizeof buf, at);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return errno_error("read blob");
    }
    if (n == 0) {
      break;
    }
    if (body.size() + static_cast<std::size_t>(n) > kMaxMessage) {
      return make_error(std::errc::message_size, "keeper: blob too large");
    }
    body.insert(body.end(), buf, buf + n);
    at += n;
  }
  return Message::decode(body);
}

Status attach_body(Message& carrier, const Message& body, UniqueFd& fd) {
  std::size_t size = 0;
  for (const auto& f : body.fields()) {
    size += f.value.size() + 8;
  }
  if (size <= kInlineBody) {
    for (const auto& f : body.fields()) {
      carrier.add(f.tag, std::span<const std::byte>(f.value));
    }
    return {};
  }
  auto b = blob_fd(body);
  if (!b) {
    return std::move(b).take_error();
  }
  fd = std::move(*b);
  return {};
}

Result<Message> body_of(const Packet& p) {
  if (p.fd.valid()) {
    return read_blob(p.fd.get());
  }
  return p.msg;
}

std::uint32_t drop_peer_acked(TcpSnapshot& snap, const std::optional<repair::PeerAck>& pa) {
  if (!pa || snap.fin_sent) {
    return 0;
  }
  const auto ahead = static_cast<std::int32_t>(pa->ack - snap.send_seq);
  if (ahead <= 0 || static_cast<std::uint32_t>(ahead) > snap.send_unacked()) {
    return 0;  // nothing new, or an ACK for bytes never sent: ignore it
  }
  const auto n = static_cast<std::uint32_t>(ahead);
  snap.send_queue.erase(snap.send_queue.begin(), snap.send_queue.begin() + n);
  snap.send_seq += n;
  if (snap.has_window) {
    const std::uint32_t wnd = static_cast<std::uint32_t>(pa->window)
                              << (snap.opt_wscale ? snap.snd_wscale : 0);
    snap.window.snd_wnd = wnd;
    snap.window.max_window = std::max(snap.window.max_window, wnd);
    snap.window.snd_wl1 = snap.recv_seq + static_cast<std::uint32_t>(snap.recv_queue.size());
  }
  return n;
}

namespace {

using KClock = std::chrono::steady_clock;

// read_dry reads what |fd| holds right now (non-blocking). |eof| is set on end of file.
Status read_dry(int fd, std::vector<std::byte>& out, bool& eof) {
  std::byte buf[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      out.insert(out.end(), buf, buf + n);
      continue;
    }
    if (n == 0) {
      eof = true;
      return {};
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return {};
    }
    return errno_error("userstack: read the bridge");
  }
}


class Keeper {
 public:
  Keeper(const KeeperOptions& o, std::unique_ptr<userstack::Stack> s, UniqueFd lfd,
         UniqueFd efd, userstack::PumpSet pumps)
      : o_(o),
        stack_(std::move(s)),
        listen_(std::move(lfd)),
        accept_efd_(std::move(efd)),
        pumps_(std::move(pumps)) {
    stack_->set_accept_handler([this](userstack::ConnectionPtr c) {
      {
        std::lock_guard lk(mu_);
        accepted_.push_back(std::move(c));
      }
      const std::uint64_t one = 1;
      (void)!::write(accept_efd_.get(), &one, sizeof one);
    });
  }
  ~Keeper() {
    stack_->set_accept_handler([](userstack::ConnectionPtr c) { c->abort(); });
    for (auto& [key, p] : serving_) {
      pumps_.remove(*p);
    }
    serving_.clear();
    captured_.clear();
    staged_.clear();
  }

  int run() {
    auto idle_since = KClock::now();
    auto next_flush = KClock::now();
    for (;;) {
      std::vector<pollfd> p = {{listen_.get(), POLLIN, 0},
                               {accept_efd_.get(), POLLIN, 0},
                               {pumps_.fd(), POLLIN, 0}};
      if (ctl_) {
        p.push_back({ctl_.get(), POLLIN, 0});
      }
      if (events_) {
        p.push_back({events_.get(), POLLIN, 0});  // only hang-ups: the agent never writes here
      }
      const int n = ::poll(p.data(), p.size(), 100);
      if (n < 0 && errno != EINTR) {
        log_.error("keeper: poll: " + std::string(std::strerror(errno)));
        return 1;
      }
      // Hang-ups first: a restarted agent's hello may be queued behind its predecessor's end.
      for (std::size_t i = 3; i < p.size(); ++i) {
        if (p[i].fd == ctl_.get() && (p[i].revents & POLLIN) != 0) {
          serve_ctl();
        } else if (p[i].fd == events_.get() && p[i].revents != 0) {
          agent_gone("its event connection closed");
        }
      }
      if ((p[2].revents & POLLIN) != 0) {
        for (userstack::Pump* stopped : pumps_.run()) {
          ended(*stopped);
        }
      }
      if ((p[1].revents & POLLIN) != 0) {
        std::uint64_t v = 0;
        (void)!::read(accept_efd_.get(), &v, sizeof v);
        take_accepted();
      }
      if ((p[0].revents & POLLIN) != 0) {
        on_listen();
      }
      const auto now = KClock::now();
      if (now >= next_flush) {
        flush_ended();
        next_flush = now + std::chrono::milliseconds(200);
      }
      run_graces(now);
      if (stack_->device_gone()) {
        log_.warn("keeper " + o_.tun + ": the TUN device is gone: exiting with its " +
                  std::to_string(serving_.size()) + " connection(s)");
        return 0;
      }
      if (ctl_ || !serving_.empty() || !captured_.empty() || !staged_.empty() ||
          !grace_.empty()) {
        idle_since = now;
      } else if (now - idle_since > std::chrono::milliseconds(keeper::kLingerMs)) {
        log_.info("keeper " + o_.tun + ": no agent and no connection for " +
                  std::to_string(keeper::kLingerMs / 1000) + " s: exiting");
        return 0;
      }
    }
  }

 private:
  // --- agents

  void on_listen() {
    UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!c) {
      return;
    }
    ucred cr{};
    socklen_t len = sizeof cr;
    if (::getsockopt(c.get(), SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0 ||
        (cr.uid != 0 && cr.uid != ::getuid())) {
      log_.warn("keeper " + o_.tun + ": refused a connection from uid " + std::to_string(cr.uid));
      return;
    }
    const timeval tv{2, 0};
    ::setsockopt(c.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    auto hello = recv_packet(c.get());
    if (!hello || hello->msg.type() != keeper::kHello) {
      return;
    }
    const std::string role = hello->msg.str_or(Tag::name, "");
    if (role == "ctl") {
      if (ctl_) {
        (void)send_packet(c.get(),
                          fail_msg(make_error(std::errc::device_or_resource_busy,
                                              "TUN device " + o_.tun +
                                                  " is served by a running agent (pid " +
                                                  std::to_string(agent_pid_) + ")")));
        return;
      }
      Message ok(MsgType::ok);
      ok.add(Tag::name, std::to_string(::getpid()));
      for (const auto& [key, s] : serving_) {
        ok.add(Tag::tuple, key);
      }
      for (const auto& [key, cap] : captured_) {
        ok.add(Tag::held_tuple, key);
      }
      if (!send_packet(c.get(), ok)) {
        return;
      }
      const timeval none{0, 0};
      ::setsockopt(c.get(), SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
      ctl_ = std::move(c);
      agent_pid_ = cr.pid;
      log_.info("keeper " + o_.tun + ": agent pid " + std::to_string(cr.pid) + " attached");
    } else if (role == "events" && ctl_ && !events_ && cr.pid == agent_pid_) {
      if (send_packet(c.get(), ok_msg())) {
        events_ = std::move(c);
      }
    }
  }

  void agent_gone(const std::string& why) {
    if (!ctl_ && !events_) {
      return;
    }
    log_.warn("keeper " + o_.tun + ": agent pid " + std::to_string(agent_pid_) + " gone (" + why +
              "); serving " + std::to_string(serving_.size()) + " connection(s) on");
    ctl_.reset();
    events_.reset();
    agent_pid_ = -1;
    // A move staged here has no agent left to commit it: its source aborts. Silently, with
    // the freeze kept for the grace (the gateway may already send the peer here).
    for (auto& [key, s] : staged_) {
      (void)stack_->snapshot(*s.conn);
      s.conn.reset();
      grace_[key] = {s.snap.tuple, KClock::now() + std::chrono::milliseconds(o_.freeze_grace_ms)};
    }
    staged_.clear();
    // A move from here stopped after its checkpoint: it may have committed on the target,
    // which only the target knows. The connection stays captured and frozen (nothing here
    // answers for it) until the next agent asks its peers (Agent::run_us_reclaim). Frozen
    // flows whose move had already been undone are lifted.
    for (auto it = frozen_.begin(); it != frozen_.end();) {
      if (captured_.count(it->first) != 0) {
        ++it;
        continue;
      }
      (void)stack_->thaw(it->second);
      it = frozen_.erase(it);
    }
    if (!captured_.empty()) {
      log_.warn("keeper " + o_.tun + ": " + std::to_string(captured_.size()) +
                " connection(s) captured by an unfinished move stay frozen until an agent "
                "attaches");
    }
  }

  // event sends |m| to the agent without waiting: false when its queue is full (a stopped or
  // busy agent: not a gone one) or there is no agent.
  bool event(const Message& m, int fd = -1) {
    if (!events_) {
      return false;
    }
    auto s = send_packet_nowait(events_.get(), m, fd);
    if (!s && s.error().code != std::errc::resource_unavailable_try_again) {
      agent_gone("event: " + s.error().message());
    }
    return s.ok();
  }

  // flush_ended sends the ends the agent's full queue refused before.
  void flush_ended() {
    while (!ended_.empty() && event(ended_.front())) {
      ended_.pop_front();
    }
    if (!events_) {
      ended_.clear();
    }
  }

  // --- connections

  void take_accepted() {
    std::vector<userstack::ConnectionPtr> batch;
    {
      std::lock_guard lk(mu_);
      batch.swap(accepted_);
    }
    for (auto& c : batch) {
      const std::string key = c->tuple().to_string();
      if (!events_ || serving_.count(key) != 0 || staged_.count(key) != 0) {
        log_.info("keeper " + o_.tun + ": " + key + " reset: " +
                  (events_ ? "the tuple is already served here" : "no agent attached"));
        ++refused_;
        c->abort();
        continue;
      }
      auto b = userstack::Pump::start(std::move(c));
      if (!b) {
        log_.warn("keeper " + o_.tun + ": " + key + ": " + b.error().message());
        ++refused_;
        continue;
      }
      UniqueFd fd = (*b)->take_fd();
      Message a(keeper::kAccepted);
      a.add(Tag::tuple, key);
      if (!event(a, fd.get())) {
        // The agent does not take it (its queue is full, or it just went): like a full accept
        // backlog, the connection is reset.
        log_.info("keeper " + o_.tun + ": " + key + " reset: the agent does not take it");
        ++refused_;
        if (auto st = (*b)->detach(); st && st->conn) {
          st->conn->abort();
        }
        continue;
      }
      if (auto st = serve(key, std::move(*b)); !st) {
        log_.warn("keeper " + o_.tun + ": " + key + ": " + st.error().message());
        ++refused_;
      }
    }
  }

  // serve pumps |p| in the set; a pump that stops at once ends at once.
  Status serve(const std::string& key, std::unique_ptr<userstack::Pump> p) {
    userstack::Pump& pump = *p;
    RENDR_TRY(pumps_.add(pump));
    serving_[key] = std::move(p);
    if (pump.state() != userstack::Pump::State::running) {
      ended(pump);
    }
    return {};
  }

  // ended forgets a pump that stopped (both directions finished, a reset, or the server closed
  // its end) and tells the agent.
  void ended(userstack::Pump& p) {
    const std::string key = p.tuple().to_string();
    auto it = serving_.find(key);
    if (it == serving_.end() || it->second.get() != &p) {
      return;
    }
    const auto state = p.state();
    pumps_.remove(p);
    serving_.erase(it);  // a server that went away: the connection closes as its socket would
    Message e(keeper::kEnded);
    e.add(Tag::tuple, key).add(Tag::text,
                               state == userstack::Pump::State::done ? "finished" : "reset");
    if (events_ && ended_.size() < kMaxEnded) {
      ended_.push_back(std::move(e));
    }
    flush_ended();
  }

  void run_graces(KClock::time_point now) {
    for (auto it = grace_.begin(); it != grace_.end();) {
      if (now < it->second.second) {
        ++it;
        continue;
      }
      (void)stack_->take_held(it->second.first);
      it = grace_.erase(it);
    }
  }

  void start_grace(const FourTuple& t) {
    grace_[t.to_string()] = {t, KClock::now() + std::chrono::milliseconds(o_.freeze_grace_ms)};
  }

  struct Captured {
    TcpSnapshot snap;
    userstack::BridgeState flags;  // conn empty; pump_end kept
  };

  Status thaw_captured(Captured& c) {
    auto conn = stack_->restore(c.snap);
    if (!conn) {
      return conn.error().with_context("rebuild " + c.snap.tuple.to_string() + " here");
    }
    c.flags.conn = std::move(*conn);
    return resume(std::move(c.flags));
  }

  Status resume(userstack::BridgeState st) {
    const std::string key = st.conn->tuple().to_string();
    auto b = userstack::Pump::resume(std::move(st));
    if (!b) {
      return b.error().with_context("resume the bridge of " + key);
    }
    return serve(key, std::move(*b));
  }

  // --- requests

  void serve_ctl() {
    auto p = recv_packet(ctl_.get());
    if (!p) {
      if (p.error().code != std::errc::resource_unavailable_try_again) {
        agent_gone(p.error().message());
      }
      return;
    }
    UniqueFd reply_fd;
    Message reply = handle(*p, reply_fd);
    if (auto s = send_packet(ctl_.get(), reply, reply_fd.get()); !s) {
      agent_gone("reply: " + s.error().message());
    }
  }

  // with_body: an ok reply carrying |b| (attach_body), or the blob's error.
  static Message with_body(const Message& b, UniqueFd& reply_fd) {
    Message ok = ok_msg();
    if (auto st = attach_body(ok, b, reply_fd); !st) {
      return fail_msg(st.error());
    }
    return ok;
  }

  Message handle(Packet& p, UniqueFd& reply_fd) {
    const Message& m = p.msg;
    if (m.type() == keeper::kStatus) {
      return Message(MsgType::json).add(Tag::text, status_json());
    }
    if (m.type() == keeper::kStage) {
      return stage(p);
    }
    auto ts = m.str(Tag::tuple);
    auto t = ts ? FourTuple::parse(*ts) : Result<FourTuple>(ts.error());
    if (!t) {
      return fail_msg(t.error());
    }
    const std::string key = t->to_string();
    const auto type = m.type();
    if (type == keeper::kCheckpoint) {
      auto snap = checkpoint(*t, p.fd.get());
      if (!snap) {
        return fail_msg(snap.error());
      }
      Message b(MsgType::ok);
      b.add(Tag::snapshot, encode_snapshot(*snap));
      return with_body(b, reply_fd);
    }
    if (type == keeper::kTakeHeld) {
      Message b(MsgType::ok);
      if (frozen_.count(key) != 0) {
        for (auto& pkt : stack_->take_held(*t)) {
          b.add(Tag::replay, std::move(pkt));
        }
        stack_->freeze(*t);  // stray packets stay unanswered until release's grace ends
      }
      return with_body(b, reply_fd);
    }
    if (type == keeper::kRelease) {
      captured_.erase(key);  // with it the pump end: the connection lives elsewhere now
      if (frozen_.erase(key) != 0) {
        start_grace(*t);
      }
      return ok_msg();
    }
    if (type == keeper::kThaw) {
      auto it = captured_.find(key);
      if (it == captured_.end()) {
        return ok_msg();
      }
      auto st = thaw_captured(it->second);
      captured_.erase(it);
      return st ? ok_msg() : fail_msg(st.error());
    }
    if (type == keeper::kUnfreeze) {
      if (auto it = frozen_.find(key); it != frozen_.end()) {
        (void)stack_->thaw(it->second);
        frozen_.erase(it);
      }
      return ok_msg();
    }
    if (type == keeper::kActivate) {
      return activate(*t, p, reply_fd);
    }
    if (type == keeper::kDropStaged) {
      auto it = staged_.find(key);
      if (it != staged_.end()) {
        (void)stack_->snapshot(*it->second.conn);  // silently: no FIN, no RST
        staged_.erase(it);
        if (m.get(Tag::ok) != nullptr) {
          start_grace(*t);  // abort or expiry: the gateway may already send the peer here
        } else {
          (void)stack_->take_held(*t);
        }
      }
      return ok_msg();
    }
    if (type == keeper::kReset) {
      if (auto it = serving_.find(key); it != serving_.end()) {
        pumps_.remove(*it->second);
        if (auto st = it->second->detach(); st && st->conn) {
          st->conn->abort();
        }
        serving_.erase(it);
        ++refused_;
      }
      return ok_msg();
    }
    return fail_msg(make_error(std::errc::operation_not_supported,
                               "keeper: unknown request " + std::to_string(static_cast<int>(type))));
  }

  // checkpoint: freeze, stop the pump and capture the connection with the bytes in flight
  // between the pump and the server (userstack_flow.cpp has the accounting).
  Result<TcpSnapshot> checkpoint(const FourTuple& t, int server_fd) {
    const std::string key = t.to_string();
    auto it = serving_.find(key);
    if (it == serving_.end() || server_fd < 0) {
      return make_error(std::errc::no_such_process,
                        "userstack: " + key + " has no bridge here (ended?)");
    }
    stack_->freeze(t);
    frozen_[key] = t;
    pumps_.remove(*it->second);
    auto st = it->second->detach();
    serving_.erase(it);
    if (!st) {
      return std::move(st).take_error().with_context("userstack: stop the bridge of " + key);
    }
    // The server shut down its side while bytes still wait in the bridge: their FIN would have
    // to follow them; not moved (the connection serves on here).
    bool pump_eof = false;
    std::vector<std::byte> pump_unread;
    auto rd = read_dry(st->pump_end.get(), pump_unread, pump_eof);
    if (!rd || (pump_eof && !st->server_eof) || (st->server_eof && !st->conn_shut)) {
      const std::string why = !rd ? rd.error().message()
                                  : "the server half-closed it while its last bytes were in the "
                                    "bridge";
      st->from_server.insert(st->from_server.end(), pump_unread.begin(), pump_unread.end());
      RENDR_TRY(resume(std::move(*st)));
      return make_error(std::errc::operation_not_supported, "userstack: " + key + ": " + why);
    }
    auto snap = stack_->snapshot(*st->conn);
    if (!snap) {
      st->from_server.insert(st->from_server.end(), pump_unread.begin(), pump_unread.end());
      const Error e = snap.error();
      RENDR_TRY(resume(std::move(*st)));
      return e.with_context("userstack: snapshot " + key);
    }
    // Peer -> server bytes the server did not read yet are the oldest unread ones.
    std::vector<std::byte> server_unread;
    bool server_end_eof = false;
    if (auto r = read_dry(server_fd, server_unread, server_end_eof); !r) {
      return r.error();  // the connection is gone from lwIP: nothing to resume it from
    }
    st->to_server.insert(st->to_server.begin(), server_unread.begin(), server_unread.end());
    st->from_server.insert(st->from_server.end(), pump_unread.begin(), pump_unread.end());
    userstack::account_bridge(*snap, *st);
    st->conn.reset();
    captured_[key] = Captured{*snap, std::move(*st)};
    return std::move(*snap);
  }

  // stage restores an offered snapshot, frozen; the agent dropped what the OFFER's peer ACK
  // acknowledges before it sent it (us_staged_flow).
  Message stage(const Packet& p) {
    auto b = body_of(p);
    if (!b) {
      return fail_msg(b.error());
    }
    const auto* raw = b->get(Tag::snapshot);
    if (raw == nullptr) {
      return fail_msg("keeper: stage without a snapshot");
    }
    auto snap = decode_snapshot(*raw);
    if (!snap) {
      return fail_msg(snap.error());
    }
    const std::string key = snap->tuple.to_string();
    if (staged_.count(key) != 0 || serving_.count(key) != 0) {
      return fail_msg(make_error(std::errc::address_in_use, "userstack: " + key +
                                                                " is already served here"));
    }
    grace_.erase(key);
    stack_->freeze(snap->tuple);  // silent until COMMIT: what restore re-sends is held too
    auto c = stack_->restore(*snap);
    if (!c) {
      (void)stack_->take_held(snap->tuple);
      return fail_msg(c.error());
    }
    staged_[key] = StagedConn{std::move(*snap), std::move(*c)};
    return ok_msg();
  }

  Message activate(const FourTuple& t, const Packet& p, UniqueFd& reply_fd) {
    const Message& m = p.msg;
    const std::string key = t.to_string();
    auto it = staged_.find(key);
    if (it == staged_.end()) {
      return fail_msg(make_error(std::errc::no_such_process,
                                 "userstack: " + key + " is not staged here"));
    }
    StagedConn s = std::move(it->second);
    staged_.erase(it);
    auto b = body_of(p);
    if (!b) {
      (void)stack_->snapshot(*s.conn);
      (void)stack_->take_held(t);
      return fail_msg(b.error());
    }
    std::vector<std::vector<std::byte>> replay;
    for (const auto* r : b->all(Tag::replay)) {
      replay.push_back(*r);
    }
    // The peer's latest ACK: the source's freeze saw it (COMMIT's peer_ack), it is among the
    // packets the source recorded, or it reached this host after the steer (the answer to the
    // source's ask_peer_ack), as a native target's freeze records it.
    std::optional<userstack::AckSeen> seen;
    if (const auto pa = m.u64(Tag::peer_ack); pa) {
      if (const auto hint = decode_peer_ack(*pa)) {
        seen = userstack::AckSeen{hint->ack, hint->window};
      }
    }
    seen = userstack::later_ack(seen, userstack::latest_ack(replay));
    seen = userstack::later_ack(seen, stack_->held_latest_ack(t));
    std::optional<repair::PeerAck> peer;
    if (seen) {
      peer = repair::PeerAck{seen->ack, seen->window};
    }
    if (drop_peer_acked(s.snap, peer) > 0) {
      // The peer acknowledged more while the source was frozen than the OFFER said: rebuild
      // the (still frozen, unread) connection without those bytes.
      (void)stack_->snapshot(*s.conn);  // silent removal
      s.conn.reset();
      auto c = stack_->restore(s.snap);
      if (!c) {
        (void)stack_->take_held(t);
        return fail_msg(c.error().with_context(
            "userstack: rebuild " + key + " without the bytes the peer acknowledged"));
      }
      s.conn = std::move(*c);
    }
    auto br = userstack::Pump::start(std::move(s.conn));
    if (!br) {
      (void)stack_->take_held(t);
      return fail_msg(br.error());
    }
    reply_fd = (*br)->take_fd();
    if (auto st = serve(key, std::move(*br)); !st) {
      (void)stack_->take_held(t);
      return fail_msg(st.error());
    }
    // The source's held packets first (older), then what reached this host while staged.
    (void)stack_->thaw(t, std::move(replay));
    return ok_msg();
  }

  std::string status_json() {
    const auto c = stack_->counters();
    JsonWriter j;
    j.begin_object();
    j.kv("keeper_pid", static_cast<std::int64_t>(::getpid()));
    j.kv("refused_by_keeper", refused_);
    j.kv("rx_packets", c.rx_packets);
    j.kv("tx_packets", c.tx_packets);
    j.kv("rx_held", c.rx_held);
    j.kv("rx_hold_dropped", c.rx_hold_dropped);
    j.kv("listeners", c.listeners);
    j.begin_array("flows");
    for (const auto& [key, b] : serving_) {
      j.begin_object();
      j.kv("tuple", key);
      const auto bs = b->stats();
      if (auto ci = b->info(); ci) {
        j.kv("state", std::string(to_string(ci->state)));
        j.kv("send_queue", static_cast<std::uint64_t>(ci->send_queue));
        j.kv("recv_queue", static_cast<std::uint64_t>(ci->recv_queue));
        j.kv("mss", static_cast<std::uint64_t>(ci->mss));
      }
      j.kv("to_server", bs.to_server);
      j.kv("from_server", bs.from_server);
      j.end_object();
    }
    j.end_array();
    j.end_object();
    return j.str();
  }

  struct StagedConn {
    TcpSnapshot snap;
    userstack::ConnectionPtr conn;
  };

  KeeperOptions o_;
  Logger log_;
  std::unique_ptr<userstack::Stack> stack_;
  UniqueFd listen_;
  UniqueFd accept_efd_;
  UniqueFd ctl_;
  UniqueFd events_;
  pid_t agent_pid_ = -1;
  std::mutex mu_;
  std::vector<userstack::ConnectionPtr> accepted_;
  // Pumps before the Stack goes (the destructor clears them first).
  userstack::PumpSet pumps_;
  std::map<std::string, std::unique_ptr<userstack::Pump>> serving_;
  std::map<std::string, Captured> captured_;
  std::map<std::string, StagedConn> staged_;
  std::map<std::string, FourTuple> frozen_;  // source flows frozen by a checkpoint
  std::map<std::string, std::pair<FourTuple, KClock::time_point>> grace_;
  std::uint64_t refused_ = 0;
  // Ends the agent has not taken yet (its queue was full), oldest first; bounded.
  static constexpr std::size_t kMaxEnded = 65536;
  std::deque<Message> ended_;
};

void ready_line(int fd, const std::string& line) {
  if (fd < 0) {
    return;
  }
  const std::string l = line + "\n";
  (void)!::write(fd, l.data(), l.size());
  ::close(fd);
}

}  // namespace

int run_keeper(const KeeperOptions& o) {
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGINT, SIG_IGN);  // a terminal's ^C for the agent is not for the connections
  Logger log;
  auto lfd = UniqueFd::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (!lfd) {
    ready_line(o.ready_fd, lfd.error().message());
    return 1;
  }
  socklen_t len = 0;
  const sockaddr_un sa = keeper_sockaddr(o.tun, len);
  if (::bind(lfd->get(), reinterpret_cast<const sockaddr*>(&sa), len) != 0 ||
      ::listen(lfd->get(), 8) != 0) {
    const int e = errno;
    ready_line(o.ready_fd, e == EADDRINUSE ? "TUN device " + o.tun + " has a keeper already"
                                           : "keeper socket: " + std::string(std::strerror(e)));
    return 1;
  }
  userstack::StackOptions so;
  so.tun.name = o.tun;
  if (!o.tun_clone.empty()) {
    so.tun.clone_path = o.tun_clone;
  }
  auto st = userstack::Stack::start(so);
  if (!st) {
    ready_line(o.ready_fd, st.error().message());
    return 1;
  }
  const int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) {
    ready_line(o.ready_fd, "eventfd: " + std::string(std::strerror(errno)));
    return 1;
  }
  log.info("keeper " + o.tun + ": pid " + std::to_string(::getpid()) +
           " serves the connections routed into TUN device " + o.tun);
  auto pumps = userstack::PumpSet::create();
  if (!pumps) {
    ready_line(o.ready_fd, pumps.error().message());
    return 1;
  }
  Keeper k(o, std::move(*st), std::move(*lfd), UniqueFd(efd), std::move(*pumps));
  ready_line(o.ready_fd, "ok");
  return k.run();
}

}  // namespace rendr::agents
