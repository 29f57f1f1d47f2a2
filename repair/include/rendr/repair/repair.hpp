// SPDX-License-Identifier: Apache-2.0
// repair — checkpoint and restore live kernel TCP sockets with TCP_REPAIR (the model is CRIU's
// libsoccr; this is our own implementation). A checkpoint turns a live socket into a frozen
// RepairSocket (move-only, owns the fd, TCP_REPAIR on) plus a TcpSnapshot value; restore builds an
// identical socket from a snapshot in the calling thread's network namespace. Objects are not
// shared between threads; a Repairer may be used from one thread at a time.
//
// Checkpoint recipe (source host):
//   1. Freeze the flow's traffic in both directions first (eBPF freeze or a firewall rule): a
//      packet that reaches the socket after step 4 is lost, and an ACK it sends desynchronises
//      the peer. repair/ does not freeze; the caller (agent) does.
//   2. TCP_REPAIR on (needs CAP_NET_ADMIN in the socket's netns; else EPERM and the userstack
//      fallback applies).
//   3. Read TCP_INFO (state, negotiated options, window scales), TCP_MAXSEG (= mss_clamp in
//      repair mode), TCP_TIMESTAMP, TCP_REPAIR_WINDOW.
//   4. Select each queue with TCP_REPAIR_QUEUE, read TCP_QUEUE_SEQ and MSG_PEEK its bytes; split
//      the send queue with SIOCOUTQNSD into sent-unacked and not-yet-sent; account for FINs.
//      rcv_nxt is read before and after the receive queue; repeat until they agree (data racing
//      in means traffic was not frozen: EAGAIN).
//   5. Read socket options (nodelay, cork, keepalive, timeouts, congestion, buffers, mark,
//      TOS/TTL, linger, notsent_lowat; SO_REUSEADDR before step 2, as repair mode overrides it)
//      and the addresses. A caller that read the options (read_options) and the addresses before
//      the freeze passes them in and these reads stay out of the frozen window. The socket stays
//      in repair mode.
//   6. Ship the snapshot. Then release() the frozen socket (silent close: no FIN, no RST) once the
//      target confirmed, or thaw() it to continue here (abort path).
//
// Restore recipe (target host, inside the netns that should own the socket):
//   1. socket(); TCP_REPAIR on; IPV6_V6ONLY, IP_TRANSPARENT, SO_MARK; force buffers large
//      enough for the saved queues.
//   2. bind(local) (IP_FREEBIND and again only if the address is not local here); set the
//      receive and send queue sequence numbers; TCP_MAXSEG = the saved MSS (connect sizes
//      segments by it); connect(peer) (no SYN in repair mode; fails with EADDRNOTAVAIL while
//      another socket in this netns owns the tuple).
//   3. TCP_REPAIR_OPTIONS (MSS, window scale, SACK, timestamps) before anything is transmitted,
//      then TCP_TIMESTAMP.
//   4. Refill the receive queue and the sent-unacked part of the send queue; TCP_REPAIR_WINDOW.
//   5. On a kernel before 4.18 only (connect could rewrite write_seq when the tuple was reused
//      from TIME_WAIT): read write_seq back and compare; on mismatch close silently, error.
//      Later kernels leave it alone in repair mode, and each refill send() is checked.
//   6. Rebuild FINs: ours with shutdown() while the send queue is selected, the peer's by
//      injecting its FIN from a raw socket (CAP_NET_RAW); in FIN_WAIT2 also the peer's ACK of
//      our FIN.
//   7. TCP_REPAIR off (window probe); push the never-sent bytes with plain send(); our FIN if it
//      had not left yet; restore the remaining socket options (SO_REUSEADDR: leaving repair mode
//      cleared it; options equal to this netns' defaults are not set again); when the snapshot
//      shows a delayed ACK the old socket owed, kick an immediate ACK so a peer waiting on it
//      resumes at once.
//   8. Replay what the peer sent into the freeze (replay(), or activate()'s |replay|), then lift
//      the freeze. Until step 7 a packet of the flow must not reach the socket (repair mode
//      loses it), and until the replay is in, the peer's newer packets must not either (they
//      would arrive ahead of the replayed ones: the socket SACKs past the hole and the peer
//      retransmits all of it). So the freeze stays on through steps 1-7, only lets the
//      socket's own packets and the peer's bare ACKs out and in from step 7 on (the agent:
//      ebpf::Freezer::hold), and lifts after the replay; what it recorded meanwhile is
//      replayed last (ebpf::Freezer::unfreeze_take).
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/log.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/tcp_snapshot.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/repair/sys.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>
#include <span>

