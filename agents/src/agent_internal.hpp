// SPDX-License-Identifier: Apache-2.0
// rendr-agent internals shared by its source files: the Agent class, the records it keeps
// (embedder sessions, tracked flows, peer channels, migrations staged here) and small helpers.
// One io_context thread, C++20 coroutines; blocking kernel calls (repair, BPF map updates) are
// microseconds and run inline on that thread. Private to rendr-agent: nothing else includes it.
//
// Where each job lives:
//   agent.cpp           init / shutdown / run_agent (composition)
//   agent_helpers.cpp   small host helpers (fd room, netns check, endpoints)
//   control_server.cpp  the Unix control socket: accept, requests, replies, progress lines
//   embed_sessions.cpp  embedder sessions: track/untrack, exports, late exports, adoption
//   peer_channel.cpp    the mutual-TLS agent channel: pool, connect, framed read/write, accept
//   peer_requests.cpp   what a peer agent may ask (refusal_for) and the dispatch of its requests
//   migrate_source.cpp  one batch leaving this host: selection, then drives SourceMigration
//   migrate_steps.cpp   its forward steps (connect, export, freeze, ship, steer, commit)
//   migrate_undo.cpp    its undo steps (steer back, tell the target, thaw, return fds)
//   migrate_batches.cpp a selection larger than the descriptor limit, in batches
//   migrate_target.cpp  offers staged here; COMMIT/ABORT/expiry as StagedMigration decides
//   gateway_steer.cpp   the gateway role: steering setup and steer / steer_check
//   freeze_grace.cpp    the eBPF freeze: setup, grace timers after a flow left, peer-ack hints
//   status.cpp          status / flows JSON and Prometheus metrics
//   method.cpp          the migration method (native / userstack) chosen at start
//   userstack_serve.cpp the userstack method: the keeper's connections handed to registered servers
//   userstack_flow.cpp  the userstack method's flow operations, run by the keeper
//   us_keeper.cpp       the userstack keeper process (TUN, lwIP, pumps); us_keeper_client.cpp
#pragma once

#include <rendr/agents/capabilities.hpp>

#include "agent.hpp"
#include "flow_method.hpp"
#include "sock_diag.hpp"
#include "us_keeper.hpp"

#include <rendr/agents/message.hpp>
#include <rendr/agents/migration.hpp>
#include <rendr/agents/packet.hpp>
#include <rendr/agents/reclaim.hpp>
#include <rendr/agents/source_migration.hpp>
#include <rendr/agents/target_migration.hpp>
#include <rendr/common/endpoint.hpp>
#include <rendr/common/json.hpp>
#include <rendr/common/log.hpp>
#include <rendr/common/snapshot_codec.hpp>
#include <rendr/ebpf/freezer.hpp>
#include <rendr/ebpf/steerer.hpp>
#include <rendr/repair/repair.hpp>
#include <rendr/userstack/pump.hpp>
#include <rendr/userstack/stack.hpp>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ssl.hpp>

#include <netinet/tcp.h>
#include <sys/random.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <utility>

