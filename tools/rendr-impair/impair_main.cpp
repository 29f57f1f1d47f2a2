// SPDX-License-Identifier: Apache-2.0
// rendr-impair — a user-space delay/loss relay (this kernel has no netem). It listens on one
// address and forwards to another, holding every packet (udp) or chunk of bytes (tcp) for a
// fixed delay in each direction, with optional jitter and random loss for udp. Single thread,
// one poll() loop; queues are bounded (udp: packets, drop on overflow; tcp: bytes per direction,
// back-pressure by not reading). SIGINT/SIGTERM stop it cleanly (exit 0, stats on stderr).
// Optional --listen-netns/--forward-netns place the two sides in different named namespaces,
// so a relay can sit between two lab namespaces. See docs/impair.md.
#include "lab/lab_util.hpp"

#include <rendr/common/endpoint.hpp>
#include <rendr/common/unique_fd.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

using namespace rendr;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kUsage =
    "usage: rendr-impair udp --listen ADDR:PORT --forward ADDR:PORT [--delay-ms D] [--jitter-ms J]\n"
    "                        [--loss P] [--seed S] [--queue-packets N] [options]\n"
    "       rendr-impair tcp --listen ADDR:PORT --forward ADDR:PORT [--delay-ms D]\n"
    "                        [--queue-bytes N] [options]\n"
    "\n"
    "A user-space delay relay (the kernel here has no netem). Every packet (udp) or chunk of\n"
    "bytes (tcp) is held for D ms in EACH direction, so a round trip through the relay takes\n"
    "at least 2*D. Point the client at --listen; the relay talks to --forward.\n"
    "\n"
    "  --listen A:P        address to listen on (\"127.0.0.1:0\" picks a free port; IPv6 as\n"
    "                      \"[::1]:0\"). The first stdout line is \"listening A:P\" (the real port).\n"
    "  --forward A:P       where to relay to\n"
    "  --delay-ms D        one-way delay added in each direction (default 0, max 60000)\n"
    "  --jitter-ms J       udp: add uniform +-J ms per packet (never below 0 ms total); packets\n"
    "                      of one direction keep their order (no reordering)\n"
    "  --loss P            udp: drop P %% of packets at random in each direction (0..100,\n"
    "                      decimals allowed)\n"
    "  --seed S            udp: seed for loss and jitter (default: random)\n"
    "  --queue-packets N   udp: packets held at most (default 4096); more are dropped\n"
    "  --queue-bytes N     tcp: bytes held per direction and connection (default 4194304);\n"
    "                      beyond it the relay stops reading (TCP back-pressure)\n"
    "  --udp-idle-s N      udp: forget a client after N s without traffic (default 60)\n"
    "  --listen-netns NS   create the listening socket in named network namespace NS\n"
    "  --forward-netns NS  create the forwarding sockets in named network namespace NS\n"
    "\n"
    "SIGINT/SIGTERM: stop, print counters to stderr, exit 0. Exit 2 on usage errors, 1 on\n"
    "runtime errors.\n";

struct Options {
  bool udp = true;
  Endpoint listen;
  Endpoint forward;
  int delay_ms = 0;
  int jitter_ms = 0;
  double loss = 0;
  std::optional<std::uint64_t> seed;
  std::size_t queue_packets = 4096;
  std::size_t queue_bytes = 4u << 20;
  int udp_idle_s = 60;
  std::string listen_netns;
  std::string forward_netns;
};

struct Stats {
  std::uint64_t forwarded = 0;  // packets (udp) / bytes (tcp) delivered
  std::uint64_t lost = 0;       // udp: dropped by --loss
  std::uint64_t overflow = 0;   // udp: dropped because the queue was full
  std::uint64_t connections = 0;
  std::uint64_t errors = 0;
};

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "rendr-impair: %s\n", msg.c_str());
  std::exit(1);
}

