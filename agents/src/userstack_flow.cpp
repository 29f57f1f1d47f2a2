// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the userstack method's flow operations (flow_method.hpp). The connection lives
// in the userstack keeper (us_keeper.hpp), which runs each step on request: freeze it in the
// Stack's shim (packets held, not dropped), stop its pump and capture it with the bytes in
// flight between the pump and the server accounted exactly:
//   peer -> server: [unread at the server's end][pump buffer][lwIP unread]  -> receive queue
//   server -> peer: [lwIP send queue][pump buffer][unread at the pump's end] -> send queue
// The server stopped using its end at the export (the batch holds it; the keeper gets a
// duplicate to read it dry). An abort rebuilds the connection from that snapshot in the keeper
// and resumes the pump on the same socketpair: the server gets its fd back and sees every
// byte once. A target restores an offered snapshot there (staged, frozen) and activates it at
// COMMIT.
#include "agent_internal.hpp"

#include "us_keeper.hpp"

namespace rendr::agents {

namespace {

Message with_tuple(MsgType t, const std::string& key) {
  Message m(t);
  m.add(Tag::tuple, key);
  return m;
}

Result<Message> body_reply(Result<Packet> r) {
  if (!r) {
    return std::move(r).take_error();
  }
  return body_of(*r);
}

}  // namespace

class UsSourceFlow final : public SourceFlow {
 public:
  UsSourceFlow(Agent& a, const FourTuple& t, int fd) : a_(a), t_(t), key_(t.to_string()), fd_(fd) {}

  Result<TcpSnapshot> checkpoint() override {
    if (!a_.keeper_) {
      return make_error(std::errc::no_such_process, "userstack: the keeper is gone");
    }
    frozen_ = true;
    auto b = body_reply(a_.keeper_->call(with_tuple(keeper::kCheckpoint, key_), fd_));
    if (!b) {
      return std::move(b).take_error();
    }
    const auto* raw = b->get(Tag::snapshot);
    if (raw == nullptr) {
      return make_error(std::errc::bad_message, "userstack keeper: no snapshot");
    }
    auto snap = decode_snapshot(*raw);
    if (!snap) {
      return std::move(snap).take_error();
    }
    captured_ = true;
    return snap;
  }
  std::pair<std::uint64_t, std::uint64_t> freeze_hints() const override { return {0, 0}; }
  std::uint64_t peer_ack_hint() const override { return 0; }
  Packets take_held() override {
    if (!a_.keeper_ || !frozen_) {
      return {};
    }
    auto b = body_reply(a_.keeper_->call(with_tuple(keeper::kTakeHeld, key_)));
    Packets held;
    if (b) {
      for (const auto* p : b->all(Tag::replay)) {
        held.push_back(*p);
      }
    }
    return held;
  }
  void release() override {
    if (a_.keeper_ && (frozen_ || captured_)) {
      (void)a_.keeper_->call(with_tuple(keeper::kRelease, key_));
    }
    a_.us_tuples_.erase(key_);
    frozen_ = false;
    captured_ = false;
  }
  Status thaw() override {
    if (!captured_ || !a_.keeper_) {
      return {};
    }
    auto r = a_.keeper_->call(with_tuple(keeper::kThaw, key_));
    if (!r) {
      return r.error().with_context("userstack: rebuild " + key_ + " here");
    }
    captured_ = false;
    return {};
  }
  void unfreeze() override {
    if (frozen_ && a_.keeper_) {
      (void)a_.keeper_->call(with_tuple(keeper::kUnfreeze, key_));
      frozen_ = false;
    }
  }
  bool captured() const override { return captured_; }

 private:
  Agent& a_;
  FourTuple t_;
  std::string key_;
  int fd_;
  bool frozen_ = false;
  bool captured_ = false;
};

class UsStagedFlow final : public StagedFlow {
 public:
  UsStagedFlow(Agent& a, TcpSnapshot snap) : a_(a), snap_(std::move(snap)), key_(snap_.tuple.to_string()) {}
  ~UsStagedFlow() override { release(); }
  const FourTuple& tuple() const override { return snap_.tuple; }
  const TcpSnapshot& snapshot() const override { return snap_; }
  Result<UniqueFd> activate(std::optional<repair::PeerAck> peer_ack, Packets replay) override {
    if (!a_.keeper_) {
      return make_error(std::errc::no_such_process, "userstack: the keeper is gone");
    }
    Message b(MsgType::ok);
    for (auto& p : replay) {
      b.add(Tag::replay, std::move(p));
    }
    Message m = with_tuple(keeper::kActivate, key_);
    if (peer_ack) {
      m.add_u64(Tag::peer_ack, encode_peer_ack(*peer_ack));
    }
    UniqueFd fd;
    RENDR_TRY(attach_body(m, b, fd));
    auto r = a_.keeper_->call(m, fd.get());
    staged_ = false;
    if (!r) {
      return std::move(r).take_error();
    }
    if (!r->fd.valid()) {
      return make_error(std::errc::bad_message, "userstack keeper: no fd for the server");
    }
    a_.us_tuples_.insert(key_);
    return std::move(r->fd);
  }
  void release() override { drop(false); }
  void release_staged() override { drop(true); }

 private:
  // drop removes the staged connection silently; |keep_frozen|: its freeze stays for the
  // agent's freeze grace (an abort or expiry: the gateway may already send the peer here).
  void drop(bool keep_frozen) {
    if (!staged_ || !a_.keeper_) {
      return;
    }
    staged_ = false;
    Message m = with_tuple(keeper::kDropStaged, key_);
    if (keep_frozen) {
      m.add_u64(Tag::ok, 1);
    }
    (void)a_.keeper_->call(m);
  }

  Agent& a_;
  TcpSnapshot snap_;
  std::string key_;
  bool staged_ = true;
};

std::unique_ptr<SourceFlow> Agent::us_source_flow(const FourTuple& t, int fd) {
  return std::make_unique<UsSourceFlow>(*this, t, fd);
}

Result<std::unique_ptr<StagedFlow>> Agent::us_staged_flow(
    TcpSnapshot snap, const std::string& service, std::optional<repair::PeerAck> peer_ack) {
  (void)service;
  if (!keeper_) {
    return make_error(std::errc::operation_not_supported, "no userstack here");
  }
  // The keeper drops what |peer_ack| acknowledges before it restores; this copy too (the
  // StagedMigration compares it with the restored connection).
  (void)drop_peer_acked(snap, peer_ack);
  Message b(MsgType::ok);
  b.add(Tag::snapshot, encode_snapshot(snap));
  Message m(keeper::kStage);
  UniqueFd fd;
  RENDR_TRY(attach_body(m, b, fd));
  auto r = keeper_->call(m, fd.get());
  if (!r) {
    return std::move(r).take_error();
  }
  return std::unique_ptr<StagedFlow>(std::make_unique<UsStagedFlow>(*this, std::move(snap)));
}

}  // namespace rendr::agents