namespace rendr::agents {

using asio::awaitable;
using asio::use_awaitable;
using Clock = std::chrono::steady_clock;
using ms = std::chrono::milliseconds;
inline constexpr auto as_tuple_aw = asio::experimental::as_tuple(asio::use_awaitable);
using seqp = asio::generic::seq_packet_protocol;
using seqp_acceptor = asio::basic_socket_acceptor<seqp>;
using tls_stream = asio::ssl::stream<asio::ip::tcp::socket>;

// ---- helpers (agent_helpers.cpp)

double ms_since(Clock::time_point t0);
std::optional<repair::PeerAck> decode_peer_ack(std::uint64_t v);
// encode_peer_ack: the inverse (Tag::peer_ack's layout).
std::uint64_t encode_peer_ack(const repair::PeerAck& pa);
std::string fmt_ms(Clock::time_point a, Clock::time_point b);
// peer_in_our_netns: whether the process at the other end of control socket |fd| lives in this
// agent's network namespace (then its sockets can be looked up here).
bool peer_in_our_netns(int fd);
// socket_closed: the TCP socket |fd| reached CLOSE (the peer reset it, or both sides closed
// it): nothing of the connection is left to move.
bool socket_closed(int fd);
// FdRoom: how many flows one batch may hold under this process's RLIMIT_NOFILE. A source
// batch keeps two descriptors per flow open (the exported fd and the checkpoint's duplicate);
// a reserve stays free for channels, sessions and sockets staged here by other agents.
struct FdRoom {
  std::uint64_t limit = 0;  // 0: unlimited
  std::uint64_t open = 0;
  std::size_t flows = 0;
};

FdRoom fd_room();
std::uint64_t u64_of(const std::string& s);
Result<asio::ip::tcp::endpoint> tcp_endpoint(const std::string& text);
// default_ifaces: every up, non-loopback device (where the freeze attaches by default).
std::vector<std::string> default_ifaces();
// tc_filter_handle: the tc filter handle of this agent's |role| ("freeze", "steer"): stable
// across restarts, so a restarted agent replaces the filters its previous run left.
std::uint32_t tc_filter_handle(const std::string& role, const std::string& name);
// peer_common_name: the CN of the certificate the TLS peer presented ("" if none).
std::string peer_common_name(SSL* ssl);

// FaultSys: test-only repair::Sys that makes the read-back of TCP_QUEUE_SEQ disagree, so a
// restore fails its validation for real (fault "restore_mismatch"). restore reads write_seq
// back only on a kernel before 4.18, so the fault also reports such a release.
class FaultSys final : public repair::ForwardingSys {
 public:
  using ForwardingSys::ForwardingSys;
  bool mismatch = false;
  int getsockopt(int fd, int l, int n, void* v, socklen_t* len) override {
    int r = ForwardingSys::getsockopt(fd, l, n, v, len);
    if (r == 0 && mismatch && l == IPPROTO_TCP && n == TCP_QUEUE_SEQ) {
      *static_cast<int*>(v) += 1;
    }
    return r;
  }
  int uname(struct utsname* out) override {
    int r = ForwardingSys::uname(out);
    if (r == 0 && mismatch) {
      std::snprintf(out->release, sizeof out->release, "4.17.0-restore-mismatch");
    }
    return r;
  }
};

struct AppSession;
struct SourceBatch;

// PreFreeze: what the source takes from an exported native socket while its flow still runs, so
// that the checkpoint leaves it out of the frozen window: its options and its 4-tuple (both read
// from the socket itself; they do not change once the server handed the socket over), and the
// duplicate descriptor the frozen RepairSocket will own (the checkpoint takes it instead of
// duplicating the exported fd itself).
struct PreFreeze {
  TcpSocketOptions options;
  FourTuple tuple;
  UniqueFd fd;
};

// A tracked connection of an embedder.
struct FlowRec {
  FourTuple tuple;
  std::weak_ptr<AppSession> session;
  std::uint64_t conn_id = 0;
  std::string service;
  bool migrating = false;
  // Terminated in this agent's userstack (the server holds a bridge fd, not the TCP socket).
  bool userstack = false;
  // The server closed it while a batch held it (untrack): the batch drops it and forgets it.
  bool ended = false;
  std::string ended_why;
};

// What an export produced for one flow.
struct ExportSlot {
  bool done = false;
  bool refused = false;  // the server declined (error says why)
  bool ended = false;    // the connection is gone (error says how): dropped from the batch
  std::string error;
  UniqueFd fd;
  std::vector<std::byte> state;
};

struct AppSession {
  std::uint64_t id = 0;
  std::string service;
  std::shared_ptr<seqp::socket> sock;
  std::map<std::uint64_t, std::string> conns;  // conn_id -> tuple key
  // pending exports: conn_id -> slot (filled by the reader loop)
  std::map<std::uint64_t, ExportSlot*> pending;
  asio::steady_timer* export_notify = nullptr;
  bool alive = true;
  // The server lives in the agent's netns, so its sockets can be checked (sock_diag.hpp).
  bool same_netns = false;
};

// One outgoing or incoming TLS channel.
struct PeerConn {
  PeerConn(asio::io_context& io, asio::ssl::context& ctx, std::size_t max_frame)
      : stream(io, ctx), reader(max_frame) {}
  tls_stream stream;
  FrameReader reader;
  std::string peer_name;
  bool broken = false;
};

// B side: a migration staged here.
struct StagedMig {
  explicit StagedMig(StagedMigration c) : core(std::move(c)) {}
  StagedMigration core;  // id, source agent, state (staged | committed | aborted), expiry
  std::string service;
  std::vector<std::unique_ptr<StagedFlow>> sockets;  // restored, frozen until COMMIT
  std::vector<std::vector<std::byte>> states;
  std::unique_ptr<asio::steady_timer> expiry;
  PeerConn* channel = nullptr;
};

struct Metrics {
  std::uint64_t migrations_committed = 0;
  std::uint64_t migrations_aborted = 0;
  std::uint64_t migrations_indeterminate = 0;
  std::uint64_t flows_migrated_out = 0;
  std::uint64_t flows_adopted = 0;
  std::uint64_t restores_failed = 0;
  std::uint64_t offers_rejected = 0;
  std::uint64_t peers_refused = 0;
  std::uint64_t peer_channels_opened = 0;  // TLS channels this agent dialled (not reused ones)
  std::uint64_t peer_requests_refused = 0;  // a configured agent asked for what its role may not
  std::uint64_t flows_ended = 0;   // dropped from batches: they ended before they could move
  std::uint64_t flows_reaped = 0;  // forgotten: no process held their socket any more
  std::uint64_t steer_entries_removed = 0;  // gateway: entries of ended flows swept
  std::uint64_t steer_entries = 0;          // gateway: entries at the last sweep
  std::uint64_t us_accepted = 0;    // userstack: connections handed to a server
  std::uint64_t us_refused = 0;     // userstack: reset (no service for the port, no server)
  std::uint64_t us_finished = 0;    // userstack: bridges that ended (both FINs or a reset)
  std::uint64_t reclaims = 0;           // frozen exports handed back by servers (reclaim.hpp)
  std::uint64_t reclaims_returned = 0;  // thawed and returned: the move had not landed
  std::uint64_t reclaims_released = 0;  // a peer had committed it: closed here silently
  std::uint64_t reclaims_held = 0;      // indeterminate (a peer never answered) or lost
  double frozen_ms_sum = 0;
  double frozen_ms_last = 0;
  double frozen_ms_max = 0;
};

// Adopted fds waiting for a registered server of their service.
struct Orphan {
  FourTuple tuple;
  UniqueFd fd;
  std::vector<std::byte> state;
  bool userstack = false;  // the fd is a bridge to this agent's userstack
};

class NativeSourceFlow;
class NativeStagedFlow;
class UsSourceFlow;
class UsStagedFlow;

class Agent {
 public:
  Agent(asio::io_context& io, AgentConfig cfg)
      : io_(io),
        cfg_(std::move(cfg)),
        log_(),
        tls_server_(asio::ssl::context::tls_server),
        tls_client_(asio::ssl::context::tls_client),
        fault_sys_(repair::real_sys()),
        repairer_(fault_sys_) {
    for (const auto& f : cfg_.faults) {
      faults_.insert(f);
    }
    fault_sys_.mismatch = faults_.count("restore_mismatch") != 0;
  }

