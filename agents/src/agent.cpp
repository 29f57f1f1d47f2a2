// SPDX-License-Identifier: Apache-2.0
// rendr-agent: one io_context thread, C++20 coroutines. Blocking kernel calls (repair, BPF map
// updates) are microseconds and run inline on that thread.
#include "agent.hpp"
#include "sock_diag.hpp"

#include <rendr/agents/message.hpp>
#include <rendr/agents/migration.hpp>
#include <rendr/agents/packet.hpp>
#include <rendr/common/endpoint.hpp>
#include <rendr/common/json.hpp>
#include <rendr/common/log.hpp>
#include <rendr/common/snapshot_codec.hpp>
#include <rendr/ebpf/freezer.hpp>
#include <rendr/ebpf/steerer.hpp>
#include <rendr/repair/repair.hpp>

#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/ssl.hpp>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <ifaddrs.h>
#include <malloc.h>
#include <net/if.h>
#include <netinet/tcp.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <functional>
#include <optional>
#include <set>

namespace rendr::agents {

using asio::awaitable;
using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;
using Clock = std::chrono::steady_clock;
using ms = std::chrono::milliseconds;
constexpr auto as_tuple_aw = asio::experimental::as_tuple(asio::use_awaitable);
using seqp = asio::generic::seq_packet_protocol;
using seqp_acceptor = asio::basic_socket_acceptor<seqp>;
using tls_stream = asio::ssl::stream<asio::ip::tcp::socket>;

namespace {

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::optional<repair::PeerAck> decode_peer_ack(std::uint64_t v) {
  if ((v >> 48) != 1) {
    return std::nullopt;
  }
  return repair::PeerAck{static_cast<std::uint32_t>(v), static_cast<std::uint16_t>(v >> 32)};
}

std::string fmt_ms(Clock::time_point a, Clock::time_point b) {
  char out[32];
  std::snprintf(out, sizeof out, "%.2f", std::chrono::duration<double, std::milli>(b - a).count());
  return out;
}

// peer_in_our_netns: whether the process at the other end of control socket |fd| lives in this
// agent's network namespace (then its sockets can be looked up here).
bool peer_in_our_netns(int fd) {
  ucred cred{};
  socklen_t cl = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 || cred.pid <= 0) {
    return false;
  }
  struct stat theirs {};
  struct stat ours {};
  const std::string path = "/proc/" + std::to_string(cred.pid) + "/ns/net";
  return ::stat(path.c_str(), &theirs) == 0 && ::stat("/proc/self/ns/net", &ours) == 0 &&
         theirs.st_ino == ours.st_ino && theirs.st_dev == ours.st_dev;
}

// socket_closed: the TCP socket |fd| reached CLOSE (the peer reset it, or both sides closed
// it): nothing of the connection is left to move.
bool socket_closed(int fd) {
  tcp_info ti{};
  socklen_t len = sizeof ti;
  return ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 && ti.tcpi_state == TCP_CLOSE;
}

// FdRoom: how many flows one batch may hold under this process's RLIMIT_NOFILE. A source
// batch keeps two descriptors per flow open (the exported fd and the checkpoint's duplicate);
// a reserve stays free for channels, sessions and sockets staged here by other agents.
struct FdRoom {
  std::uint64_t limit = 0;  // 0: unlimited
  std::uint64_t open = 0;
  std::size_t flows = 0;
};

FdRoom fd_room() {
  FdRoom r;
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
    r.flows = SIZE_MAX;
    return r;
  }
  r.limit = rl.rlim_cur;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') {
        ++r.open;
      }
    }
    ::closedir(d);
    r.open = r.open > 0 ? r.open - 1 : 0;  // the directory's own descriptor
  }
  const std::uint64_t reserve = std::max<std::uint64_t>(32, r.limit / 16);
  r.flows = r.limit > r.open + reserve ? static_cast<std::size_t>((r.limit - r.open - reserve) / 2)
                                       : 0;
  return r;
}

std::uint64_t u64_of(const std::string& s) { return std::strtoull(s.c_str(), nullptr, 10); }

std::string kernel_release() {
  utsname u{};
  return ::uname(&u) == 0 ? std::string(u.release) : "unknown";
}

Result<asio::ip::tcp::endpoint> tcp_endpoint(const std::string& text) {
  auto ep = Endpoint::parse(text);
  if (!ep) {
    return std::move(ep).take_error();
  }
  sockaddr_storage ss{};
  socklen_t len = ep->to_sockaddr(ss);
  asio::ip::tcp::endpoint out;
  std::memcpy(out.data(), &ss, len);
  out.resize(len);
  return out;
}

// FaultSys: test-only repair::Sys that makes the read-back of TCP_QUEUE_SEQ disagree, so a
// restore fails its validation for real (fault "restore_mismatch").
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
};

struct AppSession;

// A tracked connection of an embedder.
struct FlowRec {
  FourTuple tuple;
  std::weak_ptr<AppSession> session;
  std::uint64_t conn_id = 0;
  std::string service;
  bool migrating = false;
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
  std::uint64_t mig = 0;
  std::string from;
  std::string service;
  std::vector<repair::StagedSocket> sockets;
  std::vector<std::vector<std::byte>> states;
  std::vector<FourTuple> frozen_here;  // tuples this (target) agent froze while staged
  std::string state = "staged";  // staged | committed | aborted
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
  std::uint64_t peer_requests_refused = 0;  // a configured agent asked for what its role may not
  std::uint64_t flows_ended = 0;   // dropped from batches: they ended before they could move
  std::uint64_t flows_reaped = 0;  // forgotten: no process held their socket any more
  double frozen_ms_sum = 0;
  double frozen_ms_last = 0;
  double frozen_ms_max = 0;
};

// Adopted fds waiting for a registered server of their service.
struct Orphan {
  FourTuple tuple;
  UniqueFd fd;
  std::vector<std::byte> state;
};

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
  void shutdown();

 private:
  // control socket
  // send_reply sends |m| to a control client without blocking anyone else.
  awaitable<Status> send_reply(seqp::socket& sock, const Message& m);
  awaitable<void> serve_control(std::shared_ptr<seqp::socket> sock);
  awaitable<Message> handle_request(const std::shared_ptr<seqp::socket>& sock, Packet& p,
                                    std::shared_ptr<AppSession>& session);
  void on_session_message(AppSession& s, Packet& p);
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
  void adopt_or_queue(const std::string& service, Orphan o);
  void schedule_unfreeze(const FourTuple& t);
  // peer_ack_hint encodes what the freeze saw the peer acknowledge (Tag::peer_ack), 0 if none.
  std::uint64_t peer_ack_hint(const FourTuple& t) const;
  void cancel_freeze(const FourTuple& t);

  // status
  std::string status_json();
  std::string flows_json();
  std::string metrics_text();

  bool fault(const char* f) const { return faults_.count(f) != 0; }
  // remember_outcome keeps a staged migration's final state for `query` (last 1024).
  void remember_outcome(std::uint64_t mig, const char* state) {
    finished_.emplace_back(mig, state);
    if (finished_.size() > 1024) {
      finished_.pop_front();
    }
  }

  asio::io_context& io_;
  AgentConfig cfg_;
  Logger log_;
  asio::ssl::context tls_server_;
  asio::ssl::context tls_client_;
  FaultSys fault_sys_;
  repair::Repairer repairer_;
  std::set<std::string> faults_;
  std::unique_ptr<ebpf::Freezer> freezer_;
  std::unique_ptr<ebpf::Steerer> steerer_;
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
  std::deque<std::pair<std::uint64_t, std::string>> finished_;  // recent mig -> final state
  std::map<std::string, std::unique_ptr<asio::steady_timer>> grace_;  // tuple -> unfreeze timer
  std::map<std::string, std::deque<Orphan>> orphans_;                 // service -> fds
  Metrics metrics_;
  // Peer channels closed since the heap was last trimmed; see channel_closed().
  std::size_t closed_since_trim_ = 0;
  // TLS handshakes in progress on accepted channels, at most kMaxHandshakes.
  static constexpr std::size_t kMaxHandshakes = 128;
  std::size_t handshaking_ = 0;
  std::unique_ptr<asio::steady_timer> trim_timer_;
  std::vector<std::string> recent_reports_;
};

// ---------------------------------------------------------------------------------------------
// init

std::vector<std::string> default_ifaces() {
  std::vector<std::string> out;
  ifaddrs* ifa = nullptr;
  if (::getifaddrs(&ifa) != 0) {
    return out;
  }
  for (ifaddrs* i = ifa; i != nullptr; i = i->ifa_next) {
    if ((i->ifa_flags & IFF_LOOPBACK) != 0 || (i->ifa_flags & IFF_UP) == 0) {
      continue;
    }
    if (std::find(out.begin(), out.end(), i->ifa_name) == out.end()) {
      out.emplace_back(i->ifa_name);
    }
  }
  ::freeifaddrs(ifa);
  return out;
}

