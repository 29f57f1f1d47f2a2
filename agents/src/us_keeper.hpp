// SPDX-License-Identifier: Apache-2.0
// The userstack keeper: the process that owns a userstack host's TUN device, its lwIP stack
// and every connection's pump, so the connections outlive the agent (docs/userstack.md "When
// the agent goes away"). The TCP state of a native connection lives in the kernel and survives its
// agent; a userstack connection's lives in lwIP, so lwIP runs apart from the agent: in a small
// process with no network-facing part (no TLS, no peer channel, no parser of remote input
// beyond the TCP/IP lwIP already takes), which the agent starts and talks to over a local
// socket, and which a restarted agent finds again.
//
//   agent --ctl--> keeper    one request at a time, one reply each (checkpoint, stage, ...)
//   agent <-events- keeper   accepted connections (the server's bridge fd attached), ends
//
// Both are SOCK_SEQPACKET connections to the abstract Unix socket "rendr-keeper/<tun>" of the
// agent's network namespace (one keeper per device; the device's name is unique there). Only
// the keeper's own uid or root may connect, and one agent at a time: a second agent is refused
// while the first is connected. Snapshots and packet lists travel in a memfd attached to the
// message (a SEQPACKET datagram is bounded by the socket buffer). With no agent connected the
// keeper resets new connections and keeps serving the others; it exits once it has had no
// agent and no connection for kLingerMs. Private to rendr-agent.
#pragma once

#include <rendr/agents/message.hpp>
#include <rendr/agents/packet.hpp>
#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/tcp_snapshot.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/repair/repair.hpp>

#include <sys/socket.h>
#include <sys/un.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace rendr::agents {

// Keeper messages (agent <-> its keeper only; never on the control socket or agent channel).
namespace keeper {
inline constexpr MsgType kHello = MsgType::keeper_hello;            // tag name: ctl|events
inline constexpr MsgType kCheckpoint = MsgType::keeper_checkpoint;  // tuple; server fd
inline constexpr MsgType kTakeHeld = MsgType::keeper_take_held;     // tuple
inline constexpr MsgType kRelease = MsgType::keeper_release;        // tuple
inline constexpr MsgType kThaw = MsgType::keeper_thaw;              // tuple
inline constexpr MsgType kUnfreeze = MsgType::keeper_unfreeze;      // tuple
inline constexpr MsgType kStage = MsgType::keeper_stage;            // blob: snapshot
inline constexpr MsgType kActivate = MsgType::keeper_activate;      // tuple, peer_ack; blob
inline constexpr MsgType kDropStaged = MsgType::keeper_drop_staged; // tuple, [ok: keep frozen]
inline constexpr MsgType kReset = MsgType::keeper_reset;            // tuple
inline constexpr MsgType kStatus = MsgType::keeper_status;          // -> json
inline constexpr MsgType kAccepted = MsgType::keeper_accepted;      // event: tuple; fd
inline constexpr MsgType kEnded = MsgType::keeper_ended;            // event: tuple, text
inline constexpr int kLingerMs = 10000;
}  // namespace keeper

// keeper_address: the abstract socket name of the keeper of TUN device |tun|;
// keeper_sockaddr: that name as an address (|len| set) for bind and connect.
std::string keeper_address(const std::string& tun);
sockaddr_un keeper_sockaddr(const std::string& tun, socklen_t& len);

// Blobs: a Message (snapshot, packets) encoded into a sealed-size memfd, and back.
Result<UniqueFd> blob_fd(const Message& m);
Result<Message> read_blob(int fd);

// Bodies: the snapshot or packet list a keeper request or reply carries. attach_body puts
// |body|'s fields into |carrier| itself when they fit well within one datagram (up to
// kInlineBody bytes), else into a blob (|fd|, to send with the carrier): making, filling and
// reading a memfd took 40-60 us of a move's frozen window for a snapshot of a few hundred
// bytes. body_of is the other side: the blob when an fd came with |p|, else |p|'s own fields.
inline constexpr std::size_t kInlineBody = 32U << 10;
Status attach_body(Message& carrier, const Message& body, UniqueFd& fd);
Result<Message> body_of(const Packet& p);

// KeeperOptions: what `rendr-agent --userstack-keeper` runs with (set by the agent).
struct KeeperOptions {
  std::string tun;
  std::string tun_clone;
  std::uint64_t freeze_grace_ms = 2000;
  int ready_fd = -1;  // "ok\n" or the start error, one line, then closed
};

// run_keeper runs a keeper until it lingers out (exit code 0) or fails to start (1).
int run_keeper(const KeeperOptions& o);

// KeeperClient: the agent's two connections to its keeper.
class KeeperClient {
 public:
  // open connects to the keeper of |o|.tun, starting one (this executable, detached in its own
  // session) when none answers. |serving| receives the tuples the keeper already bridges and
  // |held| those a move captured and left frozen (a restarted agent); |how| says whether it
  // started or found the keeper. Errors: the keeper's start error (the TUN did not attach:
  // ENODEV, EBUSY, EPERM ...), EBUSY when another agent holds the keeper.
  static Result<KeeperClient> open(const KeeperOptions& o, std::vector<FourTuple>& serving,
                                   std::vector<FourTuple>& held, std::string& how);
  // call sends a request (with |fd| attached when >= 0) and waits for its reply (ok, json or
  // fail). ECONNRESET when the keeper is gone.
  Result<Packet> call(const Message& m, int fd = -1);
  // events: the socket the keeper's events arrive on (kAccepted, kEnded).
  [[nodiscard]] int events_fd() const { return events_.get(); }
  UniqueFd take_events() { return std::move(events_); }
  [[nodiscard]] pid_t pid() const { return pid_; }

 private:
  UniqueFd ctl_;
  UniqueFd events_;
  pid_t pid_ = -1;
};

// drop_peer_acked removes from |snap| the sent bytes a peer ACK |pa| (the source's freeze saw
// it) acknowledges, and takes that ACK's window, like repair's restore does for a kernel
// target. Needed on a userstack target: lwIP re-queues at most its 64 KiB send buffer, so an
// ACK beyond that is "beyond snd_nxt" to it and ignored - the peer, which has those bytes,
// answers every retransmission with that same ACK, and lwIP gives up with a RST (seen after
// native -> userstack moves with MBs in the kernel's send queue). Returns the bytes dropped.
std::uint32_t drop_peer_acked(TcpSnapshot& snap, const std::optional<repair::PeerAck>& pa);

}  // namespace rendr::agents