  Status init();
  awaitable<void> control_acceptor();
  awaitable<void> peer_acceptor();
  // steer_gc_loop sweeps the gateway's flow table for entries of ended flows (gateway_steer.cpp);
  // returns at once on a host.
  awaitable<void> steer_gc_loop();
  void shutdown();
  // us_event_loop takes the userstack keeper's events: connections it accepted, connections
  // that ended (userstack_serve.cpp); first it reclaims what an earlier run left captured.
  // Returns at once without a keeper.
  awaitable<void> us_event_loop();

 private:
  // The methods' flow operations (flow_method.hpp; native_flow.cpp, userstack_flow.cpp).
  friend class NativeSourceFlow;
  friend class NativeStagedFlow;
  friend class UsSourceFlow;
  friend class UsStagedFlow;
  std::unique_ptr<SourceFlow> native_source_flow(const FourTuple& t, int fd,
                                                 std::optional<PreFreeze> pre);
  Result<std::unique_ptr<StagedFlow>> native_staged_flow(TcpSnapshot snap,
                                                         const repair::RestoreOptions& ro);
  std::unique_ptr<SourceFlow> us_source_flow(const FourTuple& t, int fd);
  // |peer_ack|: what the peer acknowledged during the source's freeze (the OFFER's hint).
  Result<std::unique_ptr<StagedFlow>> us_staged_flow(TcpSnapshot snap, const std::string& service,
                                                     std::optional<repair::PeerAck> peer_ack);
  // init_method picks the migration method (method.cpp): native, userstack (starts the Stack),
  // or unavailable; an explicit --method that is not available is an error.
  Status init_method();
  // userstack method (userstack_serve.cpp): find or start the keeper, hand the connections it
  // accepts to the registered server of their port's service.
  Status start_userstack();
  void us_accept(const FourTuple& t, UniqueFd fd);
  void us_ended(const FourTuple& t, const std::string& how);
  void us_status(JsonWriter& j);
  void us_stop();