Status Agent::setup_tls() {
  auto prep = [&](asio::ssl::context& ctx, const char* role) -> Status {
    SSL_CTX* raw = ctx.native_handle();
    SSL_CTX_set_min_proto_version(raw, TLS1_3_VERSION);
    asio::error_code ec;
    ctx.use_certificate_chain_file(cfg_.cert, ec);
    if (ec) {
      return make_error(std::errc::invalid_argument,
                        std::string(role) + ": certificate " + cfg_.cert + ": " + ec.message() +
                            " (create one with `rendrctl cert issue`)");
    }
    ctx.use_private_key_file(cfg_.key, asio::ssl::context::pem, ec);
    if (ec) {
      return make_error(std::errc::invalid_argument,
                        std::string(role) + ": private key " + cfg_.key + ": " + ec.message());
    }
    ctx.load_verify_file(cfg_.ca, ec);
    if (ec) {
      return make_error(std::errc::invalid_argument,
                        std::string(role) + ": CA " + cfg_.ca + ": " + ec.message());
    }
    ctx.set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
    return {};
  };
  RENDR_TRY(prep(tls_server_, "TLS server"));
  RENDR_TRY(prep(tls_client_, "TLS client"));
  return {};
}

Status Agent::init() {
  if (cfg_.name.empty()) {
    return make_error(std::errc::invalid_argument, "--name is required");
  }
  if (cfg_.cert.empty() || cfg_.key.empty() || cfg_.ca.empty()) {
    return make_error(std::errc::invalid_argument,
                      "--cert, --key and --ca are required (the agent channel is mutual TLS; "
                      "see `rendrctl cert init`)");
  }
  RENDR_TRY(setup_tls());

  auto rp = repair::probe_tcp_repair();
  tcp_repair_ok_ = rp.ok();
  if (!rp.ok()) {
    tcp_repair_error_ = rp.error().message();
    log_.warn("TCP_REPAIR unavailable: " + tcp_repair_error_);
  }

  if (!cfg_.no_freeze && cfg_.steer_ifaces.empty()) {
    auto fz = ebpf::Freezer::create();
    if (!fz) {
      freeze_error_ = fz.error().message();
      log_.warn("eBPF freeze unavailable: " + freeze_error_);
    } else {
      freezer_ = std::make_unique<ebpf::Freezer>(std::move(*fz));
      auto ifs = cfg_.freeze_ifaces.empty() ? default_ifaces() : cfg_.freeze_ifaces;
      for (const auto& ifn : ifs) {
        unsigned idx = ::if_nametoindex(ifn.c_str());
        if (idx == 0) {
          return make_error(std::errc::no_such_device, "--freeze-iface " + ifn + ": no such device");
        }
        RENDR_TRY_CTX(freezer_->attach(static_cast<int>(idx)), "attach freeze to " + ifn);
        log_.info("freeze attached to " + ifn);
      }
    }
  }

  if (!cfg_.steer_ifaces.empty()) {
    auto st = ebpf::Steerer::create();
    if (!st) {
      return std::move(st).take_error().with_context("gateway steering");
    }
    steerer_ = std::make_unique<ebpf::Steerer>(std::move(*st));
    std::uint32_t idx = 0;
    for (const auto& b : cfg_.backends) {
      unsigned ifidx = ::if_nametoindex(b.ifname.c_str());
      if (ifidx == 0) {
        return make_error(std::errc::no_such_device,
                          "--backend " + b.name + ": no device " + b.ifname);
      }
      ebpf::Backend be;
      be.ifindex = static_cast<int>(ifidx);
      if (!b.nexthop.empty()) {
        auto nh = Endpoint::parse_address(b.nexthop, 0);
        if (!nh) {
          return std::move(nh).take_error().with_context("--backend " + b.name + " nexthop");
        }
        be.nexthop = *nh;
      }
      RENDR_TRY_CTX(steerer_->set_backend(idx, be), "backend " + b.name);
      backend_index_[b.name] = idx++;
    }
    for (const auto& v : cfg_.vips) {
      auto ep = Endpoint::parse_address(v, 0);
      if (!ep) {
        return std::move(ep).take_error().with_context("--vip");
      }
      RENDR_TRY_CTX(steerer_->add_vip(*ep), "--vip " + v);
      vips_.push_back(*ep);
    }
    if (!cfg_.default_backend.empty()) {
      auto it = backend_index_.find(cfg_.default_backend);
      if (it == backend_index_.end()) {
        return make_error(std::errc::invalid_argument,
                          "--default-backend " + cfg_.default_backend + " is not a --backend");
      }
      RENDR_TRY(steerer_->set_default_backend(it->second));
    }
    for (const auto& ifn : cfg_.steer_ifaces) {
      unsigned idx2 = ::if_nametoindex(ifn.c_str());
      if (idx2 == 0) {
        return make_error(std::errc::no_such_device, "--steer-iface " + ifn + ": no such device");
      }
      RENDR_TRY_CTX(steerer_->attach(static_cast<int>(idx2)), "attach steering to " + ifn);
    }
    log_.info("gateway steering on " + std::to_string(cfg_.steer_ifaces.size()) +
              " device(s), " + std::to_string(cfg_.backends.size()) + " backend(s)");
  }

  // Control socket: root-only (mode 0600, and SO_PEERCRED checked per connection).
  std::string dir = cfg_.control_socket.substr(0, cfg_.control_socket.rfind('/'));
  if (!dir.empty()) {
    ::mkdir(dir.c_str(), 0755);
  }
  ::unlink(cfg_.control_socket.c_str());
  control_ = std::make_unique<seqp_acceptor>(io_);
  asio::error_code ec;
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (cfg_.control_socket.size() >= sizeof sun.sun_path) {
    return make_error(std::errc::filename_too_long, "--control " + cfg_.control_socket);
  }
  std::memcpy(sun.sun_path, cfg_.control_socket.c_str(), cfg_.control_socket.size() + 1);
  mode_t old = ::umask(0177);
  control_->open(seqp(AF_UNIX, 0), ec);
  if (!ec) {
    control_->bind(seqp::endpoint(&sun, sizeof sun), ec);
  }
  ::umask(old);
  if (!ec) {
    control_->listen(asio::socket_base::max_listen_connections, ec);
  }
  if (ec) {
    return Error{ec, "control socket " + cfg_.control_socket};
  }
  ::chmod(cfg_.control_socket.c_str(), 0600);

  if (!cfg_.listen.empty()) {
    auto ep = tcp_endpoint(cfg_.listen);
    if (!ep) {
      return std::move(ep).take_error().with_context("--listen");
    }
    peer_acc_ = std::make_unique<asio::ip::tcp::acceptor>(io_);
    peer_acc_->open(ep->protocol(), ec);
    if (!ec) {
      peer_acc_->set_option(asio::socket_base::reuse_address(true), ec);
      peer_acc_->bind(*ep, ec);
    }
    if (!ec) {
      peer_acc_->listen(asio::socket_base::max_listen_connections, ec);
    }
    if (ec) {
      return Error{ec, "agent channel listen " + cfg_.listen};
    }
  }
  log_.info("agent " + cfg_.name + " ready: control " + cfg_.control_socket +
            (cfg_.listen.empty() ? "" : ", agent channel " + cfg_.listen));
  return {};
}

