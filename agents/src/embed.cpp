// SPDX-License-Identifier: Apache-2.0
#include <rendr/agents/embed.hpp>
#include <rendr/agents/packet.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>

namespace rendr::agents {

namespace {

constexpr int kFirstRetryMs = 100;
constexpr int kMaxRetryMs = 2000;
constexpr int kRegisterTimeoutMs = 5000;

// agent_gone: the control socket failed because the agent is no longer at its other end.
bool agent_gone(const Error& e) {
  return e.code == std::errc::connection_reset || e.code == std::errc::broken_pipe ||
         e.code == std::errc::not_connected || e.code == std::errc::connection_aborted;
}

Message track_msg(std::uint64_t id, const FourTuple& t) {
  Message m(MsgType::track);
  m.add_u64(Tag::conn_id, id).add(Tag::tuple, t.to_string());
  return m;
}

}  // namespace

Result<Session> Session::connect(const std::string& path, std::string_view service) {
  auto s = connect_control(path);
  if (!s) {
    return std::move(s).take_error();
  }
  auto reply = call(s->get(), Message(MsgType::register_service).add(Tag::service, service),
                    kRegisterTimeoutMs);
  if (!reply) {
    return std::move(reply).take_error().with_context("register service");
  }
  if (reply->type() != MsgType::ok) {
    return error_of(*reply, "register service " + std::string(service));
  }
  int fl = ::fcntl(s->get(), F_GETFL);
  (void)::fcntl(s->get(), F_SETFL, fl | O_NONBLOCK);
  return Session(std::move(*s), path, std::string(service));
}

int Session::timeout_ms() const {
  if (lost_) {
    return 0;
  }
  if (link_ == Link::registered) {
    return -1;
  }
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next_try_ - Clock::now());
  // Round up, so a poll() that waits this long finds the attempt due.
  return static_cast<int>(std::clamp<long long>(left.count() + 1, 0, kRegisterTimeoutMs));
}

Status Session::send(const Message& m, int fd) {
  if (link_ != Link::registered) {
    return make_error(std::errc::not_connected, "the agent is away (registering again)");
  }
  auto s = send_packet(sock_.get(), m, fd);
  if (!s.ok() && agent_gone(s.error())) {
    lose(s.error().message());
  }
  return s;
}

namespace {

// in_repair: the agent switched |fd| to repair mode (it froze and checkpointed it for a move).
// Reading TCP_REPAIR needs no privilege.
bool in_repair(int fd) {
  int v = 0;
  socklen_t l = sizeof v;
  return ::getsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &v, &l) == 0 && v != 0;
}

}  // namespace

void Session::lose(std::string why) {
  sock_ = UniqueFd();
  if (link_ == Link::registered) {
    AgentLost l{std::move(why), 0, 0, 0, 0};
    // Exports in flight: a connection the agent had not frozen yet is untouched, and ours
    // again; one it had frozen (repair mode) only an agent can resume or finish: kept for the
    // next one (registration_answer hands it over).
    for (auto it = exported_.begin(); it != exported_.end();) {
      Exported& e = it->second;
      if (e.fd.valid() && in_repair(e.fd.get())) {
        e.frozen = true;
        ++l.exports_frozen;
        ++it;
        continue;
      }
      if (e.fd.valid()) {
        held_[it->first] = e.tuple;
        pending_.push_back(Returned{it->first, std::move(e.fd), std::move(e.state)});
        ++l.exports_returned;
      } else {
        ++l.exports_lost;
      }
      it = exported_.erase(it);
    }
    lost_ = std::move(l);
    attempts_ = 0;
    backoff_ms_ = kFirstRetryMs;
  } else {
    backoff_ms_ = std::min(backoff_ms_ * 2, kMaxRetryMs);
  }
  link_ = Link::away;
  next_try_ = Clock::now() + std::chrono::milliseconds(backoff_ms_);
}

void Session::try_register() {
  ++attempts_;
  auto s = connect_control(path_, /*nonblocking=*/true);
  if (!s) {
    lose(s.error().message());
    return;
  }
  sock_ = std::move(*s);
  link_ = Link::registering;
  auto st = send_packet_nowait(sock_.get(),
                               Message(MsgType::register_service).add(Tag::service, service_));
  if (!st.ok()) {
    lose(st.error().message());
    return;
  }
  next_try_ = Clock::now() + std::chrono::milliseconds(kRegisterTimeoutMs);
}

Result<std::optional<Session::Event>> Session::registration_answer() {
  auto p = recv_packet(sock_.get());
  if (!p) {
    if (p.error().code == std::errc::resource_unavailable_try_again) {
      if (Clock::now() >= next_try_) {
        lose("no answer to register_service");
      }
      return std::optional<Event>{};
    }
    lose(p.error().message());
    return std::optional<Event>{};
  }
  if (p->msg.type() != MsgType::ok) {
    // An agent that refuses the registration: try again later, like an absent one.
    lose(p->msg.str_or(Tag::text, "register_service refused"));
    return std::optional<Event>{};
  }
  for (const auto& [id, t] : held_) {
    auto s = send_packet(sock_.get(), track_msg(id, t));
    if (!s.ok()) {
      // Gone again (or not reading) before the tracks were through: one more failed attempt;
      // the list is intact for the next one.
      lose(s.error().message());
      return std::optional<Event>{};
    }
  }
  std::size_t reclaimed = 0;
  for (auto& [id, e] : exported_) {
    if (!e.frozen) {
      continue;
    }
    Message m(MsgType::reclaim);
    m.add_u64(Tag::conn_id, id).add(Tag::tuple, e.tuple.to_string()).add(Tag::state, e.state);
    if (auto s = send_packet(sock_.get(), m, e.fd.get()); !s.ok()) {
      lose(s.error().message());
      return std::optional<Event>{};
    }
    ++reclaimed;
  }
  link_ = Link::registered;
  return std::optional<Event>(AgentBack{held_.size(), attempts_, reclaimed});
}