  // init_freeze loads and attaches the eBPF freeze (host role; freeze_grace.cpp).
  Status init_freeze();
  // init_steering loads the gateway's steering, its backends and VIPs (gateway_steer.cpp).
  Status init_steering();

  // control socket
  // send_reply sends |m| to a control client without blocking anyone else.
  awaitable<Status> send_reply(seqp::socket& sock, const Message& m);
  awaitable<void> serve_control(std::shared_ptr<seqp::socket> sock);
  awaitable<Message> handle_request(const std::shared_ptr<seqp::socket>& sock, Packet& p,
                                    std::shared_ptr<AppSession>& session);
  void on_session_message(AppSession& s, Packet& p);
  // reclaim (reclaim_flow.cpp): a server hands back a connection an earlier run of this agent
  // froze; run_reclaim finishes its move one way or the other (reclaim.hpp).
  void on_reclaim(AppSession& s, Packet& p);
  awaitable<void> run_reclaim(std::shared_ptr<AppSession> session, std::uint64_t conn_id,
                              FourTuple t, repair::RepairSocket sock, std::vector<std::byte> state);
  awaitable<PeerVerdict> query_tuple(const std::string& peer, const FourTuple& t);
  // reclaim_steps runs the Reclaim core for |t| with the method's |thaw| and |release|;
  // returns its outcome.
  awaitable<std::string> reclaim_steps(FourTuple t, std::function<Status()> thaw,
                                       std::function<void()> release);
  // run_us_reclaim: the same for a connection the userstack keeper holds captured.
  awaitable<void> run_us_reclaim(FourTuple t);
  // on_query_tuple answers a restarted source's QUERY by tuple (migrate_target.cpp).
  Message on_query_tuple(const PeerConn& c, const FourTuple& t);
  void drop_session(AppSession& s);
  // conn_gone: the server of |s| no longer has connection |id|. The flow is forgotten; one a
  // batch holds is marked ended (the batch drops it), and an export it awaits completes so.
  void conn_gone(AppSession& s, std::uint64_t id, const std::string& why);
  // reap_closed_flows forgets tracked flows (not in a batch) whose server is gone or whose
  // socket no process holds any more (closed without untrack). Returns how many.
  std::size_t reap_closed_flows();

  // peer channel
  Status setup_tls();
  awaitable<Result<std::unique_ptr<PeerConn>>> connect_peer(const std::string& name);
  awaitable<Result<std::unique_ptr<PeerConn>>> take_peer(const std::string& name);
  void give_back(std::unique_ptr<PeerConn> c);
  // warm_channels: once per configured peer and gateway, open a channel in the background and
  // pool it (when a server registers: migrations will follow), so the first migration does not
  // pay a TLS handshake - whose CPU, on a small host, delays every other connection's packets.
  void warm_channels();
  awaitable<void> warm_channel(std::string name);
  awaitable<Status> write_msg(PeerConn& c, const Message& m, Clock::time_point deadline);
  awaitable<Result<Message>> read_msg(PeerConn& c, Clock::time_point deadline);
  awaitable<Result<Message>> rpc(PeerConn& c, const Message& m, Clock::time_point deadline);
  // channel_closed counts a closed peer channel and trims the heap after a flood of them.
  void channel_closed();
  awaitable<void> serve_peer(std::unique_ptr<PeerConn> c);
  awaitable<Message> handle_peer(PeerConn& c, const Message& m);
  Message on_offer(PeerConn& c, const Message& m);
  Message on_commit(const Message& m);
  Message on_abort(std::uint64_t mig, const std::string& why);
  // on_steer answers steer (|check_only| false) and steer_check (true): every tuple is validated
  // (a VIP this gateway steers, a known backend) before any entry changes.
  Message on_steer(const Message& m, bool check_only);
  // refusal_for says why |c|'s agent may not send |m| ("" = allowed): hosts take offers,
  // commits, aborts and queries only from their --peer hosts (the --gateway is not one), and a
  // commit/abort/query only from the agent that offered that migration; a gateway takes
  // steering only from its --backends.
  [[nodiscard]] std::string refusal_for(const PeerConn& c, const Message& m) const;
  // abort_staged releases what |sm| staged (silently) once its core said release.
  void abort_staged(StagedMig& sm, const std::string& why);