void Agent::shutdown() {
  asio::error_code ec;
  if (control_) {
    control_->close(ec);
  }
  if (peer_acc_) {
    peer_acc_->close(ec);
  }
  ::unlink(cfg_.control_socket.c_str());
  // Staged sockets close silently; held migrated fds were never handed out.
  staged_.clear();
}

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
        cred.uid != 0) {
      (void)send_packet(sock->native_handle(),
                        fail_msg("the rendr-agent control socket is root-only"));
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

void Agent::on_session_message(AppSession& s, Packet& p) {
  const Message& m = p.msg;
  switch (m.type()) {
    case MsgType::track: {
      auto id = m.u64(Tag::conn_id);
      auto ts = m.str(Tag::tuple);
      auto t = ts ? FourTuple::parse(*ts) : Result<FourTuple>(ts.error());
      if (!id || !t) {
        log_.warn("session " + std::to_string(s.id) + ": malformed track");
        return;
      }
      FlowRec r;
      r.tuple = *t;
      r.session = sessions_[s.id];
      r.conn_id = *id;
      r.service = s.service;
      flows_[t->to_string()] = std::move(r);
      s.conns[*id] = t->to_string();
      return;
    }
    case MsgType::untrack: {
      if (auto id = m.u64(Tag::conn_id); id) {
        conn_gone(s, *id, "closed by the server");
      }
      return;
    }
    case MsgType::exported:
    case MsgType::export_refused: {
      auto id = m.u64(Tag::conn_id);
      if (!id) {
        return;
      }
      auto it = s.pending.find(*id);
      if (it == s.pending.end()) {
        // A refusal after an untrack of the same connection is the usual order when a
        // connection closes while its batch exports (the untrack already ended it).
        if (m.type() == MsgType::export_refused) {
          log_.debug("session " + std::to_string(s.id) + ": late refusal of conn " +
                     std::to_string(*id));
        } else if (p.fd.valid() && s.conns.count(*id) != 0) {
          // An export that came after its batch gave up waiting (step timeout): the server
          // no longer serves it, and closing the fd here would end the connection. Hand it back.
          log_.warn("session " + std::to_string(s.id) + ": late export of conn " +
                    std::to_string(*id) + ": returned to the server");
          Message rt(MsgType::returned);
          rt.add_u64(Tag::conn_id, *id);
          if (const auto* st = m.get(Tag::state); st != nullptr) {
            rt.add(Tag::state, *st);
          }
          (void)send_packet(s.sock->native_handle(), rt, p.fd.get());
        } else {
          log_.warn("session " + std::to_string(s.id) + ": unrequested export of conn " +
                    std::to_string(*id));
        }
        return;
      }
      ExportSlot* slot = it->second;
      s.pending.erase(it);
      slot->done = true;
      if (m.type() == MsgType::exported) {
        if (!p.fd.valid()) {
          slot->error = "exported without an fd";
        } else {
          slot->fd = std::move(p.fd);
          const auto* st = m.get(Tag::state);
          if (st != nullptr) {
            slot->state = *st;
          }
        }
      } else {
        slot->refused = true;
        slot->error = "the server refused: " + m.str_or(Tag::text, "(no reason)");
      }
      if (s.export_notify != nullptr) {
        s.export_notify->cancel();
      }
      return;
    }
    default:
      log_.warn("session " + std::to_string(s.id) + ": unexpected " + to_string(m.type()));
  }
}

void Agent::conn_gone(AppSession& s, std::uint64_t id, const std::string& why) {
  auto it = s.conns.find(id);
  if (it != s.conns.end()) {
    auto f = flows_.find(it->second);
    if (f != flows_.end() && f->second.conn_id == id && f->second.session.lock().get() == &s) {
      if (f->second.migrating) {
        f->second.ended = true;
        f->second.ended_why = why;
      } else {
        flows_.erase(f);
      }
    }
    s.conns.erase(it);
  }
  auto p = s.pending.find(id);
  if (p != s.pending.end()) {
    p->second->done = true;
    p->second->ended = true;
    p->second->error = why;
    s.pending.erase(p);
    if (s.export_notify != nullptr) {
      s.export_notify->cancel();
    }
  }
}

std::size_t Agent::reap_closed_flows() {
  bool checkable = false;
  for (const auto& [k, f] : flows_) {
    auto s = f.session.lock();
    if (!f.migrating && (!s || !s->alive || s->same_netns)) {
      checkable = true;
      break;
    }
  }
  if (!checkable) {
    return 0;
  }
  auto held = held_tcp_sockets();
  if (!held) {
    log_.warn("cannot check tracked flows against their sockets: " + held.error().message());
  }
  std::size_t n = 0;
  for (auto it = flows_.begin(); it != flows_.end();) {
    auto s = it->second.session.lock();
    const bool gone = !it->second.migrating &&
                      (!s || !s->alive ||
                       (held && s->same_netns && held->count(it->first) == 0));
    if (!gone) {
      ++it;
      continue;
    }
    log_.info("forgetting " + it->first + " (conn " + std::to_string(it->second.conn_id) +
              "): " + (s && s->alive ? "no process holds its socket" : "its server is gone"));
    if (s) {
      s->conns.erase(it->second.conn_id);
    }
    it = flows_.erase(it);
    ++n;
  }
  metrics_.flows_reaped += n;
  return n;
}

void Agent::drop_session(AppSession& s) {
  s.alive = false;
  for (auto& [id, slot] : s.pending) {
    slot->done = true;
    slot->error = "the server's session closed";
  }
  s.pending.clear();
  if (s.export_notify != nullptr) {
    s.export_notify->cancel();
  }
  for (const auto& [id, key] : s.conns) {
    auto f = flows_.find(key);
    if (f != flows_.end() && !f->second.migrating) {
      flows_.erase(f);
    }
  }
  log_.info("service " + s.service + " session " + std::to_string(s.id) + " closed");
  sessions_.erase(s.id);
}

// ---------------------------------------------------------------------------------------------
// agent channel

std::string peer_common_name(SSL* ssl) {
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) {
    return {};
  }
  char cn[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
  X509_free(cert);
  return cn;
}

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
      if (sm->state == "staged") {
        abort_staged(*sm, "channel to " + c->peer_name + " closed before commit");
      }
    }
  }
}

