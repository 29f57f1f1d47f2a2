// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the userstack method's flow operations (flow_method.hpp) - an lwIP connection
// behind a Bridge, frozen in the Stack's shim (packets held, not dropped) and captured with
// Stack::snapshot, the bytes in flight between the Bridge and the server accounted exactly:
//   peer -> server: [unread at the server's end][pump buffer][lwIP unread]  -> receive queue
//   server -> peer: [lwIP send queue][pump buffer][unread at the pump's end] -> send queue
// The server stopped using its end at the export (the batch holds it), so both ends are read
// dry here. An abort rebuilds the connection from that snapshot in this Stack and resumes the
// Bridge on the same socketpair: the server gets its fd back and sees every byte once.
#include "agent_internal.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <optional>

namespace rendr::agents {

namespace {

// drop_peer_acked removes from |snap| the sent bytes a peer ACK |pa| (the source's freeze saw
// it) acknowledges, and takes that ACK's window, like repair's restore does for a kernel
// target. Needed on a userstack target: lwIP re-queues at most its 64 KiB send buffer, so an
// ACK beyond that is "beyond snd_nxt" to it and ignored - the peer, which has those bytes,
// answers every retransmission with that same ACK, and lwIP gives up with a RST (seen after
// native -> userstack moves with MBs in the kernel's send queue). Returns the bytes dropped.
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

}  // namespace

class UsSourceFlow final : public SourceFlow {
 public:
  UsSourceFlow(Agent& a, const FourTuple& t, int fd) : a_(a), t_(t), key_(t.to_string()), fd_(fd) {}

  Result<TcpSnapshot> checkpoint() override {
    auto it = a_.us_flows_.find(key_);
    if (!a_.stack_ || it == a_.us_flows_.end() || !it->second.bridge) {
      return make_error(std::errc::no_such_process,
                        "userstack: " + key_ + " has no bridge here (ended?)");
    }
    auto& stack = *a_.stack_;
    stack.freeze(t_);
    frozen_ = true;
    auto st = it->second.bridge->detach();
    if (!st) {
      return std::move(st).take_error().with_context("userstack: stop the bridge of " + key_);
    }
    service_ = it->second.service;
    a_.us_flows_.erase(it);
    // The server shut down its side while bytes still wait in the bridge: their FIN would have
    // to follow them; not moved (the connection serves on here).
    bool pump_eof = false;
    std::vector<std::byte> pump_unread;
    auto rd = read_dry(st->pump_end.get(), pump_unread, pump_eof);
    if (!rd || (pump_eof && !st->server_eof) || (st->server_eof && !st->conn_shut)) {
      const std::string why = !rd ? rd.error().message()
                                  : "the server half-closed it while its last bytes were in the "
                                    "bridge";
      if (!pump_unread.empty()) {
        st->from_server.insert(st->from_server.end(), pump_unread.begin(), pump_unread.end());
      }
      RENDR_TRY(resume(std::move(*st)));
      return make_error(std::errc::operation_not_supported, "userstack: " + key_ + ": " + why);
    }
    auto snap = stack.snapshot(*st->conn);
    if (!snap) {
      st->from_server.insert(st->from_server.end(), pump_unread.begin(), pump_unread.end());
      const Error e = snap.error();
      RENDR_TRY(resume(std::move(*st)));
      return e.with_context("userstack: snapshot " + key_);
    }
    // Peer -> server bytes the server did not read yet are the oldest unread ones.
    std::vector<std::byte> server_unread;
    bool server_end_eof = false;
    if (auto r = read_dry(fd_, server_unread, server_end_eof); !r) {
      return r.error();  // the connection is gone from lwIP: nothing to resume it from
    }
    st->to_server.insert(st->to_server.begin(), server_unread.begin(), server_unread.end());
    st->from_server.insert(st->from_server.end(), pump_unread.begin(), pump_unread.end());
    userstack::account_bridge(*snap, *st);
    pump_end_ = std::move(st->pump_end);
    flags_ = std::move(*st);
    flags_.conn.reset();
    snap_ = *snap;
    captured_ = true;
    return std::move(*snap);
  }
  std::pair<std::uint64_t, std::uint64_t> freeze_hints() const override { return {0, 0}; }
  std::uint64_t peer_ack_hint() const override { return 0; }
  Packets take_held() override {
    if (!a_.stack_ || !frozen_) {
      return {};
    }
    auto held = a_.stack_->take_held(t_);
    a_.stack_->freeze(t_);  // stray packets stay unanswered until release's grace ends
    return held;
  }
  void release() override {
    pump_end_.reset();
    if (frozen_) {
      a_.us_schedule_unfreeze(t_);
      frozen_ = false;
    }
  }
  Status thaw() override {
    if (!captured_ || !a_.stack_) {
      return {};
    }
    auto c = a_.stack_->restore(snap_);
    if (!c) {
      return c.error().with_context("userstack: rebuild " + key_ + " here");
    }
    flags_.conn = std::move(*c);
    flags_.pump_end = std::move(pump_end_);
    captured_ = false;
    return resume(std::move(flags_));
  }
  void unfreeze() override {
    if (frozen_ && a_.stack_) {
      (void)a_.stack_->thaw(t_);
      frozen_ = false;
    }
  }
  bool captured() const override { return captured_; }