// in_netns runs |make| with the calling thread in named namespace |ns| (empty: here).
template <typename F>
auto in_netns(const std::string& ns, F make) -> decltype(make()) {
  if (ns.empty()) {
    return make();
  }
  auto fd = lab::open_netns(ns);
  if (!fd) {
    return std::move(fd).take_error();
  }
  auto enter = lab::NetnsEnter::enter(fd->get());
  if (!enter) {
    return std::move(enter).take_error().with_context("enter namespace " + ns);
  }
  return make();
}

Result<UniqueFd> bound_socket(const Endpoint& ep, int type) {
  auto s = UniqueFd::socket(ep.af(), type | SOCK_NONBLOCK, 0);
  if (!s) {
    return s;
  }
  int one = 1;
  (void)::setsockopt(s->get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_storage ss{};
  socklen_t len = ep.to_sockaddr(ss);
  if (::bind(s->get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    return errno_error("bind " + ep.to_string());
  }
  if (type == SOCK_STREAM && ::listen(s->get(), 128) != 0) {
    return errno_error("listen " + ep.to_string());
  }
  return s;
}

Result<UniqueFd> connected_socket(const Endpoint& ep, int type) {
  auto s = UniqueFd::socket(ep.af(), type | SOCK_NONBLOCK, 0);
  if (!s) {
    return s;
  }
  sockaddr_storage ss{};
  socklen_t len = ep.to_sockaddr(ss);
  if (::connect(s->get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS) {
    return errno_error("connect " + ep.to_string());
  }
  if (type == SOCK_STREAM) {
    int one = 1;
    (void)::setsockopt(s->get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return s;
}

Endpoint local_of(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  (void)::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  auto ep = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
  return ep ? *ep : Endpoint{};
}

int ms_until(Clock::time_point due, Clock::time_point now) {
  if (due <= now) {
    return 0;
  }
  return static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(due - now).count());
}

// ---- udp -----------------------------------------------------------------------------------

struct UdpSession {
  UniqueFd up;  // connected to --forward
  sockaddr_storage client{};
  socklen_t client_len = 0;
  Clock::time_point last;
  Clock::time_point last_due_up;    // keeps each direction in order under jitter
  Clock::time_point last_due_down;
};

struct UdpPacket {
  Clock::time_point due;
  std::uint64_t session;
  bool upstream;  // true: client -> forward
  std::vector<std::byte> data;
};

class UdpRelay {
 public:
  UdpRelay(Options o, UniqueFd listen) : o_(std::move(o)), listen_(std::move(listen)) {
    rng_.seed(o_.seed ? *o_.seed : std::random_device{}());
  }

  void run(int stop_fd, Stats& st) {
    std::vector<std::byte> buf(65536);
    for (;;) {
      auto now = Clock::now();
      flush_due(now, st);
      expire(now);
      std::vector<pollfd> pfds;
      pfds.push_back({stop_fd, POLLIN, 0});
      pfds.push_back({listen_.get(), POLLIN, 0});
      std::vector<std::uint64_t> ids;
      for (auto& [id, s] : sessions_) {
        pfds.push_back({s.up.get(), POLLIN, 0});
        ids.push_back(id);
      }
      int timeout = queue_.empty() ? 1000 : ms_until(queue_.front().due, now);
      if (::poll(pfds.data(), pfds.size(), timeout) < 0 && errno != EINTR) {
        die(std::string("poll: ") + std::strerror(errno));
      }
      if ((pfds[0].revents & POLLIN) != 0) {
        return;
      }
      now = Clock::now();
      if ((pfds[1].revents & POLLIN) != 0) {
        for (int k = 0; k < 64; ++k) {  // drain a burst, then serve the others
          sockaddr_storage from{};
          socklen_t flen = sizeof from;
          ssize_t n = ::recvfrom(listen_.get(), buf.data(), buf.size(), 0,
                                 reinterpret_cast<sockaddr*>(&from), &flen);
          if (n < 0) {
            break;
          }
          std::uint64_t id = session_for(from, flen, now, st);
          if (id != 0) {
            enqueue(id, true, buf.data(), static_cast<std::size_t>(n), now, st);
          }
        }
      }
      for (std::size_t i = 2; i < pfds.size(); ++i) {
        if ((pfds[i].revents & (POLLIN | POLLERR)) == 0) {
          continue;
        }
        auto it = sessions_.find(ids[i - 2]);
        for (int k = 0; k < 64 && it != sessions_.end(); ++k) {
          ssize_t n = ::recv(it->second.up.get(), buf.data(), buf.size(), 0);
          if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
              ++st.errors;  // e.g. ECONNREFUSED from an ICMP: keep the session
            }
            break;
          }
          it->second.last = now;
          enqueue(it->first, false, buf.data(), static_cast<std::size_t>(n), now, st);
        }
      }
    }
  }

  [[nodiscard]] Endpoint local() const { return local_of(listen_.get()); }

 private:
  std::uint64_t session_for(const sockaddr_storage& from, socklen_t flen, Clock::time_point now,
                            Stats& st) {
    for (auto& [id, s] : sessions_) {
      if (s.client_len == flen && std::memcmp(&s.client, &from, flen) == 0) {
        s.last = now;
        return id;
      }
    }
    auto up = in_netns(o_.forward_netns, [&] { return connected_socket(o_.forward, SOCK_DGRAM); });
    if (!up) {
      std::fprintf(stderr, "rendr-impair: %s\n", up.error().message().c_str());
      ++st.errors;
      return 0;
    }
    UdpSession s;
    s.up = std::move(*up);
    s.client = from;
    s.client_len = flen;
    s.last = now;
    std::uint64_t id = ++next_id_;
    sessions_.emplace(id, std::move(s));
    ++st.connections;
    return id;
  }

  void enqueue(std::uint64_t id, bool upstream, const std::byte* p, std::size_t n,
               Clock::time_point now, Stats& st) {
    if (o_.loss > 0 && std::uniform_real_distribution<double>(0, 100)(rng_) < o_.loss) {
      ++st.lost;
      return;
    }
    if (queue_.size() >= o_.queue_packets) {
      ++st.overflow;
      return;
    }
    auto delay = std::chrono::milliseconds(o_.delay_ms);
    if (o_.jitter_ms > 0) {
      int j = std::uniform_int_distribution<int>(-o_.jitter_ms, o_.jitter_ms)(rng_);
      delay = std::max(std::chrono::milliseconds(0), delay + std::chrono::milliseconds(j));
    }
    auto& s = sessions_.at(id);
    auto& last = upstream ? s.last_due_up : s.last_due_down;
    auto due = std::max(now + delay, last);
    last = due;
    UdpPacket pkt{due, id, upstream, std::vector<std::byte>(p, p + n)};
    // Due times are non-decreasing per direction, but not across sessions/directions under
    // jitter: insert in order (the queue is short; a linear scan from the back is cheap).
    auto it = queue_.end();
    while (it != queue_.begin() && std::prev(it)->due > due) {
      --it;
    }
    queue_.insert(it, std::move(pkt));
  }

  void flush_due(Clock::time_point now, Stats& st) {
    while (!queue_.empty() && queue_.front().due <= now) {
      UdpPacket pkt = std::move(queue_.front());
      queue_.pop_front();
      auto it = sessions_.find(pkt.session);
      if (it == sessions_.end()) {
        continue;
      }
      ssize_t n = pkt.upstream
                      ? ::send(it->second.up.get(), pkt.data.data(), pkt.data.size(), 0)
                      : ::sendto(listen_.get(), pkt.data.data(), pkt.data.size(), 0,
                                 reinterpret_cast<const sockaddr*>(&it->second.client),
                                 it->second.client_len);
      if (n < 0) {
        ++st.errors;
      } else {
        ++st.forwarded;
      }
    }
  }

  void expire(Clock::time_point now) {
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if (now - it->second.last > std::chrono::seconds(o_.udp_idle_s)) {
        it = sessions_.erase(it);
      } else {
        ++it;
      }
    }
  }

  Options o_;
  UniqueFd listen_;
  std::map<std::uint64_t, UdpSession> sessions_;
  std::deque<UdpPacket> queue_;
  std::uint64_t next_id_ = 0;
  std::mt19937_64 rng_;
};

// ---- tcp -----------------------------------------------------------------------------------

struct Chunk {
  Clock::time_point due;
  std::vector<std::byte> data;
  std::size_t off = 0;
};

// One direction of a relayed connection: bytes read from |src| wait |delay| then go to |dst|.
struct Pipe {
  std::deque<Chunk> q;
  std::size_t bytes = 0;
  bool src_eof = false;
  bool dst_shut = false;
};

struct TcpConn {
  UniqueFd client;
  UniqueFd server;
  bool connected = false;  // upstream connect finished
  Pipe up;    // client -> server
  Pipe down;  // server -> client
  bool dead = false;
};

class TcpRelay {
 public:
  TcpRelay(Options o, UniqueFd listen) : o_(std::move(o)), listen_(std::move(listen)) {}

  void run(int stop_fd, Stats& st) {
    std::vector<std::byte> buf(65536);
    for (;;) {
      auto now = Clock::now();
      std::vector<pollfd> pfds;
      pfds.push_back({stop_fd, POLLIN, 0});
      pfds.push_back({listen_.get(), POLLIN, 0});
      Clock::time_point next = now + std::chrono::seconds(1);
      for (auto& c : conns_) {
        short cev = 0;
        short sev = 0;
        if (!c->up.src_eof && c->up.bytes < o_.queue_bytes) {
          cev |= POLLIN;
        }
        if (c->connected && !c->down.src_eof && c->down.bytes < o_.queue_bytes) {
          sev |= POLLIN;
        }
        if (!c->connected) {
          sev |= POLLOUT;
        }
        for (Pipe* p : {&c->up, &c->down}) {
          if (!p->q.empty()) {
            if (p->q.front().due <= now) {
              (p == &c->up ? sev : cev) |= POLLOUT;
            } else {
              next = std::min(next, p->q.front().due);
            }
          }
        }
        if (!c->connected && (c->up.q.empty() || c->up.q.front().due > now)) {
          sev |= POLLOUT;
        }
        // A negative fd makes poll() skip the entry: no POLLHUP spin while we only wait for a
        // chunk to become due.
        pfds.push_back({cev != 0 ? c->client.get() : -1, cev, 0});
        pfds.push_back({sev != 0 ? c->server.get() : -1, sev, 0});
      }
      if (::poll(pfds.data(), pfds.size(), ms_until(next, now)) < 0 && errno != EINTR) {
        die(std::string("poll: ") + std::strerror(errno));
      }
      if ((pfds[0].revents & POLLIN) != 0) {
        return;
      }
      now = Clock::now();
      if ((pfds[1].revents & POLLIN) != 0) {
        accept_all(st);
      }
      for (std::size_t i = 0; i + 2 < pfds.size() && i / 2 < conns_.size(); i += 2) {
        TcpConn& c = *conns_[i / 2];
        const pollfd& cp = pfds[i + 2];
        const pollfd& sp = pfds[i + 3];
        if (!c.connected && (sp.revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
          int err = 0;
          socklen_t len = sizeof err;
          (void)::getsockopt(c.server.get(), SOL_SOCKET, SO_ERROR, &err, &len);
          if (err != 0) {
            std::fprintf(stderr, "rendr-impair: connect %s: %s\n", o_.forward.to_string().c_str(),
                         std::strerror(err));
            ++st.errors;
            c.dead = true;
            continue;
          }
          c.connected = true;
        }
        if ((cp.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
          read_into(c.client.get(), c.up, buf, now, c);
        }
        if (c.connected && (sp.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
          read_into(c.server.get(), c.down, buf, now, c);
        }
      }
      for (auto& c : conns_) {
        if (c->connected && !c->dead) {
          write_due(c->server.get(), c->up, now, *c, st);
          write_due(c->client.get(), c->down, now, *c, st);
        }
        if (c->up.dst_shut && c->down.dst_shut) {
          c->dead = true;
        }
      }
      conns_.erase(std::remove_if(conns_.begin(), conns_.end(),
                                  [](const std::unique_ptr<TcpConn>& c) { return c->dead; }),
                   conns_.end());
    }
  }

  [[nodiscard]] Endpoint local() const { return local_of(listen_.get()); }

 private:
  void accept_all(Stats& st) {
    for (;;) {
      int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        return;
      }
      auto c = std::make_unique<TcpConn>();
      c->client.reset(fd);
      int one = 1;
      (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      auto up = in_netns(o_.forward_netns,
                         [&] { return connected_socket(o_.forward, SOCK_STREAM); });
      if (!up) {
        std::fprintf(stderr, "rendr-impair: %s\n", up.error().message().c_str());
        ++st.errors;
        continue;  // closes the client
      }
      c->server = std::move(*up);
      ++st.connections;
      conns_.push_back(std::move(c));
    }
  }

  void read_into(int fd, Pipe& p, std::vector<std::byte>& buf, Clock::time_point now,
                 TcpConn& c) {
    std::size_t room = o_.queue_bytes > p.bytes ? o_.queue_bytes - p.bytes : 0;
    if (room == 0 || p.src_eof) {
      return;
    }
    ssize_t n = ::recv(fd, buf.data(), std::min(room, buf.size()), 0);
    if (n > 0) {
      p.q.push_back({now + std::chrono::milliseconds(o_.delay_ms),
                     std::vector<std::byte>(buf.data(), buf.data() + n), 0});
      p.bytes += static_cast<std::size_t>(n);
    } else if (n == 0) {
      p.src_eof = true;  // forwarded as a FIN once the queue drains (write_due)
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      c.dead = true;  // reset: drop both sides (closing them tells each end)
    }
  }

  void write_due(int fd, Pipe& p, Clock::time_point now, TcpConn& c, Stats& st) {
    while (!p.q.empty() && p.q.front().due <= now) {
      Chunk& ch = p.q.front();
      ssize_t n = ::send(fd, ch.data.data() + ch.off, ch.data.size() - ch.off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          c.dead = true;
        }
        return;
      }
      ch.off += static_cast<std::size_t>(n);
      p.bytes -= static_cast<std::size_t>(n);
      st.forwarded += static_cast<std::uint64_t>(n);
      if (ch.off < ch.data.size()) {
        return;
      }
      p.q.pop_front();
    }
    if (p.q.empty() && p.src_eof && !p.dst_shut) {
      (void)::shutdown(fd, SHUT_WR);
      p.dst_shut = true;
    }
  }

  Options o_;
  UniqueFd listen_;
  std::vector<std::unique_ptr<TcpConn>> conns_;
};

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "rendr-impair: %s\n(rendr-impair --help for usage)\n", msg.c_str());
  return 2;
}

bool parse_int(const std::string& v, long lo, long hi, long& out) {
  char* end = nullptr;
  errno = 0;
  long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno != 0 || n < lo || n > hi) {
    return false;
  }
  out = n;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string mode = argv[1];
  if (mode == "-h" || mode == "--help" || mode == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (mode != "udp" && mode != "tcp") {
    return usage_error("first argument must be udp or tcp, not '" + mode + "'");
  }
  Options o;
  o.udp = mode == "udp";
  bool have_listen = false;
  bool have_forward = false;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      return usage_error(a.rfind("--", 0) == 0 ? a + " needs a value" : "unexpected '" + a + "'");
    }
    const std::string v = argv[++i];
    long n = 0;
    if (a == "--listen" || a == "--forward") {
      auto ep = Endpoint::parse(v);
      if (!ep) {
        return usage_error(a + ": " + ep.error().message() + " (e.g. 127.0.0.1:9000, [::1]:9000)");
      }
      (a == "--listen" ? o.listen : o.forward) = *ep;
      (a == "--listen" ? have_listen : have_forward) = true;
    } else if (a == "--delay-ms") {
      if (!parse_int(v, 0, 60000, n)) {
        return usage_error("--delay-ms takes 0..60000");
      }
      o.delay_ms = static_cast<int>(n);
    } else if (a == "--jitter-ms" && o.udp) {
      if (!parse_int(v, 0, 60000, n)) {
        return usage_error("--jitter-ms takes 0..60000");
      }
      o.jitter_ms = static_cast<int>(n);
    } else if (a == "--loss" && o.udp) {
      char* end = nullptr;
      double p = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(p >= 0 && p <= 100)) {
        return usage_error("--loss takes a percentage 0..100");
      }
      o.loss = p;
    } else if (a == "--seed" && o.udp) {
      char* end = nullptr;
      o.seed = std::strtoull(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0') {
        return usage_error("--seed takes a number");
      }
    } else if (a == "--queue-packets" && o.udp) {
      if (!parse_int(v, 1, 1 << 20, n)) {
        return usage_error("--queue-packets takes 1..1048576");
      }
      o.queue_packets = static_cast<std::size_t>(n);
    } else if (a == "--udp-idle-s" && o.udp) {
      if (!parse_int(v, 1, 86400, n)) {
        return usage_error("--udp-idle-s takes 1..86400");
      }
      o.udp_idle_s = static_cast<int>(n);
    } else if (a == "--queue-bytes" && !o.udp) {
      if (!parse_int(v, 65536, 1L << 30, n)) {
        return usage_error("--queue-bytes takes 65536..1073741824");
      }
      o.queue_bytes = static_cast<std::size_t>(n);
    } else if (a == "--listen-netns") {
      o.listen_netns = v;
    } else if (a == "--forward-netns") {
      o.forward_netns = v;
    } else {
      return usage_error("unknown option '" + a + "' for " + mode);
    }
  }
  if (!have_listen || !have_forward) {
    return usage_error("--listen and --forward are required");
  }

  // Signals arrive through a signalfd polled with the sockets: no async handler, clean exit.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  UniqueFd sfd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sfd.valid()) {
    die(std::string("signalfd: ") + std::strerror(errno));
  }
  ::signal(SIGPIPE, SIG_IGN);

  auto lfd = in_netns(o.listen_netns,
                      [&] { return bound_socket(o.listen, o.udp ? SOCK_DGRAM : SOCK_STREAM); });
  if (!lfd) {
    die(lfd.error().message());
  }
  Stats st;
  std::unique_ptr<UdpRelay> udp;
  std::unique_ptr<TcpRelay> tcp;
  Endpoint local;
  if (o.udp) {
    udp = std::make_unique<UdpRelay>(o, std::move(*lfd));
    local = udp->local();
  } else {
    tcp = std::make_unique<TcpRelay>(o, std::move(*lfd));
    local = tcp->local();
  }
  std::printf("listening %s\n", local.to_string().c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "rendr-impair: %s %s -> %s, delay %d ms", mode.c_str(),
               local.to_string().c_str(), o.forward.to_string().c_str(), o.delay_ms);
  if (o.udp) {
    std::fprintf(stderr, ", jitter %d ms, loss %g %%", o.jitter_ms, o.loss);
  }
  std::fprintf(stderr, "\n");
  if (udp) {
    udp->run(sfd.get(), st);
  } else {
    tcp->run(sfd.get(), st);
  }
  std::fprintf(stderr,
               "rendr-impair: stopped: forwarded %llu %s, lost %llu, overflow %llu, "
               "%s %llu, errors %llu\n",
               static_cast<unsigned long long>(st.forwarded), o.udp ? "packets" : "bytes",
               static_cast<unsigned long long>(st.lost),
               static_cast<unsigned long long>(st.overflow), o.udp ? "clients" : "connections",
               static_cast<unsigned long long>(st.connections),
               static_cast<unsigned long long>(st.errors));
  return 0;
}