namespace rendr::repair {

class InjectCache;
struct ForgedSegment;
struct OptionDefaults;

// RepairSocket — a socket in TCP_REPAIR mode: it neither sends nor answers packets on its own
// behalf while frozen. Destroying it closes it silently (same as release()).
class RepairSocket {
 public:
  RepairSocket() = default;
  RepairSocket(RepairSocket&&) noexcept = default;
  RepairSocket& operator=(RepairSocket&&) noexcept = default;

  [[nodiscard]] int fd() const { return fd_.get(); }
  [[nodiscard]] const FourTuple& tuple() const { return tuple_; }
  [[nodiscard]] bool valid() const { return fd_.valid(); }

 private:
  friend class Repairer;
  RepairSocket(UniqueFd fd, FourTuple tuple, bool reuseaddr)
      : fd_(std::move(fd)), tuple_(tuple), reuseaddr_(reuseaddr) {}
  UniqueFd fd_;
  FourTuple tuple_;
  bool reuseaddr_ = false;  // SO_REUSEADDR before repair mode (leaving it clears the option)
};

struct Checkpoint {
  RepairSocket socket;
  TcpSnapshot snapshot;
};

// PeerAck — what the peer acknowledged while its ACKs could not reach the socket (a freeze
// dropped them, see ebpf::FreezeCounters::peer_ack): the acknowledgment number and the raw
// window field of that ACK (scaled by the snapshot's snd_wscale).
struct PeerAck {
  std::uint32_t ack = 0;
  std::uint16_t window = 0;
};

struct RestoreOptions {
  // Set IP_FREEBIND (IPV6_FREEBIND) so the local address need not be configured yet.
  bool freebind = true;
  // Set IP_TRANSPARENT (needs CAP_NET_ADMIN) e.g. for a VIP routed to this host but not local.
  bool transparent = false;
  // Leave repair with a window probe (TCP_REPAIR_OFF): the peer's answer resynchronises ACK
  // state and window. The kernel probes only an ESTABLISHED socket; a CLOSE_WAIT one is probed
  // with a forged segment as ask_peer_ack sends (needs CAP_NET_RAW, else a warning).
  // false = TCP_REPAIR_OFF_NO_WP and no probe.
  bool window_probe = true;
  // After restore, inject one stale segment from the peer so the socket answers with an
  // immediate ACK (repays delayed-ACK debt the old socket owed; needs CAP_NET_RAW, else skipped
  // with a warning). Only when the snapshot shows that debt - the old socket's last segment
  // acknowledged less than it had received (window rcv_wup behind rcv_nxt) - or carries no
  // window to tell, or when |sent_into_freeze| says an ACK may have been lost.
  bool ack_kick = true;
  // The old socket sent segments that a freeze dropped before its checkpoint (e.g.
  // ebpf::FreezeCounters::egress_packets): one of them may have been the ACK the snapshot counts
  // as delivered (rcv_wup = rcv_nxt), so with ack_kick the ACK is kicked regardless.
  bool sent_into_freeze = false;
  // SO_MARK for injected packets, so a freeze program can let them through.
  std::uint32_t inject_mark = 0xC114;
  // restore_staged() only: the peer already acknowledged the send-queue bytes below
  // peer_ack->ack, so the socket is rebuilt without them (snd_una = that ACK), and the peer's
  // window is taken from that ACK - also when it acknowledges nothing new (a window update).
  // Otherwise the bytes would sit in flight until the peer ACKs again - and its answer to the
  // repair-off window probe is rate limited (tcp_invalid_ratelimit, 500 ms), so a second
  // migration within 500 ms waited for a ~200 ms tail loss probe. Ignored when the ACK is
  // outside [snd_una, snd_nxt] or our FIN was already sent.
  std::optional<PeerAck> peer_ack;
  // SO_NETNS_COOKIE of the netns the restore creates its socket in, when the caller already
  // knows it (read once with Repairer::netns_cookie from any socket it made there). Saves
  // reading it from each restored socket (option defaults, ACK kick). Empty = read it from the
  // new socket. It must name that netns: with another netns' cookie, keepalive timing, TTL or
  // congestion control equal to that netns' default would be left at this one's.
  std::optional<std::uint64_t> netns_cookie;
};

// StageState — what activate() needs to know about how a socket was staged (internal).
struct StageState {
  bool v6 = false;
  bool force_snd = false;
  bool force_rcv = false;
  std::uint32_t rcv_wup = 0;
  // Bytes of the send queue queued at stage time in repair mode (counted as transmitted). When
  // our FIN was not sent yet, the sent-but-unacked bytes are deferred to activate() instead,
  // which splits them by what the peer is known to hold (see activate()).
  std::uint32_t sent_in_repair = 0;
  bool unacked_deferred = false;
};

// StagedSocket — a restored socket that is still in repair mode (restore recipe steps 1-6 done
// and validated; step 7 not yet): it transmits nothing and closing it is silent, so the target
// host can hold it until the migration commits. Owns the fd and the snapshot it was built from.
// Destroying it closes it silently (same as Repairer::release()).
class StagedSocket {
 public:
  StagedSocket() = default;
  StagedSocket(StagedSocket&&) noexcept = default;
  StagedSocket& operator=(StagedSocket&&) noexcept = default;