Result<std::uint64_t> Session::track(int conn_fd) {
  auto t = FourTuple::of_socket(conn_fd);
  if (!t) {
    return std::move(t).take_error().with_context("track: not a connected TCP/IP socket");
  }
  std::uint64_t id = next_id_++;
  held_[id] = *t;
  if (link_ == Link::registered) {
    auto s = send(track_msg(id, *t));
    if (!s.ok() && !agent_gone(s.error())) {
      held_.erase(id);
      return std::move(s).take_error();
    }
  }
  return id;
}

Status Session::untrack(std::uint64_t conn_id) {
  held_.erase(conn_id);
  exported_.erase(conn_id);
  if (link_ != Link::registered) {
    return {};
  }
  auto s = send(Message(MsgType::untrack).add_u64(Tag::conn_id, conn_id));
  if (!s.ok() && agent_gone(s.error())) {
    return {};  // the next agent never hears of it
  }
  return s;
}

Result<std::optional<Session::Event>> Session::poll_event() {
  if (lost_) {
    AgentLost l = std::move(*lost_);
    l.conns = held_.size();
    lost_.reset();
    return std::optional<Event>(std::move(l));
  }
  if (!pending_.empty()) {
    Event e = std::move(pending_.front());
    pending_.pop_front();
    return std::optional<Event>(std::move(e));
  }
  if (link_ == Link::away) {
    if (Clock::now() >= next_try_) {
      try_register();
    }
    return std::optional<Event>{};
  }
  if (link_ == Link::registering) {
    return registration_answer();
  }
  auto p = recv_packet(sock_.get());
  if (!p) {
    if (p.error().code == std::errc::resource_unavailable_try_again) {
      return std::optional<Event>{};
    }
    if (agent_gone(p.error())) {
      lose(p.error().message());
      return poll_event();  // reports the loss
    }
    return std::move(p).take_error();
  }
  const Message& m = p->msg;
  auto state_of = [&m] {
    const auto* v = m.get(Tag::state);
    return v == nullptr ? std::vector<std::byte>{} : *v;
  };
  switch (m.type()) {
    case MsgType::export_request: {
      ExportRequest r;
      auto mig = m.u64(Tag::mig);
      auto ids = m.u64s(Tag::conn_id);
      if (!mig || !ids) {
        return make_error(std::errc::bad_message, "malformed export request from the agent");
      }
      r.migration = *mig;
      r.conn_ids = std::move(*ids);
      return std::optional<Event>(std::move(r));
    }
    case MsgType::adopt: {
      Adopt a;
      auto id = m.u64(Tag::conn_id);
      auto ts = m.str(Tag::tuple);
      if (!id || !ts || !p->fd.valid()) {
        return make_error(std::errc::bad_message, "malformed adopt message from the agent");
      }
      auto t = FourTuple::parse(*ts);
      if (!t) {
        return make_error(std::errc::bad_message, "adopt: bad tuple " + *ts);
      }
      a.conn_id = *id;
      a.tuple = *t;
      a.fd = std::move(p->fd);
      a.state = state_of();
      held_[a.conn_id] = a.tuple;
      return std::optional<Event>(std::move(a));
    }
    case MsgType::export_done: {
      auto id = m.u64(Tag::conn_id);
      if (!id) {
        return make_error(std::errc::bad_message, "malformed export_done from the agent");
      }
      exported_.erase(*id);
      return std::optional<Event>(ExportDone{*id});
    }
    case MsgType::returned: {
      auto id = m.u64(Tag::conn_id);
      if (!id || !p->fd.valid()) {
        return make_error(std::errc::bad_message, "malformed returned message from the agent");
      }
      Returned r;
      r.conn_id = *id;
      r.fd = std::move(p->fd);
      r.state = state_of();
      if (auto it = exported_.find(r.conn_id); it != exported_.end()) {
        held_[r.conn_id] = it->second.tuple;
        exported_.erase(it);
      } else if (auto t = FourTuple::of_socket(r.fd.get()); t) {
        held_[r.conn_id] = *t;
      }
      return std::optional<Event>(std::move(r));
    }
    default:
      return make_error(std::errc::bad_message,
                        std::string("unexpected message from the agent: ") + to_string(m.type()));
  }
}

Status Session::export_conn(std::uint64_t conn_id, int conn_fd, std::span<const std::byte> state) {
  // Our duplicate first: without it an agent that dies mid-move would take the connection along.
  UniqueFd dup(::fcntl(conn_fd, F_DUPFD_CLOEXEC, 0));
  if (!dup.valid()) {
    return errno_error("export: keep a duplicate of the connection's descriptor");
  }
  Message m(MsgType::exported);
  m.add_u64(Tag::conn_id, conn_id).add(Tag::state, state);
  RENDR_TRY(send(m, conn_fd));
  if (auto it = held_.find(conn_id); it != held_.end()) {
    exported_[conn_id] = Exported{it->second, std::move(dup),
                                  std::vector<std::byte>(state.begin(), state.end())};
    held_.erase(it);
  }
  return {};
}

Status Session::refuse_export(std::uint64_t conn_id, std::string_view why) {
  Message m(MsgType::export_refused);
  m.add_u64(Tag::conn_id, conn_id).add(Tag::text, why);
  return send(m);
}

}  // namespace rendr::agents