std::string Agent::refusal_for(const PeerConn& c, const Message& m) const {
  const std::string& who = c.peer_name;
  const bool host_peer = cfg_.peers.contains(who) && who != cfg_.gateway;
  auto staged_by_other = [&]() -> bool {
    auto mig = m.u64(Tag::mig);
    if (!mig) {
      return false;  // the handler answers the malformed request
    }
    auto it = staged_.find(*mig);
    return it != staged_.end() && it->second->from != who;
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
      auto mig = m.u64(Tag::mig);
      if (!mig) {
        co_return fail_msg(mig.error());
      }
      std::string state = "unknown";
      auto it = staged_.find(*mig);
      if (it != staged_.end()) {
        state = it->second->state;
      } else {
        for (const auto& [id, st] : finished_) {
          if (id == *mig) {
            state = st;
          }
        }
      }
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

Message Agent::on_offer(PeerConn& c, const Message& m) {
  auto mig = m.u64(Tag::mig);
  auto svc = m.str(Tag::service);
  auto ids = m.u64s(Tag::conn_id);
  auto snaps = m.all(Tag::snapshot);
  auto states = m.all(Tag::state);
  auto reject = [&](const std::string& why) {
    ++metrics_.offers_rejected;
    log_.warn("offer from " + c.peer_name + " rejected: " + why);
    Message f(MsgType::peer_fail);
    if (mig) {
      f.add_u64(Tag::mig, *mig);
    }
    return f.add(Tag::text, why);
  };
  if (!mig || !svc || !ids || ids->size() != snaps.size() || snaps.size() != states.size() ||
      snaps.empty()) {
    return reject("malformed offer (fields missing or lists of different lengths)");
  }
  if (!tcp_repair_ok_) {
    return reject("TCP_REPAIR unavailable on " + cfg_.name + ": " + tcp_repair_error_);
  }
  if (staged_.count(*mig) != 0) {
    return reject("migration " + std::to_string(*mig) + " is already staged here (from " +
                  staged_.at(*mig)->from + ")");
  }
  // Decode everything before touching the kernel: a tampered or truncated snapshot rejects
  // the whole offer.
  const auto t_decode = Clock::now();
  std::vector<TcpSnapshot> decoded;
  decoded.reserve(snaps.size());
  for (std::size_t i = 0; i < snaps.size(); ++i) {
    auto s = decode_snapshot(*snaps[i]);
    if (!s) {
      return reject("snapshot " + std::to_string(i) + " rejected: " + s.error().message());
    }
    decoded.push_back(std::move(*s));
  }
  const auto t_stage = Clock::now();
  auto sm = std::make_unique<StagedMig>();
  sm->mig = *mig;
  sm->from = c.peer_name;
  sm->service = *svc;
  sm->channel = &c;
  // Optional (older sources send none): one peer_ack hint per connection.
  std::vector<std::uint64_t> hints;
  if (auto h = m.u64s(Tag::peer_ack); h && h->size() == decoded.size()) {
    hints = std::move(*h);
  }
  for (std::size_t i = 0; i < decoded.size(); ++i) {
    // A flow that left this host earlier may still have its grace freeze: lift it first.
    cancel_freeze(decoded[i].tuple);
    repair::RestoreOptions ro;
    if (i < hints.size()) {
      ro.peer_ack = decode_peer_ack(hints[i]);
    }
    const FourTuple tuple = decoded[i].tuple;
    auto st = repairer_.restore_staged(std::move(decoded[i]), ro);
    if (!st) {
      ++metrics_.restores_failed;
      sm->sockets.clear();  // silent
      return reject("restore " + std::to_string(i) + ": " + st.error().message());
    }
    sm->sockets.push_back(std::move(*st));
    sm->states.push_back(*states[i]);
    // Hold what reaches this host for the connection until it goes live (the gateway may steer
    // before COMMIT); it is replayed after activation, so the staged socket sees nothing.
    if (freezer_ && freezer_->freeze(tuple)) {
      sm->frozen_here.push_back(tuple);
    }
  }
  sm->expiry = std::make_unique<asio::steady_timer>(io_, ms(cfg_.staged_timeout_ms));
  std::uint64_t id = *mig;
  sm->expiry->async_wait([this, id](asio::error_code ec) {
    if (ec) {
      return;
    }
    auto it = staged_.find(id);
    if (it != staged_.end() && it->second->state == "staged") {
      abort_staged(*it->second, "no commit within the staged timeout");
    }
  });
  log_.info("migration " + std::to_string(id) + " from " + c.peer_name + ": staged " +
            std::to_string(sm->sockets.size()) + " socket(s) for " + *svc + " (decode " +
            fmt_ms(t_decode, t_stage) + " ms, restore " + fmt_ms(t_stage, Clock::now()) + " ms)");
  staged_[id] = std::move(sm);
  return Message(MsgType::ready).add_u64(Tag::mig, id);
}

void Agent::abort_staged(StagedMig& sm, const std::string& why) {
  log_.warn("migration " + std::to_string(sm.mig) + " aborted here: " + why);
  for (auto& s : sm.sockets) {
    repairer_.release(std::move(s));
  }
  sm.sockets.clear();
  if (freezer_) {
    for (const auto& t : sm.frozen_here) {
      (void)freezer_->unfreeze(t);
    }
  }
  sm.frozen_here.clear();
  sm.state = "aborted";
  remember_outcome(sm.mig, "aborted");
  std::uint64_t id = sm.mig;
  asio::post(io_, [this, id] { staged_.erase(id); });
}

Message Agent::on_abort(std::uint64_t mig, const std::string& why) {
  auto it = staged_.find(mig);
  if (it != staged_.end() && it->second->state == "staged") {
    abort_staged(*it->second, why);
  }
  return Message(MsgType::aborted).add_u64(Tag::mig, mig);
}

Message Agent::on_commit(const Message& m) {
  auto mig = m.u64(Tag::mig);
  if (!mig) {
    return fail_msg(mig.error());
  }
  auto it = staged_.find(*mig);
  if (it == staged_.end() || it->second->state != "staged") {
    return Message(MsgType::peer_fail)
        .add_u64(Tag::mig, *mig)
        .add(Tag::text, "migration " + std::to_string(*mig) + " is not staged here (" +
                            (it == staged_.end() ? "unknown" : it->second->state) + ")");
  }
  StagedMig& sm = *it->second;
  sm.expiry->cancel();
  std::uint64_t adopted = 0;
  std::string warnings;
  // Optional (older sources send none): one peer_ack hint per connection, in offer order.
  std::vector<std::uint64_t> hints;
  if (auto h = m.u64s(Tag::peer_ack); h && h->size() == sm.sockets.size()) {
    hints = std::move(*h);
  }
  // Replay packets from the source, per connection, oldest first.
  std::vector<std::vector<std::vector<std::byte>>> replay(sm.sockets.size());
  for (const auto* v : m.all(Tag::replay)) {
    if (v->size() <= 4) {
      continue;
    }
    const std::uint32_t idx = (static_cast<std::uint32_t>((*v)[0]) << 24) |
                              (static_cast<std::uint32_t>((*v)[1]) << 16) |
                              (static_cast<std::uint32_t>((*v)[2]) << 8) |
                              static_cast<std::uint32_t>((*v)[3]);
    if (idx < replay.size()) {
      replay[idx].emplace_back(v->begin() + 4, v->end());
    }
  }
  for (std::size_t i = 0; i < sm.sockets.size(); ++i) {
    FourTuple t = sm.sockets[i].tuple();
    // Then what reached this host while staged; lift our freeze before the socket speaks.
    if (freezer_ && std::find(sm.frozen_here.begin(), sm.frozen_here.end(), t) !=
                        sm.frozen_here.end()) {
      if (auto own = freezer_->take_dropped(t); own) {
        for (auto& p : *own) {
          replay[i].push_back(std::move(p));
        }
      }
      (void)freezer_->unfreeze(t);
    }
    std::optional<std::uint32_t> peer_acked;
    if (i < hints.size()) {
      if (auto pa = decode_peer_ack(hints[i])) {
        peer_acked = pa->ack;
      }
    }
    {
      const auto& snap = sm.sockets[i].snapshot();
      log_.info("activate " + t.to_string() + ": " + std::to_string(snap.send_unacked()) +
                " bytes unacked, " +
                std::to_string(snap.send_queue.size() - snap.send_unacked()) + " unsent, peer ack " +
                (peer_acked ? std::to_string(static_cast<std::int32_t>(*peer_acked - snap.send_seq)) +
                                  " past snd_una"
                            : std::string("unknown")));
    }
    auto fd = repairer_.activate(std::move(sm.sockets[i]),
                                 i < hints.size() ? decode_peer_ack(hints[i]) : std::nullopt,
                                 replay[i]);
    if (!fd) {
      // Past repair-off nothing can be undone; report it loudly.
      warnings += fd.error().message() + "; ";
      continue;
    }
    ++adopted;
    adopt_or_queue(sm.service, Orphan{t, std::move(*fd), std::move(sm.states[i])});
  }
  sm.sockets.clear();
  sm.frozen_here.clear();
  sm.state = "committed";
  remember_outcome(sm.mig, "committed");
  metrics_.flows_adopted += adopted;
  log_.info("migration " + std::to_string(sm.mig) + " committed: " + std::to_string(adopted) +
            " connection(s) live here" + (warnings.empty() ? "" : " (errors: " + warnings + ")"));
  std::uint64_t id = sm.mig;
  asio::post(io_, [this, id] { staged_.erase(id); });
  Message r(MsgType::committed);
  r.add_u64(Tag::mig, id).add_u64(Tag::adopted, adopted);
  if (!warnings.empty()) {
    r.add(Tag::text, warnings);
  }
  return r;
}

void Agent::adopt_or_queue(const std::string& service, Orphan o) {
  for (auto& [sid, s] : sessions_) {
    if (s->service != service || !s->alive) {
      continue;
    }
    // A server that registered again after an agent restart tracks its adopted connections
    // under the ids an earlier agent gave them: never hand out one of those twice.
    std::uint64_t id = 0;
    do {
      id = (1ULL << 63) | next_adopt_id_++;
    } while (s->conns.count(id) != 0);
    Message a(MsgType::adopt);
    a.add_u64(Tag::conn_id, id).add(Tag::tuple, o.tuple.to_string()).add(Tag::state, o.state);
    if (send_packet(s->sock->native_handle(), a, o.fd.get()).ok()) {
      FlowRec r;
      r.tuple = o.tuple;
      r.session = s;
      r.conn_id = id;
      r.service = service;
      flows_[o.tuple.to_string()] = std::move(r);
      s->conns[id] = o.tuple.to_string();
      return;
    }
  }
  log_.warn("no server registered for " + service + ": holding " + o.tuple.to_string() +
            " until one registers");
  orphans_[service].push_back(std::move(o));
}

Message Agent::on_steer(const Message& m, bool check_only) {
  auto mig = m.u64(Tag::mig);
  auto backend = m.str(Tag::backend);
  if (!steerer_) {
    return fail_msg("agent " + cfg_.name + " is not a gateway (no --steer-iface)");
  }
  if (!mig || !backend) {
    return fail_msg("malformed steer request");
  }
  auto bi = backend_index_.find(*backend);
  if (bi == backend_index_.end()) {
    return fail_msg("gateway " + cfg_.name + " has no backend '" + *backend + "'");
  }
  // All tuples first: a request that names one flow this gateway cannot steer changes nothing.
  std::vector<FourTuple> tuples;
  for (const auto& ts : m.strs(Tag::tuple)) {
    auto t = FourTuple::parse(ts);
    if (!t) {
      return fail_msg(t.error());
    }
    const std::string addr = t->local.address_string();
    if (std::none_of(vips_.begin(), vips_.end(),
                     [&addr](const Endpoint& v) { return v.address_string() == addr; })) {
      std::string have;
      for (const auto& v : vips_) {
        have += (have.empty() ? "" : ", ") + v.address_string();
      }
      return fail_msg("gateway " + cfg_.name + " does not steer " + addr + " (flow " +
                      t->to_string() + "); its VIPs: " + (have.empty() ? "none" : have));
    }
    tuples.push_back(*t);
  }
  if (fault("refuse_steer") && !check_only) {
    return fail_msg("gateway " + cfg_.name + " refused to steer (fault injection)");
  }
  std::size_t n = 0;
  for (const auto& t : tuples) {
    if (!check_only) {
      if (auto s = steerer_->steer(t, bi->second); !s) {
        return fail_msg(s.error());
      }
    }
    ++n;
  }
  return Message(MsgType::steered).add_u64(Tag::mig, *mig).add_u64(Tag::adopted, check_only ? 0 : n);
}

// ---------------------------------------------------------------------------------------------
// migration (source side)

void Agent::progress(const std::shared_ptr<seqp::socket>& ctl, const std::string& line) {
  if (ctl) {
    // Progress is informational: a client that does not read it loses lines, nobody waits.
    (void)send_packet_nowait(ctl->native_handle(),
                             Message(MsgType::progress).add(Tag::text, line));
  }
}

void Agent::cancel_freeze(const FourTuple& t) {
  auto it = grace_.find(t.to_string());
  if (it != grace_.end()) {
    it->second->cancel();
    grace_.erase(it);
  }
  if (freezer_) {
    (void)freezer_->unfreeze(t);
  }
}

std::uint64_t Agent::peer_ack_hint(const FourTuple& t) const {
  if (!freezer_) {
    return 0;
  }
  auto c = freezer_->counters(t);
  if (!c || !c->peer_ack) {
    return 0;
  }
  return (std::uint64_t{1} << 48) | (std::uint64_t{c->peer_window} << 32) | *c->peer_ack;
}

void Agent::schedule_unfreeze(const FourTuple& t) {
  if (!freezer_) {
    return;
  }
  auto timer = std::make_unique<asio::steady_timer>(io_, ms(cfg_.freeze_grace_ms));
  std::string key = t.to_string();
  timer->async_wait([this, t, key](asio::error_code ec) {
    if (ec) {
      return;
    }
    (void)freezer_->unfreeze(t);
    grace_.erase(key);
  });
  grace_[key] = std::move(timer);
}

awaitable<Message> Agent::migrate(const std::shared_ptr<seqp::socket>& ctl, const Message& req,
                                  bool one_batch) {
  const auto t0 = Clock::now();
  MigrationFsm fsm;
  const std::uint64_t mig = mig_prefix_ | (next_mig_++ & 0xffffffffu);
  auto to = req.str(Tag::to);
  if (!to || to->empty()) {
    co_return fail_msg("--to AGENT is required");
  }
  if (*to == cfg_.name) {
    co_return fail_msg("the flows are already on " + cfg_.name);
  }
  if (!tcp_repair_ok_) {
    co_return fail_msg("TCP_REPAIR unavailable here: " + tcp_repair_error_);
  }
  if (!freezer_ && !cfg_.no_freeze) {
    co_return fail_msg("the eBPF freeze is not loaded here (" + freeze_error_ +
                       "); without it the source could answer the peer mid-migration");
  }
  // Select the flows.
  std::vector<FlowRec*> sel;
  std::vector<std::string> ended;  // flows that ended before they could move: "tuple: why"
  const bool all = req.get(Tag::all) != nullptr;
  const std::string svc = req.str_or(Tag::service, "");
  for (const auto& ts : req.strs(Tag::tuple)) {
    auto t = FourTuple::parse(ts);
    if (!t) {
      co_return fail_msg(t.error());
    }
    auto it = flows_.find(t->to_string());
    if (it == flows_.end() && one_batch) {
      ended.push_back(t->to_string() + ": closed by the server (before its batch)");
      continue;
    }
    if (it == flows_.end()) {
      co_return fail_msg("no tracked flow " + t->to_string() + " on " + cfg_.name +
                         " (see `rendrctl flows`)");
    }
    sel.push_back(&it->second);
  }
  if (all || !svc.empty()) {
    for (auto& [k, f] : flows_) {
      if (!f.migrating && (all || f.service == svc)) {
        sel.push_back(&f);
      }
    }
  }
  std::sort(sel.begin(), sel.end());
  sel.erase(std::unique(sel.begin(), sel.end()), sel.end());
  if (sel.empty() && ended.empty()) {
    co_return fail_msg("no flows selected");
  }
  // Flows that ended before the batch starts are not moved but reported, with why: entries
  // whose server went away, or whose socket no process holds (closed without an untrack).
  {
    std::optional<std::set<std::string>> held;
    if (std::any_of(sel.begin(), sel.end(), [](FlowRec* f) {
          auto s = f->session.lock();
          return s && s->same_netns && !f->migrating;
        })) {
      if (auto h = held_tcp_sockets(); h) {
        held = std::move(*h);
      } else {
        log_.warn("migrate: cannot check the flows against their sockets: " +
                  h.error().message());
      }
    }
    std::erase_if(sel, [&](FlowRec* f) {
      if (f->migrating) {
        return false;  // refused below
      }
      auto s = f->session.lock();
      std::string why;
      if (!s || !s->alive) {
        why = "its server is gone";
      } else if (held && s->same_netns && held->count(f->tuple.to_string()) == 0) {
        why = "closed (no process holds its socket)";
      } else {
        return false;
      }
      const std::string key = f->tuple.to_string();
      ended.push_back(key + ": " + why);
      if (s) {
        s->conns.erase(f->conn_id);
      }
      flows_.erase(key);
      return true;
    });
  }
  std::string service = sel.empty() ? req.str_or(Tag::service, "") : sel.front()->service;
  for (auto* f : sel) {
    if (f->migrating) {
      co_return fail_msg(f->tuple.to_string() + " is already migrating");
    }
    if (f->service != service) {
      co_return fail_msg("one batch moves flows of one service (" + service + " and " +
                         f->service + " selected)");
    }
  }
  if (!one_batch && !sel.empty()) {
    const FdRoom room = fd_room();
    if (room.flows == 0) {
      co_return fail_msg("no room for a batch under this agent's descriptor limit "
                         "(RLIMIT_NOFILE " + std::to_string(room.limit) + ", " +
                         std::to_string(room.open) + " open, 2 needed per connection); "
                         "raise the agent's limit");
    }
    if (sel.size() > room.flows) {
      std::vector<std::string> keys;
      for (auto* f : sel) {
        keys.push_back(f->tuple.to_string());
      }
      co_return co_await migrate_in_batches(ctl, *to, service, std::move(keys), std::move(ended));
    }
  }
  // Set when every selected flow ended before it could move: nothing is frozen or moved.
  bool empty_batch = sel.empty();
  std::size_t n = sel.size();
  std::vector<FourTuple> tuples;
  for (auto* f : sel) {
    f->migrating = true;
    tuples.push_back(f->tuple);
  }
  progress(ctl, "migration " + std::to_string(mig) + ": " + std::to_string(n) + " flow(s) of " +
                    service + " from " + cfg_.name + " to " + *to);

  // Channels first: a TLS handshake must not happen while traffic is frozen.
  std::unique_ptr<PeerConn> chan;
  std::unique_ptr<PeerConn> gw;
  std::string error;
  std::vector<ExportSlot> slots(n);
  std::vector<std::vector<std::byte>> encoded(n);
  std::vector<repair::RepairSocket> frozen(n);
  std::vector<bool> have_frozen(n, false);
  std::vector<bool> froze(n, false);
  std::uint64_t bytes_carried = 0;
  double frozen_ms = 0;
  Clock::time_point freeze_t0{};
  std::map<std::string, double> step_ms;
  std::uint64_t replayed_total = 0;  // packets the freeze dropped, shipped for replay on B
  bool steer_sent = false;
  // steer_msg asks the gateway to send every flow of this migration to |backend|.
  auto steer_msg = [&](const std::string& backend, MsgType type = MsgType::steer) {
    Message sr(type);
    sr.add_u64(Tag::mig, mig).add(Tag::backend, backend);
    for (const auto& t : tuples) {
      sr.add(Tag::tuple, t.to_string());
    }
    return sr;
  };
  std::string commit_warnings;
  auto step_deadline = [&] { return Clock::now() + ms(cfg_.step_timeout_ms); };

  fsm.on(MigEvent::start);
  // take_live: a pooled channel, checked with a HELLO round trip (a peer may have restarted),
  // else a fresh one.
  auto take_live = [&](const std::string& name) -> awaitable<Result<std::unique_ptr<PeerConn>>> {
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
  };
  do {
    if (empty_batch) {
      break;
    }
    auto c = co_await take_live(*to);
    if (!c) {
      error = c.error().message();
      break;
    }
    chan = std::move(*c);
    if (!cfg_.gateway.empty()) {
      auto g = co_await take_live(cfg_.gateway);
      if (!g) {
        error = g.error().message();
        break;
      }
      gw = std::move(*g);
      // Ask before anything is frozen whether the gateway can steer every flow to the target
      // (a VIP it steers, a backend it knows): a flow it cannot steer would be restored on the
      // target and then reset by this host.
      auto cr = co_await rpc(*gw, steer_msg(*to, MsgType::steer_check), step_deadline());
      if (!cr) {
        error = cr.error().message();
        break;
      }
      if (cr->type() != MsgType::steered) {
        error = error_of(*cr, "gateway " + cfg_.gateway + " cannot steer this batch").message();
        break;
      }
    }
    step_ms["connect"] = ms_since(t0);

    // 1. Export: each server stops using its connections and hands over fd + state.
    auto te = Clock::now();
    asio::steady_timer notify(io_);
    std::map<std::uint64_t, std::vector<std::uint64_t>> by_session;
    std::vector<std::shared_ptr<AppSession>> sess(n);
    for (std::size_t i = 0; i < n; ++i) {
      sess[i] = sel[i]->session.lock();
      if (sel[i]->ended) {  // untracked while the channels were set up
        slots[i].done = true;
        slots[i].ended = true;
        slots[i].error = sel[i]->ended_why;
        continue;
      }
      if (!sess[i] || !sess[i]->alive) {
        slots[i].done = true;
        slots[i].error = "the server's session closed";
        continue;
      }
      sess[i]->pending[sel[i]->conn_id] = &slots[i];
      sess[i]->export_notify = &notify;
      by_session[sess[i]->id].push_back(sel[i]->conn_id);
    }
    for (auto& [sid, ids] : by_session) {
      Message er(MsgType::export_request);
      er.add_u64(Tag::mig, mig);
      for (auto id : ids) {
        er.add_u64(Tag::conn_id, id);
      }
      auto s = sessions_.find(sid);
      if (s == sessions_.end() || !send_packet(s->second->sock->native_handle(), er).ok()) {
        error = "export request to the " + service + " server failed";
      }
    }
    const auto export_deadline = step_deadline();
    while (error.empty()) {
      bool all_done = std::all_of(slots.begin(), slots.end(), [](auto& s) { return s.done; });
      if (all_done || Clock::now() >= export_deadline) {
        break;
      }
      notify.expires_at(export_deadline);
      co_await notify.async_wait(as_tuple_aw);
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (sess[i]) {
        sess[i]->export_notify = nullptr;
        sess[i]->pending.erase(sel[i]->conn_id);
      }
    }
    // Connections that ended before or while they were exported leave the batch; the rest
    // moves on. A refusal counts as such when no process holds the socket any more (the
    // server had closed it without an untrack); any other refusal aborts the batch.
    if (std::any_of(slots.begin(), slots.end(), [](auto& sl) { return sl.refused; })) {
      auto held = held_tcp_sockets();
      for (std::size_t i = 0; held && i < n; ++i) {
        if (slots[i].refused && sess[i] && sess[i]->same_netns &&
            held->count(tuples[i].to_string()) == 0) {
          slots[i].ended = true;
          slots[i].error += "; no process holds its socket";
        }
      }
    }
    for (std::size_t i = 0; i < n; ++i) {
      if (slots[i].fd.valid() && socket_closed(slots[i].fd.get())) {
        slots[i].ended = true;
        slots[i].error = "closed (reset by the peer, or both sides closed it) before it moved";
      }
      if (slots[i].ended) {
        continue;
      }
      if (error.empty() && !slots[i].done) {
        error = "the " + service + " server did not export " + tuples[i].to_string() +
                " within " + std::to_string(cfg_.step_timeout_ms) + " ms";
      } else if (error.empty() && !slots[i].error.empty()) {
        error = tuples[i].to_string() + ": " + slots[i].error;
      }
    }
    std::size_t kept = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (!slots[i].ended) {
        if (kept != i) {
          sel[kept] = sel[i];
          tuples[kept] = tuples[i];
          slots[kept] = std::move(slots[i]);
        }
        ++kept;
        continue;
      }
      ended.push_back(tuples[i].to_string() + ": " + slots[i].error);
      if (sess[i] && sess[i]->alive) {
        if (slots[i].fd.valid()) {
          // The server gave it away already: the connection left it; the dead socket closes.
          (void)send_packet(sess[i]->sock->native_handle(),
                            Message(MsgType::export_done).add_u64(Tag::conn_id, sel[i]->conn_id));
        }
        sess[i]->conns.erase(sel[i]->conn_id);
      }
      if (auto f = flows_.find(tuples[i].to_string()); f != flows_.end() && &f->second == sel[i]) {
        flows_.erase(f);
      }
    }
    n = kept;
    sel.resize(n);
    tuples.resize(n);
    slots.resize(n);
    encoded.resize(n);
    frozen.resize(n);
    have_frozen.resize(n);
    froze.resize(n);
    fsm.on(MigEvent::exported);
    step_ms["export"] = ms_since(te);
    if (!error.empty()) {
      break;
    }
    if (n == 0) {
      empty_batch = true;
      break;
    }

    // 2. Freeze + checkpoint.
    freeze_t0 = Clock::now();
    for (std::size_t i = 0; i < n && error.empty(); ++i) {
      if (freezer_) {
        cancel_freeze(tuples[i]);
        if (auto fz = freezer_->freeze(tuples[i]); !fz) {
          error = "freeze " + tuples[i].to_string() + ": " + fz.error().message();
          break;
        }
        froze[i] = true;
      }
      auto cp = repairer_.checkpoint(slots[i].fd.get());
      if (!cp) {
        error = cp.error().message();
        break;
      }
      frozen[i] = std::move(cp->socket);
      have_frozen[i] = true;
      bytes_carried += cp->snapshot.send_queue.size() + cp->snapshot.recv_queue.size();
      encoded[i] = encode_snapshot(cp->snapshot);
      if (fault("tamper_snapshot")) {
        encoded[i][encoded[i].size() / 2] ^= std::byte{0x40};
      } else if (fault("truncate_snapshot")) {
        encoded[i].resize(encoded[i].size() - 7);
      }
    }
    step_ms["freeze_checkpoint"] = ms_since(freeze_t0);
    if (!error.empty()) {
      break;
    }
    fsm.on(MigEvent::checkpointed);

    // 3. Ship.
    auto ts = Clock::now();
    Message offer(MsgType::offer);
    offer.add_u64(Tag::mig, mig).add(Tag::service, service);
    for (std::size_t i = 0; i < n; ++i) {
      offer.add_u64(Tag::conn_id, sel[i]->conn_id);
      offer.add(Tag::snapshot, std::move(encoded[i]));
      offer.add(Tag::state, slots[i].state);
      offer.add_u64(Tag::peer_ack, peer_ack_hint(tuples[i]));
    }
    if (fault("cut_during_ship")) {
      auto bytes = offer.encode_framed();
      co_await asio::async_write(chan->stream, asio::buffer(bytes.data(), bytes.size() / 2),
                                 as_tuple_aw);
      asio::error_code ec;
      chan->stream.lowest_layer().close(ec);
      chan->broken = true;
      error = "channel to " + *to + " cut during ship (fault injection)";
      break;
    }
    auto w = co_await write_msg(*chan, offer, step_deadline());
    if (!w) {
      error = w.error().message();
      break;
    }
    fsm.on(MigEvent::shipped);
    step_ms["ship_write"] = ms_since(ts);
    auto rr = co_await read_msg(*chan, step_deadline());
    if (!rr) {
      error = rr.error().message();
      break;
    }
    if (rr->type() != MsgType::ready) {
      error = error_of(*rr, "agent " + *to + " refused the migration").message();
      break;
    }
    fsm.on(MigEvent::ready);
    step_ms["ship_restore"] = ms_since(ts);

    // 4. Steer.
    auto tst = Clock::now();
    if (gw) {
      steer_sent = true;
      auto g = co_await rpc(*gw, steer_msg(*to), step_deadline());
      if (!g) {
        error = g.error().message();
        break;
      }
      if (g->type() != MsgType::steered) {
        error = error_of(*g, "gateway " + cfg_.gateway + " refused to steer").message();
        break;
      }
    }
    fsm.on(MigEvent::steered);
    step_ms["steer"] = ms_since(tst);

    // 5. Commit. From here on A never thaws unless B says it did not commit.
    auto tc = Clock::now();
    Message commit(MsgType::commit);
    commit.add_u64(Tag::mig, mig);
    // What the peer acknowledged while frozen: lets B resend at once only what the peer lacks.
    std::size_t replayed = 0;
    for (std::size_t i = 0; i < tuples.size(); ++i) {
      commit.add_u64(Tag::peer_ack, peer_ack_hint(tuples[i]));
      if (!freezer_) {
        continue;
      }
      // What the peer sent into the freeze: B replays it instead of waiting for a retransmit.
      if (auto pk = freezer_->take_dropped(tuples[i]); pk) {
        for (const auto& p : *pk) {
          std::vector<std::byte> v(4 + p.size());
          const auto idx = static_cast<std::uint32_t>(i);
          v[0] = static_cast<std::byte>(idx >> 24);
          v[1] = static_cast<std::byte>(idx >> 16);
          v[2] = static_cast<std::byte>(idx >> 8);
          v[3] = static_cast<std::byte>(idx);
          std::memcpy(v.data() + 4, p.data(), p.size());
          commit.add(Tag::replay, std::move(v));
          ++replayed;
        }
      }
    }
    replayed_total = replayed;
    auto cw = co_await write_msg(*chan, commit, step_deadline());
    fsm.on(MigEvent::commit_sent);
    std::string commit_error;
    if (cw) {
      auto cr = co_await read_msg(*chan, step_deadline());
      if (cr && cr->type() == MsgType::committed) {
        auto adopted = cr->u64(Tag::adopted);
        if (!adopted || *adopted != n) {
          commit_warnings = "target activated " + (adopted ? std::to_string(*adopted) : "?") +
                            " of " + std::to_string(n) + " connections: " +
                            cr->str_or(Tag::text, "");
        }
        fsm.on(MigEvent::committed);
      } else if (cr) {
        // B answered but did not commit (e.g. it already self-aborted).
        commit_error = error_of(*cr, "commit").message();
        fsm.on(MigEvent::b_aborted);
      } else {
        commit_error = cr.error().message();
        fsm.on(MigEvent::failure);
      }
    } else {
      commit_error = cw.error().message();
      fsm.on(MigEvent::failure);
    }
    // Channel broke after COMMIT: ask B on fresh channels until it answers or time runs out.
    const auto resolve_deadline = Clock::now() + ms(cfg_.commit_resolve_ms);
    while (fsm.state() == MigState::committing && Clock::now() < resolve_deadline) {
      progress(ctl, "commit unconfirmed (" + commit_error + "); asking " + *to);
      auto q = co_await connect_peer(*to);
      if (q) {
        auto a = co_await rpc(**q, Message(MsgType::query).add_u64(Tag::mig, mig),
                              step_deadline());
        if (a && a->type() == MsgType::mig_state) {
          std::string st = a->str_or(Tag::text, "unknown");
          if (st == "committed") {
            fsm.on(MigEvent::committed);
          } else if (st == "aborted") {
            fsm.on(MigEvent::b_aborted);
          } else if (st == "unknown") {
            // B lost its memory (restart): its staged sockets died silently with it, or it had
            // committed. Never thaw here: presume commit (flagged indeterminate).
            fsm.on(MigEvent::b_unreachable);
          } else {
            // Still staged: the COMMIT never arrived; B will self-abort; tell it now.
            (void)co_await rpc(**q, Message(MsgType::abort).add_u64(Tag::mig, mig),
                               step_deadline());
            fsm.on(MigEvent::b_aborted);
          }
          break;
        }
      }
      asio::steady_timer backoff(io_, ms(200));
      co_await backoff.async_wait(as_tuple_aw);
    }
    if (fsm.state() == MigState::committing) {
      fsm.on(MigEvent::b_unreachable);  // presumed commit: never run two copies
    }
    step_ms["commit"] = ms_since(tc);
    if (fsm.state() == MigState::aborting) {
      error = commit_error.empty() ? "agent " + *to + " did not commit" : commit_error;
    }
  } while (false);

  if (fsm.state() == MigState::committed) {
    frozen_ms = ms_since(freeze_t0);
    for (std::size_t i = 0; i < n; ++i) {
      repairer_.release(std::move(frozen[i]));
      schedule_unfreeze(tuples[i]);
      if (auto s = sel[i]->session.lock(); s && s->alive) {
        (void)send_packet(s->sock->native_handle(),
                          Message(MsgType::export_done).add_u64(Tag::conn_id, sel[i]->conn_id));
        s->conns.erase(sel[i]->conn_id);
      }
      flows_.erase(tuples[i].to_string());
    }
    ++metrics_.migrations_committed;
    if (fsm.indeterminate()) {
      ++metrics_.migrations_indeterminate;
    }
    metrics_.flows_migrated_out += n;
    metrics_.frozen_ms_sum += frozen_ms;
    metrics_.frozen_ms_last = frozen_ms;
    metrics_.frozen_ms_max = std::max(metrics_.frozen_ms_max, frozen_ms);
    if (chan && !chan->broken) {
      give_back(std::move(chan));
    }
  } else if (empty_batch) {
    // Every flow ended before anything was frozen: nothing to move, nothing to undo.
    if (chan && !chan->broken) {
      give_back(std::move(chan));
    }
    if (gw && !gw->broken) {
      give_back(std::move(gw));
    }
  } else {
    // Abort: undo in the order the state machine prescribes.
    if (fsm.state() != MigState::aborting) {
      fsm.on(MigEvent::failure);
    }
    std::string undo_errors;
    std::vector<UndoAction> plan = abort_plan(fsm.failed_in());
    // A steer request that failed or went unanswered may have moved some flows already.
    if (steer_sent && std::find(plan.begin(), plan.end(), UndoAction::steer_back) == plan.end()) {
      plan.insert(plan.begin(), UndoAction::steer_back);
    }
    for (UndoAction a : plan) {
      switch (a) {
        case UndoAction::steer_back: {
          if (!gw || gw->broken) {
            auto g = co_await take_peer(cfg_.gateway);
            if (g) {
              gw = std::move(*g);
            }
          }
          // if/else, not ?: : GCC 12 miscompiles a conditional whose arm is a co_await
          // (the awaited temporaries were destroyed twice: the source agent crashed here).
          Result<Message> g = make_error(std::errc::not_connected, "no gateway");
          if (gw) {
            g = co_await rpc(*gw, steer_msg(cfg_.name), step_deadline());
          }
          if (!g || g->type() != MsgType::steered) {
            undo_errors += "steer back failed: " +
                           (g ? error_of(*g, "steer").message() : g.error().message()) + "; ";
          }
          break;
        }
        case UndoAction::tell_b_abort: {
          if (!chan || chan->broken) {
            auto c = co_await connect_peer(*to);
            if (c) {
              chan = std::move(*c);
            } else {
              break;  // B gone: its staged sockets closed silently with it / self-abort
            }
          }
          (void)co_await rpc(*chan, Message(MsgType::abort).add_u64(Tag::mig, mig).add(
                                        Tag::text, error),
                             step_deadline());
          break;
        }
        case UndoAction::thaw:
          for (std::size_t i = 0; i < n; ++i) {
            if (have_frozen[i]) {
              auto fd = repairer_.thaw(std::move(frozen[i]));
              if (!fd) {
                undo_errors += fd.error().message() + "; ";
              }
              // The exported fd is the same socket; the thawed duplicate is closed here.
            }
          }
          break;
        case UndoAction::unfreeze:
          for (std::size_t i = 0; i < n; ++i) {
            if (froze[i] && freezer_) {
              (void)freezer_->unfreeze(tuples[i]);
            }
          }
          break;
        case UndoAction::return_fds:
          for (std::size_t i = 0; i < n; ++i) {
            if (!slots[i].fd.valid()) {
              continue;
            }
            auto s = sel[i]->session.lock();
            if (s && s->alive) {
              Message rt(MsgType::returned);
              rt.add_u64(Tag::conn_id, sel[i]->conn_id).add(Tag::state, slots[i].state);
              if (!send_packet(s->sock->native_handle(), rt, slots[i].fd.get()).ok()) {
                undo_errors += "could not return " + tuples[i].to_string() + "; ";
              }
            } else {
              adopt_or_queue(service, Orphan{tuples[i], std::move(slots[i].fd),
                                             std::move(slots[i].state)});
            }
          }
          break;
      }
    }
    fsm.on(MigEvent::undone);
    for (std::size_t i = 0; i < n; ++i) {
      sel[i]->migrating = false;
      sel[i]->ended = false;
      // A flow whose server went away and whose fd no other server took is not served here.
      if (auto s = sel[i]->session.lock(); !s || !s->alive) {
        flows_.erase(tuples[i].to_string());
      }
    }
    ++metrics_.migrations_aborted;
    if (!undo_errors.empty()) {
      error += " (undo: " + undo_errors + ")";
    }
  }

  metrics_.flows_ended += ended.size();
  const char* result = fsm.state() == MigState::committed ? "committed"
                       : empty_batch                     ? "empty"
                                                         : "aborted";
  JsonWriter j;
  j.begin_object();
  j.kv("migration", mig);
  j.kv("result", result);
  j.kv("indeterminate", fsm.indeterminate());
  j.kv("from", cfg_.name);
  j.kv("to", *to);
  j.kv("service", service);
  j.kv("flows", static_cast<std::uint64_t>(n));
  j.kv("ended", static_cast<std::uint64_t>(ended.size()));
  j.begin_array("ended_flows");  // the first 100, "tuple: why"
  for (std::size_t i = 0; i < ended.size() && i < 100; ++i) {
    j.value(ended[i]);
  }
  j.end_array();
  j.kv("frozen_ms", frozen_ms);
  j.kv("total_ms", ms_since(t0));
  j.kv("bytes_carried", bytes_carried);
  j.kv("replayed_packets", replayed_total);
  j.begin_object("steps_ms");
  for (const auto& [k, v] : step_ms) {
    j.kv(k, v);
  }
  j.end_object();
  j.kv("failed_in", fsm.state() == MigState::committed || empty_batch
                        ? ""
                        : to_string(fsm.failed_in()));
  if (!error.empty()) {
    j.kv("error", error);
  }
  if (!commit_warnings.empty()) {
    j.kv("warnings", commit_warnings);
  }
  j.begin_array("trace");
  for (const auto& t : fsm.trace()) {
    j.value(t);
  }
  j.end_array();
  j.end_object();
  log_.info("migration " + std::to_string(mig) + ": " +
            (fsm.state() == MigState::committed || empty_batch ? std::string(result)
                                                               : "aborted: " + error) +
            (ended.empty() ? "" : " (" + std::to_string(ended.size()) + " ended before moving)"));
  recent_reports_.push_back(j.str());
  if (recent_reports_.size() > 16) {
    recent_reports_.erase(recent_reports_.begin());
  }
  co_return Message(MsgType::json).add(Tag::text, j.str());
}

awaitable<Message> Agent::migrate_in_batches(const std::shared_ptr<seqp::socket>& ctl,
                                             const std::string& to, const std::string& service,
                                             std::vector<std::string> keys,
                                             std::vector<std::string> ended) {
  const auto t0 = Clock::now();
  const FdRoom first = fd_room();
  progress(ctl, std::to_string(keys.size()) + " flows do not fit in one batch under RLIMIT_NOFILE " +
                    std::to_string(first.limit) + " (" + std::to_string(first.open) +
                    " open, 2 per flow): moving them in batches of at most " +
                    std::to_string(first.flows));
  std::vector<std::string> reports;
  std::size_t next = 0;
  std::uint64_t moved = 0;
  std::uint64_t ended_n = ended.size();
  std::uint64_t bytes = 0;
  std::uint64_t replayed = 0;
  std::uint64_t committed = 0;
  double frozen_max = 0;
  std::string error;
  std::string failed_in;
  while (next < keys.size()) {
    // Each batch is planned from what is open now: the last one's sockets are closed by then.
    const FdRoom room = fd_room();
    if (room.flows == 0) {
      error = "no room for a batch under RLIMIT_NOFILE " + std::to_string(room.limit) + " (" +
              std::to_string(room.open) + " open)";
      break;
    }
    const std::size_t take = std::min(room.flows, keys.size() - next);
    Message sub(MsgType::migrate);
    sub.add(Tag::to, to);
    for (std::size_t i = next; i < next + take; ++i) {
      sub.add(Tag::tuple, keys[i]);
    }
    next += take;
    Message r = co_await migrate(ctl, sub, true);
    if (r.type() != MsgType::json) {
      error = error_of(r, "batch").message();
      break;
    }
    std::string rep = r.str_or(Tag::text, "{}");
    ended_n += u64_of(json_scalar(rep, "ended"));
    const std::string res = json_scalar(rep, "result");
    if (res == "aborted") {
      error = json_scalar(rep, "error");
      failed_in = json_scalar(rep, "failed_in");
      reports.push_back(std::move(rep));
      break;
    }
    if (res == "committed") {
      ++committed;
      moved += u64_of(json_scalar(rep, "flows"));
      bytes += u64_of(json_scalar(rep, "bytes_carried"));
      replayed += u64_of(json_scalar(rep, "replayed_packets"));
      frozen_max = std::max(frozen_max, std::strtod(json_scalar(rep, "frozen_ms").c_str(), nullptr));
    }
    reports.push_back(std::move(rep));
  }
  // A failed batch stops the rest: the batches before it stay committed, its flows and the
  // later ones stay here.
  const char* result = !error.empty() ? (committed == 0 ? "aborted" : "partial")
                       : committed == 0 ? "empty"
                                        : "committed";
  JsonWriter j;
  j.begin_object();
  j.kv("result", result);
  j.kv("from", cfg_.name);
  j.kv("to", to);
  j.kv("service", service);
  j.kv("flows", moved);
  j.kv("ended", ended_n);
  j.begin_array("ended_flows");  // those found before the first batch; each batch lists its own
  for (std::size_t i = 0; i < ended.size() && i < 100; ++i) {
    j.value(ended[i]);
  }
  j.end_array();
  j.kv("frozen_ms", frozen_max);
  j.kv("total_ms", ms_since(t0));
  j.kv("bytes_carried", bytes);
  j.kv("replayed_packets", replayed);
  j.kv("fd_limit", first.limit);
  j.kv("batch_max_flows", static_cast<std::uint64_t>(first.flows));
  j.kv("batches_committed", committed);
  j.kv("batches_run", static_cast<std::uint64_t>(reports.size()));
  const std::uint64_t gone = moved + (ended_n - ended.size());  // ended inside the batches
  j.kv("not_moved", keys.size() > gone ? keys.size() - gone : 0);  // they stay here
  j.kv("failed_in", failed_in);
  if (!error.empty()) {
    j.kv("error", error);
  }
  j.begin_array("batches");
  for (const auto& r : reports) {
    j.raw({}, r);
  }
  j.end_array();
  j.end_object();
  log_.info(std::to_string(keys.size()) + " flows to " + to + " in " +
            std::to_string(reports.size()) + " batch(es): " + result);
  co_return Message(MsgType::json).add(Tag::text, j.str());
}

// ---------------------------------------------------------------------------------------------
// status

std::string Agent::status_json() {
  (void)reap_closed_flows();
  JsonWriter j;
  j.begin_object();
  j.kv("agent", cfg_.name);
  j.kv("kernel", kernel_release());
  j.kv("role", steerer_ ? "gateway" : "host");
  j.begin_object("capabilities");
  j.kv("tcp_repair", tcp_repair_ok_);
  j.kv("ebpf", freezer_ != nullptr || steerer_ != nullptr);
  j.end_object();
  j.kv("method", tcp_repair_ok_ && (freezer_ || cfg_.no_freeze) ? "native" : "unavailable");
  std::string why;
  if (!tcp_repair_ok_) {
    why = tcp_repair_error_;
  } else if (!freezer_ && !steerer_ && !cfg_.no_freeze) {
    why = "eBPF freeze unavailable: " + freeze_error_;
  } else {
    why = "TCP_REPAIR and eBPF freeze work here";
  }
  j.kv("reason", why);
  j.begin_array("peers");
  for (const auto& [name, addr] : cfg_.peers) {
    j.begin_object();
    j.kv("name", name);
    j.kv("address", addr);
    j.kv("gateway", name == cfg_.gateway);
    j.end_object();
  }
  j.end_array();
  j.begin_array("services");
  for (const auto& [id, s] : sessions_) {
    j.begin_object();
    j.kv("service", s->service);
    j.kv("session", id);
    j.kv("connections", static_cast<std::uint64_t>(s->conns.size()));
    j.end_object();
  }
  j.end_array();
  j.kv("flows", static_cast<std::uint64_t>(flows_.size()));
  j.kv("staged_migrations", static_cast<std::uint64_t>(staged_.size()));
  std::uint64_t held = 0;
  for (const auto& [s, q] : orphans_) {
    held += q.size();
  }
  j.kv("held_connections", held);
  j.begin_object("migrations");
  j.kv("committed", metrics_.migrations_committed);
  j.kv("aborted", metrics_.migrations_aborted);
  j.kv("indeterminate", metrics_.migrations_indeterminate);
  j.kv("flows_out", metrics_.flows_migrated_out);
  j.kv("flows_adopted", metrics_.flows_adopted);
  j.kv("last_frozen_ms", metrics_.frozen_ms_last);
  j.end_object();
  if (steerer_) {
    auto c = steerer_->counters();
    auto fl = steerer_->flows();
    j.begin_object("steering");
    j.kv("flows", static_cast<std::uint64_t>(fl ? fl->size() : 0));
    if (c) {
      j.kv("table", c->table);
      j.kv("pinned", c->pinned);
      j.kv("no_backend", c->no_backend);
    }
    j.end_object();
  }
  j.end_object();
  return j.str();
}

std::string Agent::flows_json() {
  (void)reap_closed_flows();
  JsonWriter j;
  j.begin_object();
  j.kv("agent", cfg_.name);
  j.begin_array("flows");
  for (const auto& [k, f] : flows_) {
    j.begin_object();
    j.kv("tuple", k);
    j.kv("service", f.service);
    j.kv("conn_id", f.conn_id);
    j.kv("state", f.migrating ? "migrating" : "serving");
    j.end_object();
  }
  for (const auto& [k, t] : grace_) {
    j.begin_object();
    j.kv("tuple", k);
    j.kv("state", "left (freeze grace)");
    if (freezer_) {
      if (auto fl = FourTuple::parse(k); fl) {
        if (auto c = freezer_->counters(*fl); c) {
          j.kv("dropped_in", c->ingress_packets);
          j.kv("dropped_out", c->egress_packets);
        }
      }
    }
    j.end_object();
  }
  j.end_array();
  j.end_object();
  return j.str();
}

std::string Agent::metrics_text() {
  std::string o;
  auto line = [&o, this](const std::string& name, const std::string& help, const char* type,
                         const std::string& labels, double v) {
    o += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    o += name + "{agent=\"" + cfg_.name + "\"" + labels + "} " + buf + "\n";
  };
  line("rendr_migrations_total", "Migrations that left this agent, by result.", "counter",
       ",result=\"committed\"", static_cast<double>(metrics_.migrations_committed));
  o += "rendr_migrations_total{agent=\"" + cfg_.name + "\",result=\"aborted\"} " +
       std::to_string(metrics_.migrations_aborted) + "\n";
  line("rendr_migrations_indeterminate_total",
       "Migrations committed by presumption (target unreachable after COMMIT).", "counter", "",
       static_cast<double>(metrics_.migrations_indeterminate));
  line("rendr_flows_migrated_out_total", "Connections moved away from this host.", "counter", "",
       static_cast<double>(metrics_.flows_migrated_out));
  line("rendr_flows_adopted_total", "Connections restored and adopted on this host.", "counter",
       "", static_cast<double>(metrics_.flows_adopted));
  line("rendr_restore_failures_total", "Restores that failed here.", "counter", "",
       static_cast<double>(metrics_.restores_failed));
  line("rendr_offers_rejected_total", "Migration offers rejected here.", "counter", "",
       static_cast<double>(metrics_.offers_rejected));
  line("rendr_peer_channels_refused_total", "Agent channels refused (TLS/identity).", "counter",
       "", static_cast<double>(metrics_.peers_refused));
  line("rendr_peer_requests_refused_total",
       "Requests a configured agent's role does not allow (docs/security.md).", "counter", "",
       static_cast<double>(metrics_.peer_requests_refused));
  line("rendr_migration_frozen_seconds_sum", "Sum of freeze-to-commit durations.", "counter", "",
       metrics_.frozen_ms_sum / 1000.0);
  line("rendr_migration_frozen_seconds_max", "Longest freeze-to-commit duration.", "gauge", "",
       metrics_.frozen_ms_max / 1000.0);
  line("rendr_flows_tracked", "Connections tracked for migration.", "gauge", "",
       static_cast<double>(flows_.size()));
  line("rendr_migration_flows_ended_total",
       "Flows dropped from a batch because they ended before they could move.", "counter", "",
       static_cast<double>(metrics_.flows_ended));
  line("rendr_flows_reaped_total",
       "Tracked flows forgotten because their server or socket was gone.", "counter", "",
       static_cast<double>(metrics_.flows_reaped));
  o += "# HELP rendr_flow_freeze_dropped_packets Packets dropped by the freeze per flow.\n"
       "# TYPE rendr_flow_freeze_dropped_packets gauge\n";
  if (freezer_) {
    for (const auto& [k, t] : grace_) {
      if (auto fl = FourTuple::parse(k); fl) {
        if (auto c = freezer_->counters(*fl); c) {
          o += "rendr_flow_freeze_dropped_packets{agent=\"" + cfg_.name + "\",flow=\"" + k +
               "\"} " + std::to_string(c->ingress_packets + c->egress_packets) + "\n";
        }
      }
    }
  }
  return o;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// entry points

int run_agent(const AgentConfig& cfg) {
  if (cfg.log_level == "debug") {
    set_log_level(LogLevel::debug);
  } else if (cfg.log_level == "warn") {
    set_log_level(LogLevel::warn);
  } else if (cfg.log_level == "error") {
    set_log_level(LogLevel::error);
  } else if (std::getenv("RENDR_LOG") == nullptr) {
    set_log_level(LogLevel::info);
  }
  // Batches move thousands of fds through the agent (SCM_RIGHTS in, repair, out).
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &rl);
  }
  asio::io_context io(1);
  Agent agent(io, cfg);
  if (auto s = agent.init(); !s) {
    std::fprintf(stderr, "rendr-agent: %s\n", s.error().message().c_str());
    return 1;
  }
  asio::signal_set sigs(io, SIGINT, SIGTERM);
  sigs.async_wait([&](asio::error_code, int) {
    agent.shutdown();
    io.stop();
  });
  asio::co_spawn(io, agent.control_acceptor(), asio::detached);
  if (!cfg.listen.empty()) {
    asio::co_spawn(io, agent.peer_acceptor(), asio::detached);
  }
  std::signal(SIGPIPE, SIG_IGN);
  // Readiness line for supervisors and tests.
  std::printf("rendr-agent %s ready\n", cfg.name.c_str());
  std::fflush(stdout);
  io.run();
  return 0;
}

}  // namespace rendr::agents
