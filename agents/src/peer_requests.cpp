// SPDX-License-Identifier: Apache-2.0
// rendr-agent: requests from peer agents - who may ask what, and the dispatch.
#include "agent_internal.hpp"

namespace rendr::agents {

std::string Agent::refusal_for(const PeerConn& c, const Message& m) const {
  const std::string& who = c.peer_name;
  const bool host_peer = cfg_.peers.contains(who) && who != cfg_.gateway;
  auto staged_by_other = [&]() -> bool {
    auto mig = m.u64(Tag::mig);
    if (!mig) {
      return false;  // the handler answers the malformed request
    }
    auto it = staged_.find(*mig);
    return it != staged_.end() && it->second->core.from() != who;
  };
  switch (m.type()) {
    case MsgType::hello:
    case MsgType::status:
      return {};
    case MsgType::offer:
      return host_peer ? std::string{} : who + " is not a --peer host of " + cfg_.name;
    case MsgType::commit:
    case MsgType::abort:
    case MsgType::query:
      if (!host_peer) {
        return who + " is not a --peer host of " + cfg_.name;
      }
      return staged_by_other() ? "the migration was offered by another agent" : std::string{};
    case MsgType::steer:
    case MsgType::steer_check:
      if (steerer_ && !backend_index_.contains(who)) {
        return who + " is not a --backend of gateway " + cfg_.name;
      }
      return {};
    default:
      return {};
  }
}

awaitable<Message> Agent::handle_peer(PeerConn& c, const Message& m) {
  if (std::string why = refusal_for(c, m); !why.empty()) {
    ++metrics_.peer_requests_refused;
    log_.warn("refused " + std::string(to_string(m.type())) + " from " + c.peer_name + ": " + why);
    co_return fail_msg(make_error(std::errc::permission_denied,
                                  std::string(to_string(m.type())) + " refused: " + why));
  }
  switch (m.type()) {
    case MsgType::hello:
      co_return Message(MsgType::hello).add(Tag::name, cfg_.name).add(Tag::version, "1");
    case MsgType::status:
      co_return Message(MsgType::json).add(Tag::text, status_json());
    case MsgType::offer: {
      auto mig = m.u64(Tag::mig);
      if (fault("delay_before_restore")) {
        asio::steady_timer t(io_, ms(3000));
        co_await t.async_wait(as_tuple_aw);
      }
      Message r = on_offer(c, m);
      if (fault("drop_after_offer")) {
        co_return Message(MsgType::abort);
      }
      (void)mig;
      co_return r;
    }
    case MsgType::commit: {
      Message r = on_commit(m);
      if (fault("drop_commit_reply")) {
        co_return Message(MsgType::abort);
      }
      co_return r;
    }
    case MsgType::abort: {
      auto mig = m.u64(Tag::mig);
      if (!mig) {
        co_return fail_msg(mig.error());
      }
      co_return on_abort(*mig, m.str_or(Tag::text, "source aborted"));
    }
    case MsgType::query: {
      if (m.get(Tag::mig) == nullptr && m.get(Tag::tuple) != nullptr) {
        auto t = FourTuple::parse(m.str_or(Tag::tuple, ""));
        if (!t) {
          co_return fail_msg(t.error().with_context("query"));
        }
        co_return on_query_tuple(c, *t);
      }
      auto mig = m.u64(Tag::mig);
      if (!mig) {
        co_return fail_msg(mig.error());
      }
      auto it = staged_.find(*mig);
      const std::string state =
          finished_.state_of(*mig, it != staged_.end() ? &it->second->core : nullptr);
      co_return Message(MsgType::mig_state).add_u64(Tag::mig, *mig).add(Tag::text, state);
    }
    case MsgType::steer:
      co_return on_steer(m, false);
    case MsgType::steer_check:
      co_return on_steer(m, true);
    default:
      co_return fail_msg(std::string("agent ") + cfg_.name + " does not handle " +
                         to_string(m.type()));
  }
}

}  // namespace rendr::agents