  // migration (source side)
  // migrate runs one batch; a selection larger than fd_room() allows is handed to
  // migrate_in_batches unless |one_batch| (then flows no longer tracked count as ended).
  awaitable<Message> migrate(const std::shared_ptr<seqp::socket>& ctl, const Message& req,
                             bool one_batch = false);
  awaitable<Message> migrate_in_batches(const std::shared_ptr<seqp::socket>& ctl,
                                        const std::string& to, const std::string& service,
                                        std::vector<std::string> keys,
                                        std::vector<std::string> ended);
  void progress(const std::shared_ptr<seqp::socket>& ctl, const std::string& line);
  // take_live: a pooled channel, checked with a HELLO round trip (a peer may have restarted),
  // else a fresh one.
  awaitable<Result<std::unique_ptr<PeerConn>>> take_live(const std::string& name);
  // source_step runs the step |next| of a batch; the src_* methods are its steps.
  awaitable<StepResult> source_step(SourceBatch& b, const SourceMigration& core, SrcNext next);
  awaitable<StepResult> src_connect(SourceBatch& b, SrcAction which);
  awaitable<StepResult> src_steer_check(SourceBatch& b, Clock::time_point deadline);
  awaitable<StepResult> src_export(SourceBatch& b, Clock::time_point export_deadline);
  // drain_send_queues waits (bounded) for exported sockets' send queues to drain (drain.hpp).
  awaitable<void> drain_send_queues(SourceBatch& b);
  // read_export_options reads each exported socket's options and tuple and takes its checkpoint
  // duplicate while its flow still runs (PreFreeze).
  void read_export_options(SourceBatch& b);
  // drop_ended_flows removes the flows at |gone| (ascending) from the batch: their connection
  // ended after the export; the server is told (export_done) and they are no longer tracked.
  void drop_ended_flows(SourceBatch& b, const std::vector<std::size_t>& gone);
  StepResult src_freeze_checkpoint(SourceBatch& b);
  awaitable<StepResult> src_ship(SourceBatch& b, Clock::time_point deadline);
  awaitable<StepResult> src_await_ready(SourceBatch& b, Clock::time_point deadline);
  awaitable<StepResult> src_steer(SourceBatch& b, Clock::time_point deadline);
  awaitable<StepResult> src_send_commit(SourceBatch& b, Clock::time_point deadline);
  awaitable<StepResult> src_await_commit(SourceBatch& b, Clock::time_point deadline);
  awaitable<StepResult> src_query(SourceBatch& b, const std::string& commit_error,
                                  Clock::time_point deadline);
  awaitable<StepResult> src_abort_staged(SourceBatch& b, Clock::time_point deadline);
  awaitable<StepResult> src_backoff(Clock::time_point until);
  StepResult src_release(SourceBatch& b, bool indeterminate);
  awaitable<StepResult> src_undo_steer_back(SourceBatch& b, Clock::time_point deadline);
  awaitable<StepResult> src_undo_tell_b_abort(SourceBatch& b, const std::string& why,
                                              Clock::time_point deadline);
  StepResult src_undo_thaw(SourceBatch& b);
  StepResult src_undo_unfreeze(SourceBatch& b);
  StepResult src_undo_return_fds(SourceBatch& b);
  void adopt_or_queue(const std::string& service, Orphan o);
  // new_adopt_id: an id for a connection the agent hands to |s| (adopt), unused by |s|.
  std::uint64_t new_adopt_id(const AppSession& s);
  void schedule_unfreeze(const FourTuple& t);
  // peer_ack_hint encodes what the freeze saw the peer acknowledge (Tag::peer_ack), 0 if none.
  std::uint64_t peer_ack_hint(const FourTuple& t) const;
  // freeze_hints: peer_ack_hint and the packets the freeze dropped from the server
  // (Tag::server_dropped), from one read of the flow's counters.
  std::pair<std::uint64_t, std::uint64_t> freeze_hints(const FourTuple& t) const;
  void cancel_freeze(const FourTuple& t);