 private:
  Status resume(userstack::BridgeState st) {
    auto b = userstack::Bridge::resume(std::move(st));
    if (!b) {
      return b.error().with_context("userstack: resume the bridge of " + key_);
    }
    a_.us_flows_[key_] = UsFlow{std::move(*b), service_};
    return {};
  }

  Agent& a_;
  FourTuple t_;
  std::string key_;
  int fd_;
  std::string service_;
  TcpSnapshot snap_;
  UniqueFd pump_end_;
  userstack::BridgeState flags_;
  bool frozen_ = false;
  bool captured_ = false;
};

class UsStagedFlow final : public StagedFlow {
 public:
  UsStagedFlow(Agent& a, TcpSnapshot snap, userstack::ConnectionPtr c, std::string service)
      : a_(a), snap_(std::move(snap)), conn_(std::move(c)), service_(std::move(service)) {}
  ~UsStagedFlow() override { release(); }
  const FourTuple& tuple() const override { return snap_.tuple; }
  const TcpSnapshot& snapshot() const override { return snap_; }
  Result<UniqueFd> activate(std::optional<repair::PeerAck> peer_ack, Packets replay) override {
    if (drop_peer_acked(snap_, peer_ack) > 0) {
      // The peer acknowledged more while the source was frozen than the OFFER said: rebuild
      // the (still frozen, unread) connection without those bytes.
      (void)a_.stack_->snapshot(*conn_);  // silent removal
      conn_.reset();
      auto c = a_.stack_->restore(snap_);
      if (!c) {
        (void)a_.stack_->take_held(snap_.tuple);
        return c.error().with_context("userstack: rebuild " + snap_.tuple.to_string() +
                                      " without the bytes the peer acknowledged");
      }
      conn_ = std::move(*c);
    }
    auto b = userstack::Bridge::start(std::move(conn_));
    if (!b) {
      (void)a_.stack_->take_held(snap_.tuple);
      return std::move(b).take_error();
    }
    UniqueFd fd = (*b)->take_fd();
    a_.us_flows_[snap_.tuple.to_string()] = UsFlow{std::move(*b), service_};
    // The source's held packets first (older), then what reached this host while staged.
    (void)a_.stack_->thaw(snap_.tuple, std::move(replay));
    return fd;
  }
  void release() override {
    if (!conn_ || !a_.stack_) {
      return;
    }
    // Silently: a snapshot removes the PCB without a FIN or RST.
    (void)a_.stack_->snapshot(*conn_);
    conn_.reset();
    (void)a_.stack_->take_held(snap_.tuple);
  }
  void release_staged() override {
    if (!conn_ || !a_.stack_) {
      return;
    }
    (void)a_.stack_->snapshot(*conn_);
    conn_.reset();
    // Still frozen: what the gateway sends here meanwhile is held, then dropped at the grace.
    a_.us_schedule_unfreeze(snap_.tuple);
  }

 private:
  Agent& a_;
  TcpSnapshot snap_;
  userstack::ConnectionPtr conn_;
  std::string service_;
};

std::unique_ptr<SourceFlow> Agent::us_source_flow(const FourTuple& t, int fd) {
  return std::make_unique<UsSourceFlow>(*this, t, fd);
}

Result<std::unique_ptr<StagedFlow>> Agent::us_staged_flow(
    TcpSnapshot snap, const std::string& service, std::optional<repair::PeerAck> peer_ack) {
  if (!stack_) {
    return make_error(std::errc::operation_not_supported, "no userstack here");
  }
  (void)drop_peer_acked(snap, peer_ack);
  stack_->freeze(snap.tuple);  // silent until COMMIT: what restore re-sends is held too
  auto c = stack_->restore(snap);
  if (!c) {
    (void)stack_->take_held(snap.tuple);
    return std::move(c).take_error();
  }
  return std::unique_ptr<StagedFlow>(
      std::make_unique<UsStagedFlow>(*this, std::move(snap), std::move(*c), service));
}

void Agent::us_schedule_unfreeze(const FourTuple& t) {
  auto timer = std::make_unique<asio::steady_timer>(io_, ms(cfg_.freeze_grace_ms));
  std::string key = t.to_string();
  timer->async_wait([this, t, key](asio::error_code ec) {
    if (ec || !stack_) {
      return;
    }
    (void)stack_->take_held(t);
    grace_.erase(key);
  });
  grace_[key] = std::move(timer);
}

}  // namespace rendr::agents
