// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the Unix control socket (rendrctl and embedders): accept, requests, replies.
#include "agent_internal.hpp"

namespace rendr::agents {

using namespace asio::experimental::awaitable_operators;

// ---------------------------------------------------------------------------------------------
// control socket

awaitable<void> Agent::control_acceptor() {
  for (;;) {
    auto sock = std::make_shared<seqp::socket>(io_);
    auto [ec] = co_await control_->async_accept(*sock, as_tuple_aw);
    if (ec) {
      if (ec == asio::error::operation_aborted) {
        co_return;
      }
      log_.warn("control accept: " + ec.message());
      continue;
    }
    ucred cred{};
    socklen_t cl = sizeof cred;
    if (::getsockopt(sock->native_handle(), SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 ||
        (cred.uid != 0 && cred.uid != ::geteuid())) {
      // An unprivileged agent (userstack) also serves its own user.
      (void)send_packet(sock->native_handle(),
                        fail_msg("the rendr-agent control socket is root-only (and the "
                                 "agent's own user)"));
      continue;
    }
    asio::co_spawn(io_, serve_control(sock), asio::detached);
  }
}

awaitable<Status> Agent::send_reply(seqp::socket& sock, const Message& m) {
  // Never block the io thread on one client: wait for room in its queue asynchronously, at
  // most one step timeout (a client that stopped reading is then dropped).
  asio::steady_timer t(io_, ms(cfg_.step_timeout_ms));
  for (;;) {
    auto s = send_packet_nowait(sock.native_handle(), m);
    if (s.ok() || s.error().code != std::errc::resource_unavailable_try_again) {
      co_return s;
    }
    auto r = co_await (sock.async_wait(asio::socket_base::wait_write, as_tuple_aw) ||
                       t.async_wait(as_tuple_aw));
    if (r.index() == 1) {
      co_return make_error(std::errc::timed_out,
                           "control client does not read its replies: dropped");
    }
    if (auto [ec] = std::get<0>(r); ec) {
      co_return Error{ec, "control client"};
    }
  }
}

awaitable<void> Agent::serve_control(std::shared_ptr<seqp::socket> sock) {
  std::shared_ptr<AppSession> session;
  for (;;) {
    auto [ec] = co_await sock->async_wait(asio::socket_base::wait_read, as_tuple_aw);
    if (ec) {
      break;
    }
    auto p = recv_packet(sock->native_handle());
    if (!p) {
      if (p.error().code == std::errc::resource_unavailable_try_again) {
        continue;
      }
      if (p.error().code != std::errc::connection_reset) {
        log_.warn("control: " + p.error().message());
        (void)send_packet(sock->native_handle(), fail_msg(p.error()));
      }
      break;
    }
    if (session) {
      on_session_message(*session, *p);
      continue;
    }
    Message reply = co_await handle_request(sock, *p, session);
    if (!(co_await send_reply(*sock, reply)).ok()) {
      break;
    }
  }
  if (session) {
    drop_session(*session);
  }
}

awaitable<Message> Agent::handle_request(const std::shared_ptr<seqp::socket>& sock, Packet& p,
                                         std::shared_ptr<AppSession>& session) {
  const Message& m = p.msg;
  switch (m.type()) {
    case MsgType::register_service: {
      auto svc = m.str(Tag::service);
      if (!svc || svc->empty()) {
        co_return fail_msg("register_service needs a service name");
      }
      session = std::make_shared<AppSession>();
      session->id = next_session_++;
      session->service = *svc;
      session->sock = sock;
      session->same_netns = peer_in_our_netns(sock->native_handle());
      sessions_[session->id] = session;
      log_.info("service " + *svc + " registered (session " + std::to_string(session->id) + ")");
      warm_channels();
      // Connections that arrived while no server was registered.
      auto it = orphans_.find(*svc);
      if (it != orphans_.end()) {
        auto queue = std::move(it->second);
        orphans_.erase(it);
        asio::post(io_, [this, svc = *svc, q = std::make_shared<std::deque<Orphan>>(
                                               std::move(queue))]() mutable {
          while (!q->empty()) {
            adopt_or_queue(svc, std::move(q->front()));
            q->pop_front();
          }
        });
      }
      co_return ok_msg("registered " + *svc);
    }
    case MsgType::status: {
      auto peer = m.str(Tag::peer);
      if (!peer || peer->empty() || *peer == cfg_.name) {
        co_return Message(MsgType::json).add(Tag::text, status_json());
      }
      auto c = co_await take_peer(*peer);
      if (!c) {
        co_return fail_msg(c.error());
      }
      auto r = co_await rpc(**c, Message(MsgType::status),
                            Clock::now() + ms(cfg_.step_timeout_ms));
      if (!r) {
        co_return fail_msg(r.error());
      }
      give_back(std::move(*c));
      co_return std::move(*r);
    }
    case MsgType::flows:
      co_return Message(MsgType::json).add(Tag::text, flows_json());
    case MsgType::metrics:
      co_return Message(MsgType::text).add(Tag::text, metrics_text());
    case MsgType::migrate:
      co_return co_await migrate(sock, m);
    default:
      co_return fail_msg(std::string("unexpected request ") + to_string(m.type()) +
                         " (register_service first for embedder messages)");
  }
}

void Agent::progress(const std::shared_ptr<seqp::socket>& ctl, const std::string& line) {
  if (ctl) {
    // Progress is informational: a client that does not read it loses lines, nobody waits.
    (void)send_packet_nowait(ctl->native_handle(),
                             Message(MsgType::progress).add(Tag::text, line));
  }
}

}  // namespace rendr::agents