  [[nodiscard]] bool valid() const { return fd_.valid(); }
  [[nodiscard]] int fd() const { return fd_.get(); }
  [[nodiscard]] const FourTuple& tuple() const { return snap_->tuple; }
  [[nodiscard]] const TcpSnapshot& snapshot() const { return *snap_; }

 private:
  friend class Repairer;
  UniqueFd fd_;
  std::unique_ptr<TcpSnapshot> snap_;
  RestoreOptions opts_;
  StageState st_;
};

// Repairer — the checkpoint/restore engine. |sys| must outlive it; |sink| receives log lines
// (empty = default sink). After its first ACK kick a Repairer keeps one raw injection socket per
// address family open (closed by its destructor) and reuses it while restores happen in the same
// netns; a copy starts without one.
class Repairer {
 public:
  explicit Repairer(Sys& sys = real_sys(), LogSink sink = {});
  Repairer(const Repairer& other);
  Repairer& operator=(const Repairer&) = delete;
  ~Repairer();

  // checkpoint puts the connected TCP socket |fd| into repair mode and captures its state. |fd|
  // is borrowed: the Checkpoint owns a duplicate, and the socket stays frozen until thaw() or
  // until its last descriptor is closed (silently, because it is in repair mode). On error the
  // socket is thawed again and |fd| keeps working. Errors: EPERM (no CAP_NET_ADMIN; the message
  // names the userstack fallback), ENOTCONN / ENOTSOCK / EPROTONOSUPPORT (not a connected TCP
  // socket), ENOTSUP (state not supported, named), EAGAIN (queues kept changing: traffic was
  // not frozen).
  //
  // |options|: the socket's options as read_options() returned them, read before the flow was
  // frozen; checkpoint then leaves those 16 reads out of the frozen window. Null: read here.
  // |tuple|: the socket's 4-tuple as the caller read it from this socket before the freeze (e.g.
  // FourTuple::of_socket when it took the socket over); checkpoint then leaves getsockname and
  // getpeername out of the frozen window (a connected TCP socket's tuple never changes). It is
  // trusted: restore rebuilds exactly this tuple. Null: read here.
  [[nodiscard]] Result<Checkpoint> checkpoint(int fd, const TcpSocketOptions* options = nullptr,
                                              const FourTuple* tuple = nullptr);
  // checkpoint (owning) is checkpoint() for a caller that hands its descriptor over: on success
  // |fd| is moved into the Checkpoint, so no duplicate is made in the frozen window; on error
  // |fd| is left with the caller and the socket is thawed, as above.
  [[nodiscard]] Result<Checkpoint> checkpoint(UniqueFd& fd,
                                              const TcpSocketOptions* options = nullptr,
                                              const FourTuple* tuple = nullptr);

  // read_options reads the socket and TCP options a snapshot carries (SO_REUSEADDR included).
  // They only change when someone sets them, so a migration reads them once the server has
  // handed the socket over (export), while the flow still runs, and passes them to checkpoint().
  // The socket must not be in repair mode (it overrides SO_REUSEADDR).
  [[nodiscard]] Result<TcpSocketOptions> read_options(int fd);

