// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the mutual-TLS agent channel - pool, connect, framed read/write, accept.
#include "agent_internal.hpp"

#include <malloc.h>

namespace rendr::agents {

using namespace asio::experimental::awaitable_operators;

// ---------------------------------------------------------------------------------------------
// agent channel

awaitable<Result<std::unique_ptr<PeerConn>>> Agent::connect_peer(const std::string& name) {
  auto it = cfg_.peers.find(name);
  if (it == cfg_.peers.end()) {
    co_return make_error(std::errc::invalid_argument,
                         "unknown peer agent '" + name + "' (configure it with --peer " + name +
                             "=ADDR:PORT)");
  }
  auto ep = tcp_endpoint(it->second);
  if (!ep) {
    co_return std::move(ep).take_error().with_context("peer " + name);
  }
  auto c = std::make_unique<PeerConn>(io_, tls_client_, cfg_.max_frame_bytes);
  c->peer_name = name;
  asio::steady_timer t(io_, ms(cfg_.step_timeout_ms));
  auto r = co_await (c->stream.lowest_layer().async_connect(*ep, as_tuple_aw) ||
                     t.async_wait(as_tuple_aw));
  if (r.index() == 1) {
    co_return make_error(std::errc::timed_out, "connect to agent " + name + " at " + it->second);
  }
  if (auto [ec] = std::get<0>(r); ec) {
    co_return Error{ec, "connect to agent " + name + " at " + it->second};
  }
  c->stream.lowest_layer().set_option(asio::ip::tcp::no_delay(true));
  c->stream.set_verify_callback(asio::ssl::host_name_verification(name));
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"
  SSL_set_tlsext_host_name(c->stream.native_handle(), name.c_str());
#pragma GCC diagnostic pop
  t.expires_after(ms(cfg_.step_timeout_ms));
  auto h = co_await (c->stream.async_handshake(asio::ssl::stream_base::client, as_tuple_aw) ||
                     t.async_wait(as_tuple_aw));
  if (h.index() == 1) {
    co_return make_error(std::errc::timed_out, "TLS handshake with agent " + name);
  }
  if (auto [ec] = std::get<0>(h); ec) {
    co_return Error{ec, "TLS handshake with agent " + name +
                            " (certificate not signed by our CA, or not issued to '" + name + "')"};
  }
  ++metrics_.peer_channels_opened;
  co_return std::move(c);
}

awaitable<Result<std::unique_ptr<PeerConn>>> Agent::take_live(const std::string& name) {
  auto c = co_await take_peer(name);
  if (c) {
    auto h = co_await rpc(**c, Message(MsgType::hello).add(Tag::name, cfg_.name),
                          Clock::now() + ms(cfg_.step_timeout_ms));
    if (h && h->type() == MsgType::hello) {
      co_return std::move(*c);
    }
    c = co_await connect_peer(name);
  }
  co_return std::move(c);
}

awaitable<Result<std::unique_ptr<PeerConn>>> Agent::take_peer(const std::string& name) {
  auto& idle = pool_[name];
  while (!idle.empty()) {
    auto c = std::move(idle.back());
    idle.pop_back();
    if (!c->broken && c->stream.lowest_layer().is_open()) {
      co_return std::move(c);
    }
  }
  co_return co_await connect_peer(name);
}

void Agent::warm_channels() {
  std::vector<std::string> names;
  for (const auto& [name, addr] : cfg_.peers) {
    names.push_back(name);
  }
  if (!cfg_.gateway.empty()) {
    names.push_back(cfg_.gateway);
  }
  for (const auto& name : names) {
    if (name != cfg_.name && warmed_.insert(name).second) {
      asio::co_spawn(io_, warm_channel(name), asio::detached);
    }
  }
}

awaitable<void> Agent::warm_channel(std::string name) {
  if (!pool_[name].empty()) {
    co_return;
  }
  auto c = co_await connect_peer(name);
  if (!c) {
    // Not an error: the peer may not be up yet; the first migration connects then.
    log_.debug("channel to " + name + " not opened ahead: " + c.error().message());
    co_return;
  }
  give_back(std::move(*c));
}

void Agent::give_back(std::unique_ptr<PeerConn> c) {
  if (c && !c->broken && c->reader.buffered() == 0) {
    auto& idle = pool_[c->peer_name];
    if (idle.size() < 8) {
      idle.push_back(std::move(c));
    }
  }
}

awaitable<Status> Agent::write_msg(PeerConn& c, const Message& m, Clock::time_point deadline) {
  auto bytes = m.encode_framed();
  asio::steady_timer t(io_, deadline);
  auto r = co_await (asio::async_write(c.stream, asio::buffer(bytes), as_tuple_aw) ||
                     t.async_wait(as_tuple_aw));
  if (r.index() == 1) {
    c.broken = true;
    co_return make_error(std::errc::timed_out,
                         std::string("send ") + to_string(m.type()) + " to " + c.peer_name);
  }
  if (auto [ec, n] = std::get<0>(r); ec) {
    c.broken = true;
    co_return Error{ec, std::string("send ") + to_string(m.type()) + " to " + c.peer_name};
  }
  co_return Status{};
}

awaitable<Result<Message>> Agent::read_msg(PeerConn& c, Clock::time_point deadline) {
  constexpr std::size_t kChunk = 64 * 1024;
  constexpr std::size_t kBigRead = 1U << 20;
  std::vector<std::byte> buf(kChunk);
  asio::steady_timer t(io_, deadline);  // one timer for the whole message
  for (;;) {
    auto n = c.reader.next();
    if (!n) {
      c.broken = true;
      co_return std::move(n).take_error().with_context("channel to " + c.peer_name);
    }
    if (*n) {
      co_return std::move(**n);
    }
    // A large frame (a snapshot) is read in composed reads of what it lacks, not one TLS
    // record (16 KiB) per loop turn - at most kBigRead at a time, so memory follows the bytes
    // that really arrived, not what a length prefix claims.
    const std::size_t want = std::min(c.reader.need(), kBigRead);
    if (want > buf.size()) {
      buf.resize(want);
    }
    // (if/else, not ?: : GCC 12 miscompiles a conditional over awaitables in a coroutine.)
    std::variant<std::tuple<asio::error_code, std::size_t>, std::tuple<asio::error_code>> r;
    if (want > kChunk) {
      r = co_await (asio::async_read(c.stream, asio::buffer(buf.data(), want), as_tuple_aw) ||
                    t.async_wait(as_tuple_aw));
    } else {
      r = co_await (c.stream.async_read_some(asio::buffer(buf.data(), kChunk), as_tuple_aw) ||
                    t.async_wait(as_tuple_aw));
    }
    if (r.index() == 1) {
      c.broken = true;
      co_return make_error(std::errc::timed_out, "no answer from agent " + c.peer_name);
    }
    auto [ec, got] = std::get<0>(r);
    if (ec) {
      c.broken = true;
      co_return Error{ec, "channel to agent " + c.peer_name + " broke"};
    }
    c.reader.feed(std::span(buf.data(), got));
  }
}

awaitable<Result<Message>> Agent::rpc(PeerConn& c, const Message& m, Clock::time_point deadline) {
  auto w = co_await write_msg(c, m, deadline);
  if (!w) {
    co_return std::move(w).take_error();
  }
  co_return co_await read_msg(c, deadline);
}

awaitable<void> Agent::peer_acceptor() {
  for (;;) {
    auto c = std::make_unique<PeerConn>(io_, tls_server_, cfg_.max_frame_bytes);
    auto [ec] = co_await peer_acc_->async_accept(c->stream.lowest_layer(), as_tuple_aw);
    if (ec) {
      if (ec == asio::error::operation_aborted) {
        co_return;
      }
      // EMFILE/ENFILE/ENOBUFS: the pending connection stays queued; retrying at once would
      // spin a core until a descriptor frees up.
      asio::steady_timer backoff(io_, ms(100));
      co_await backoff.async_wait(as_tuple_aw);
      continue;
    }
    // Unauthenticated channels are bounded: each handshake holds ~130 KiB of TLS state.
    if (handshaking_ >= kMaxHandshakes) {
      if (metrics_.peers_refused++ % 1000 == 0) {
        log_.warn("refused agent channels: " + std::to_string(kMaxHandshakes) +
                  " TLS handshakes already in progress");
      }
      asio::error_code ignored;
      c->stream.lowest_layer().close(ignored);
      continue;
    }
    asio::co_spawn(io_, serve_peer(std::move(c)), asio::detached);
  }
}

void Agent::channel_closed() {
  // A flood of channels (a slowloris of unfinished handshakes, each with its TLS buffers) leaves
  // the freed memory in glibc's heap, which keeps it (9 -> 140 MB after 1 000 connections).
  // Once many have closed and none for a second, give it back to the kernel.
  constexpr std::size_t kTrimAfter = 64;
  if (++closed_since_trim_ < kTrimAfter) {
    return;
  }
  if (!trim_timer_) {
    trim_timer_ = std::make_unique<asio::steady_timer>(io_);
  }
  trim_timer_->expires_after(std::chrono::seconds(1));
  trim_timer_->async_wait([this](const asio::error_code& ec) {
    if (!ec) {
      closed_since_trim_ = 0;
      ::malloc_trim(0);
    }
  });
}

awaitable<void> Agent::serve_peer(std::unique_ptr<PeerConn> c) {
  struct Closed {
    Agent& a;
    ~Closed() { a.channel_closed(); }
  } closed{*this};
  asio::error_code ignored;
  c->stream.lowest_layer().set_option(asio::ip::tcp::no_delay(true), ignored);
  asio::steady_timer t(io_, ms(cfg_.step_timeout_ms));
  ++handshaking_;
  auto h = co_await (c->stream.async_handshake(asio::ssl::stream_base::server, as_tuple_aw) ||
                     t.async_wait(as_tuple_aw));
  --handshaking_;
  std::string remote = "?";
  {
    asio::error_code e2;
    auto ep = c->stream.lowest_layer().remote_endpoint(e2);
    if (!e2) {
      remote = ep.address().to_string() + ":" + std::to_string(ep.port());
    }
  }
  if (h.index() == 1 || std::get<0>(h) != std::tuple<asio::error_code>{}) {
    std::string why = h.index() == 1 ? "timed out" : std::get<0>(std::get<0>(h)).message();
    ++metrics_.peers_refused;
    log_.warn("refused agent channel from " + remote + ": TLS handshake failed (" + why + ")");
    co_return;
  }
  c->peer_name = peer_common_name(c->stream.native_handle());
  if (c->peer_name.empty()) {
    ++metrics_.peers_refused;
    log_.warn("refused agent channel from " + remote + ": certificate has no CN");
    co_return;
  }
  // The CA may sign certificates for agents this one has nothing to do with: only names this
  // agent was configured with (--peer, --backend) get a channel.
  if (!cfg_.peers.contains(c->peer_name) && !backend_index_.contains(c->peer_name)) {
    ++metrics_.peers_refused;
    log_.warn("refused agent channel from " + remote + ": certificate CN '" + c->peer_name +
              "' is not a configured --peer or --backend of " + cfg_.name);
    co_return;
  }
  for (;;) {
    auto m = co_await read_msg(*c, Clock::now() + std::chrono::hours(24 * 365));
    if (!m) {
      break;
    }
    Message reply = co_await handle_peer(*c, *m);
    if (reply.type() == MsgType::abort && reply.fields().empty()) {
      break;  // fault injection: drop the channel without an answer
    }
    auto w = co_await write_msg(*c, reply, Clock::now() + ms(cfg_.step_timeout_ms));
    if (!w) {
      break;
    }
  }
  // Self-abort whatever this channel staged and did not commit.
  for (auto& [mig, sm] : staged_) {
    if (sm->channel == c.get()) {
      sm->channel = nullptr;
      if (sm->core.on_channel_closed() == TargetVerdict::release) {
        abort_staged(*sm, "channel to " + c->peer_name + " closed before commit");
      }
    }
  }
}

}  // namespace rendr::agents
