// SPDX-License-Identifier: Apache-2.0
#include <rendr/agents/embed.hpp>
#include <rendr/agents/packet.hpp>

#include <fcntl.h>
#include <sys/socket.h>

namespace rendr::agents {

Result<Session> Session::connect(const std::string& path, std::string_view service) {
  auto s = connect_control(path);
  if (!s) {
    return std::move(s).take_error();
  }
  auto reply = call(s->get(), Message(MsgType::register_service).add(Tag::service, service), 5000);
  if (!reply) {
    return std::move(reply).take_error().with_context("register service");
  }
  if (reply->type() != MsgType::ok) {
    return error_of(*reply, "register service " + std::string(service));
  }
  int fl = ::fcntl(s->get(), F_GETFL);
  (void)::fcntl(s->get(), F_SETFL, fl | O_NONBLOCK);
  return Session(std::move(*s));
}

Result<std::uint64_t> Session::track(int conn_fd) {
  auto t = FourTuple::of_socket(conn_fd);
  if (!t) {
    return std::move(t).take_error().with_context("track: not a connected TCP/IP socket");
  }
  std::uint64_t id = next_id_++;
  Message m(MsgType::track);
  m.add_u64(Tag::conn_id, id).add(Tag::tuple, t->to_string());
  RENDR_TRY(send_packet(sock_.get(), m));
  return id;
}

Status Session::untrack(std::uint64_t conn_id) {
  return send_packet(sock_.get(), Message(MsgType::untrack).add_u64(Tag::conn_id, conn_id));
}

Result<std::optional<Session::Event>> Session::poll_event() {
  auto p = recv_packet(sock_.get());
  if (!p) {
    if (p.error().code == std::errc::resource_unavailable_try_again) {
      return std::optional<Event>{};
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
      return std::optional<Event>(std::move(a));
    }
    case MsgType::export_done: {
      auto id = m.u64(Tag::conn_id);
      if (!id) {
        return make_error(std::errc::bad_message, "malformed export_done from the agent");
      }
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
      return std::optional<Event>(std::move(r));
    }
    default:
      return make_error(std::errc::bad_message,
                        std::string("unexpected message from the agent: ") + to_string(m.type()));
  }
}

Status Session::export_conn(std::uint64_t conn_id, int conn_fd, std::span<const std::byte> state) {
  Message m(MsgType::exported);
  m.add_u64(Tag::conn_id, conn_id).add(Tag::state, state);
  return send_packet(sock_.get(), m, conn_fd);
}

Status Session::refuse_export(std::uint64_t conn_id, std::string_view why) {
  Message m(MsgType::export_refused);
  m.add_u64(Tag::conn_id, conn_id).add(Tag::text, why);
  return send_packet(sock_.get(), m);
}

}  // namespace rendr::agents