  // restore builds a live socket from |snap| in the calling thread's netns (see recipe above).
  // Nothing half-built survives an error. Errors: EINVAL (invalid snapshot), EPERM (missing
  // capability, named), EADDRNOTAVAIL (tuple still owned here / address not usable), EIO
  // (read-back validation mismatch, with the field), kernel errors with the failing step.
  [[nodiscard]] Result<UniqueFd> restore(const TcpSnapshot& snap, const RestoreOptions& opts = {});

  // restore_staged is restore() split in two for two-phase migrations: it runs the recipe up to
  // and including the read-back validation and FIN rebuild, but leaves the socket in repair
  // mode, so nothing is transmitted and dropping the StagedSocket is silent. Errors as restore().
  [[nodiscard]] Result<StagedSocket> restore_staged(TcpSnapshot snap,
                                                    const RestoreOptions& opts = {});
  // activate finishes a staged restore (repair off with window probe, unsent bytes, options,
  // ACK kick) and returns the live socket. Call it once traffic is steered to this host.
  //
  // |peer_acked| is the highest ACK the peer is known to have sent, with its window (e.g. the
  // ACKs a freeze dropped: ebpf::FreezeCounters::peer_ack). The sent-but-unacked bytes below
  // its ack are queued as already transmitted (the peer's next ACK releases them); the bytes
  // from it on are sent again as fresh data at once. Without it every unacked byte is queued as
  // transmitted, and whatever the freeze or the network dropped waits for a retransmission
  // timer, which on a restored socket (no RTT sample yet) takes 1-4 s: ask_peer_ack() at the
  // checkpoint makes the peer send an ACK the freeze records. An out-of-range ack (below
  // the queue or beyond what was sent) is clamped. Its window becomes the socket's send window
  // before repair mode is left (also for an ACK that acknowledges nothing new: a window the
  // peer opened during the freeze is used at once instead of waiting for a zero-window probe);
  // not when the ack is out of range. Ignored when our FIN was already sent.
  //
  // |replay| are packets the peer sent while the connection was frozen (IP header on, as
  // ebpf::Freezer::take_dropped returns them): after repair-off they are fed to the socket
  // through a raw socket (CAP_NET_RAW), oldest first, so it need not wait for the peer to
  // retransmit them. Packets not of this connection are refused (a warning, not an error).
  //
  // The flow must stay frozen until activate returns (restore recipe, step 8): switch the
  // freeze to holding only the peer's data before (ebpf::Freezer::hold), so the window probe,
  // the unsent bytes and the ACK kick get out, then lift it after the replay.
  [[nodiscard]] Result<UniqueFd> activate(StagedSocket&& s,
                                          std::optional<PeerAck> peer_acked = {},
                                          std::span<const std::vector<std::byte>> replay = {});
  // replay feeds |packets| - what the peer of |tuple| sent while the connection was frozen (IP
  // header on, as ebpf::Freezer::take_dropped returns them) - to the connection's live socket in
  // the calling thread's netns, oldest first, through a raw socket (CAP_NET_RAW) with SO_MARK
  // |mark| (so a freeze lets them pass). For packets recorded after activate() (the freeze
  // still held them); call it before the freeze lifts. Returns how many were fed; packets not
  // of this connection are refused (a warning, not an error). Errors: EPERM (no CAP_NET_RAW),
  // the raw socket's send errors (the packets from the failing one on were not fed).
  [[nodiscard]] Result<std::size_t> replay(const FourTuple& tuple,
                                           std::span<const std::vector<std::byte>> packets,
                                           std::uint32_t mark = 0xC114);
  // release (staged) closes a staged socket silently (abort path on the target).
  void release(StagedSocket&& s);

  // thaw returns a frozen socket to normal operation (abort path: the connection continues
  // here). The window probe resynchronises with the peer.
  [[nodiscard]] Result<UniqueFd> thaw(RepairSocket&& s);

  // release closes a frozen socket silently: no FIN, no RST leave this host.
  void release(RepairSocket&& s);

  // ask_peer_ack makes the peer of the frozen connection |s| (checkpointed as |snap|) tell what
  // it received, so activate() can be given the peer's ACK (|peer_acked|) and send at once what
  // the peer lacks. Without it, bytes the network lost just before the freeze are restored as
  // transmitted and wait for a retransmission timer: seconds on a restored socket, which has no
  // RTT sample. It sends one segment from the connection's address carrying one byte below
  // snd_una - data the peer already acknowledged (the byte's content is never read): a receiver
  // answers such a duplicate at once with an ACK of its rcv_nxt and its window (RFC 9293
  // 3.10.7.4; not rate-limited as Linux does a bare out-of-window segment's answer,
  // tcp_invalid_ratelimit). The answer comes back while the flow is frozen, where the freeze
  // records it (ebpf::FreezeCounters::peer_ack). Sent with SO_MARK |mark| so the freeze lets it
  // out (needs CAP_NET_RAW). Sends nothing (ok) when no byte is in flight or our FIN was sent
  // (activate then resends nothing on the strength of an ACK).
  [[nodiscard]] Status ask_peer_ack(const RepairSocket& s, const TcpSnapshot& snap,
                                    std::uint32_t mark = 0xC114);