  // status
  std::string status_json();
  std::string flows_json();
  std::string metrics_text();

  bool fault(const char* f) const { return faults_.count(f) != 0; }
  // stall_if pauses 3 s when fault |f| is set (test hook; migrate_source.cpp).
  awaitable<void> stall_if(const char* f);
  // remember_outcome keeps a staged migration's final state for `query` (last 1024).
  void remember_outcome(std::uint64_t mig, const char* state) { finished_.remember(mig, state); }

  asio::io_context& io_;
  AgentConfig cfg_;
  Logger log_;
  asio::ssl::context tls_server_;
  asio::ssl::context tls_client_;
  FaultSys fault_sys_;
  repair::Repairer repairer_;
  // SO_NETNS_COOKIE of the agent's netns, where it restores: read once, on the first restore
  // (native_flow.cpp), not from every restored socket.
  std::optional<std::optional<std::uint64_t>> netns_cookie_;
  std::set<std::string> faults_;
  std::unique_ptr<ebpf::Freezer> freezer_;
  std::unique_ptr<ebpf::Steerer> steerer_;
  // The migration method chosen at start ("native", "userstack" or "unavailable") and why.
  std::string method_ = "unavailable";
  std::string method_reason_;
  // userstack method: the keeper (us_keeper.hpp), the tuples it serves for this agent's
  // servers, and those an earlier run left captured (reclaimed at start).
  std::unique_ptr<KeeperClient> keeper_;
  std::set<std::string> us_tuples_;
  std::vector<FourTuple> us_held_;
  CapabilityReport probed_;  // the capability probe at start (status: "probed")
  std::map<std::string, std::uint32_t> backend_index_;
  std::vector<Endpoint> vips_;  // --vip, parsed (gateway)
  std::string freeze_error_;
  bool tcp_repair_ok_ = false;
  std::string tcp_repair_error_;
  std::unique_ptr<seqp_acceptor> control_;
  std::unique_ptr<asio::ip::tcp::acceptor> peer_acc_;
  std::map<std::string, FlowRec> flows_;  // key: tuple.to_string()
  std::map<std::uint64_t, std::shared_ptr<AppSession>> sessions_;
  std::uint64_t next_session_ = 1;
  // Migration ids: a random 32-bit prefix drawn at start, then a counter. The pid was used
  // before; agents in fresh VMs or pid namespaces share pids, so ids collided across hosts
  // (and the target keys staged migrations by id).
  std::uint64_t mig_prefix_ = random_mig_prefix();
  std::uint64_t next_mig_ = 1;
  static std::uint64_t random_mig_prefix() {
    std::uint32_t r = 0;
    if (::getrandom(&r, sizeof r, 0) != static_cast<ssize_t>(sizeof r)) {
      r = static_cast<std::uint32_t>(::getpid()) ^
          static_cast<std::uint32_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    }
    return static_cast<std::uint64_t>(r == 0 ? 1 : r) << 32;
  }
  std::uint64_t next_adopt_id_ = 1;
  std::map<std::string, std::vector<std::unique_ptr<PeerConn>>> pool_;
  std::map<std::uint64_t, std::unique_ptr<StagedMig>> staged_;
  OutcomeLog finished_{1024};  // recent mig -> final state
  TupleLog moved_in_{4096};    // recent moves into this host by tuple (QUERY by tuple)
  std::set<std::string> reclaiming_;  // tuples run_reclaim is on
  std::map<std::string, std::unique_ptr<asio::steady_timer>> grace_;  // tuple -> unfreeze timer
  std::map<std::string, std::deque<Orphan>> orphans_;                 // service -> fds
  Metrics metrics_;
  // Peer channels closed since the heap was last trimmed; see channel_closed().
  std::size_t closed_since_trim_ = 0;
  // TLS handshakes in progress on accepted channels, at most kMaxHandshakes.
  static constexpr std::size_t kMaxHandshakes = 128;
  std::size_t handshaking_ = 0;
  std::set<std::string> warmed_;  // peers warm_channels has tried once
  std::unique_ptr<asio::steady_timer> trim_timer_;
  std::vector<std::string> recent_reports_;
};

}  // namespace rendr::agents