  // adopt_frozen takes |fd|, a connected TCP socket another process (or an earlier run of this
  // one) left in repair mode, so it can be thawed or released: a restarted agent reclaiming a
  // move its previous run froze. Errors: not a connected TCP socket, not in repair mode
  // (EINVAL: nothing to thaw, use the fd as it is). SO_REUSEADDR is not known for such a socket
  // and is not set again at thaw.
  [[nodiscard]] Result<RepairSocket> adopt_frozen(UniqueFd fd);

  // netns_cookie reads SO_NETNS_COOKIE of |fd| (Linux 5.14+; empty without it): the value for
  // RestoreOptions::netns_cookie when |fd| lives in the netns restores run in.
  [[nodiscard]] std::optional<std::uint64_t> netns_cookie(int fd);

 private:
  [[nodiscard]] Result<Checkpoint> checkpoint_impl(int fd, const TcpSocketOptions* options,
                                                   const FourTuple* tuple, UniqueFd* owned);
  [[nodiscard]] Result<UniqueFd> stage(const TcpSnapshot& snap, const RestoreOptions& opts,
                                       StageState& st);
  [[nodiscard]] Result<UniqueFd> activate_staged(const TcpSnapshot& snap,
                                                 const RestoreOptions& opts, const StageState& st,
                                                 UniqueFd fd, std::optional<PeerAck> peer_acked,
                                                 std::span<const std::vector<std::byte>> replay);
  // inject_replay prepares and injects |packets| (see replay()); the first refused packet's
  // error goes to |refused|.
  [[nodiscard]] Result<std::size_t> inject_replay(const FourTuple& tuple,
                                                  std::span<const std::vector<std::byte>> packets,
                                                  std::uint32_t mark,
                                                  const std::function<void(Status)>& refused);
  // kick sends the post-restore ACK kick |seg| into the netns of |restored| (|netns|: its
  // SO_NETNS_COOKIE when already read; empty = read it now).
  [[nodiscard]] Status kick(int restored, const ForgedSegment& seg, std::uint32_t mark,
                            std::optional<std::uint64_t> netns = std::nullopt);
  // option_defaults returns what a fresh TCP socket of the family reports in the netns whose
  // cookie is |netns| (cached until the netns or family changes); null when unknown.
  [[nodiscard]] const OptionDefaults* option_defaults(std::optional<std::uint64_t> netns, bool v6);
  // ack_our_fin makes a staged FIN_WAIT2 socket (our FIN rebuilt as sent) take the peer's ACK of
  // that FIN, forged and sent like a kick (best effort: a warning when it cannot).
  void ack_our_fin(int fd, const TcpSnapshot& snap, std::uint32_t rcv_nxt, std::uint32_t mark);

  // readback_write_seq: whether this kernel is older than 4.18 (uname through Sys, asked once).
  [[nodiscard]] bool readback_write_seq();

  // debug_on: whether a debug line can be seen (a custom sink sees every line; the default sink
  // filters by log_level()), so per-connection debug lines are only formatted when it can.
  [[nodiscard]] bool debug_on() const;

  Sys& sys_;
  Logger log_;
  bool custom_sink_ = false;
  std::unique_ptr<InjectCache> inject_;  // created on the first ACK kick
  std::unique_ptr<OptionDefaults> defaults_;  // read on the first restore that needs them
  // Whether connect() may rewrite write_seq in repair mode (kernel before 4.18), so restore
  // reads it back; found from uname on the first restore.
  std::optional<bool> readback_write_seq_;
};

// probe_tcp_repair tries TCP_REPAIR on a fresh socket in the caller's netns; ok means the kernel
// supports it and the caller holds CAP_NET_ADMIN there.
[[nodiscard]] Status probe_tcp_repair(Sys& sys = real_sys());

}  // namespace rendr::repair
