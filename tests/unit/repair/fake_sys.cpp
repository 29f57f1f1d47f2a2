// SPDX-License-Identifier: Apache-2.0
#include "fake_sys.hpp"

#include <rendr/common/endpoint.hpp>

#include <linux/sock_diag.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace rendr::repair::test {
namespace {

unsigned long inode_of(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    return 0;
  }
  return static_cast<unsigned long>(st.st_ino);
}

void store_addr(sockaddr_storage& ss, socklen_t& sl, const sockaddr* a, socklen_t len) {
  ss = {};
  std::memcpy(&ss, a, std::min<std::size_t>(len, sizeof ss));
  sl = len;
}

int copy_addr(const sockaddr_storage& ss, socklen_t sl, sockaddr* out, socklen_t* len) {
  std::memcpy(out, &ss, std::min<std::size_t>(sl, *len));
  *len = sl;
  return 0;
}

}  // namespace

const char* to_string(Op op) {
  switch (op) {
    case Op::socket: return "socket";
    case Op::close: return "close";
    case Op::setsockopt: return "setsockopt";
    case Op::getsockopt: return "getsockopt";
    case Op::ioctl: return "ioctl";
    case Op::recv: return "recv";
    case Op::send: return "send";
    case Op::sendto: return "sendto";
    case Op::bind: return "bind";
    case Op::connect: return "connect";
    case Op::shutdown: return "shutdown";
    case Op::getsockname: return "getsockname";
    case Op::getpeername: return "getpeername";
    case Op::get_fl: return "get_fl";
    case Op::set_fl: return "set_fl";
  }
  return "?";
}

std::string Call::describe() const {
  std::string s = std::string(to_string(op)) + "(fd=" + std::to_string(fd);
  if (op == Op::setsockopt || op == Op::getsockopt) {
    s += " level=" + std::to_string(level) + " name=" + std::to_string(name);
    if (op == Op::setsockopt && len == sizeof(int)) {
      s += " value=" + std::to_string(value);
    }
  } else if (op == Op::ioctl) {
    s += " request=" + std::to_string(name);
  }
  s += ") = " + std::to_string(result);
  if (result < 0) {
    s += " errno " + std::string(std::strerror(err));
  }
  return s;
}

FakeSys::~FakeSys() {
  for (int fd : created_read_ends_) {
    ::close(fd);
  }
}

int FakeSys::new_socket(FakeSocket model) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    throw std::runtime_error("FakeSys: pipe2 failed");
  }
  Entry e;
  e.read_end = p[0];
  e.sock = std::make_unique<FakeSocket>(std::move(model));
  const unsigned long ino = inode_of(p[1]);
  by_inode_[ino] = std::move(e);
  created_inodes_.push_back(ino);
  created_.push_back(p[1]);
  created_read_ends_.push_back(p[0]);
  return p[1];
}

int FakeSys::add_connected(const std::string& local, const std::string& remote) {
  auto l = Endpoint::parse(local);
  auto r = Endpoint::parse(remote);
  if (!l || !r) {
    throw std::runtime_error("FakeSys::add_connected: bad endpoint");
  }
  FakeSocket s;
  s.domain = l->af();
  s.local_len = l->to_sockaddr(s.local);
  s.remote_len = r->to_sockaddr(s.remote);
  s.connected = true;
  s.window = tcp_repair_window{100, 64000, 65535, 64000, 100};
  s.opts[{SOL_SOCKET, SO_SNDBUF}] = 16384;
  s.opts[{SOL_SOCKET, SO_RCVBUF}] = 131072;
  s.opts[{IPPROTO_IP, IP_TTL}] = 64;
  s.opts[{IPPROTO_IPV6, IPV6_UNICAST_HOPS}] = 64;
  int fd = new_socket(std::move(s));
  // add_connected is set-up, not a call under test.
  return fd;
}

FakeSocket* FakeSys::find(int fd) {
  auto it = by_inode_.find(inode_of(fd));
  return it == by_inode_.end() ? nullptr : it->second.sock.get();
}

FakeSocket& FakeSys::sock(int fd) {
  FakeSocket* s = find(fd);
  if (s == nullptr) {
    throw std::runtime_error("FakeSys::sock: unknown fd " + std::to_string(fd));
  }
  return *s;
}

FakeSocket& FakeSys::created_sock(std::size_t index) {
  return *by_inode_.at(created_inodes_.at(index)).sock;
}

bool FakeSys::closed(std::size_t index) const {
  pollfd p{created_read_ends_.at(index), POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLHUP) != 0;
}

bool FakeSys::is_open(int fd) const {
  return by_inode_.count(inode_of(fd)) != 0;
}

void FakeSys::fail_nth(std::size_t n, int err) { nth_[n] = err; }

void FakeSys::fail_if(std::function<bool(const Call&)> pred, int err, int times) {
  faults_.push_back(Fault{std::move(pred), err, times});
}

void FakeSys::clear_faults() {
  faults_.clear();
  nth_.clear();
}

int FakeSys::begin(Call c) {
  const std::size_t index = calls_.size();
  calls_.push_back(c);
  if (auto it = nth_.find(index); it != nth_.end()) {
    int err = it->second;
    nth_.erase(it);
    return err;
  }
  for (auto& f : faults_) {
    if (f.times != 0 && f.pred(c)) {
      if (f.times > 0) {
        --f.times;
      }
      return f.err;
    }
  }
  return 0;
}

int FakeSys::finish(int result, int err) {
  calls_.back().result = result;
  calls_.back().err = result < 0 ? err : 0;
  if (result < 0) {
    errno = err;
  }
  return result;
}

FakeSocket* FakeSys::tcp_target() {
  // The modelled TCP socket most recently created by socket() (restore's socket).
  for (auto it = created_.rbegin(); it != created_.rend(); ++it) {
    FakeSocket* s = find(*it);
    if (s != nullptr && !s->raw && is_open(*it)) {
      return s;
    }
  }
  return nullptr;
}

int FakeSys::socket(int domain, int type, int protocol) {
  if (int e = begin({Op::socket, -1, domain, type}); e != 0) {
    return finish(-1, e);
  }
  FakeSocket s;
  s.domain = domain;
  s.type = type & 0xF;
  s.protocol = protocol;
  s.raw = s.type == SOCK_RAW;
  s.fl = O_RDWR | ((type & SOCK_NONBLOCK) != 0 ? O_NONBLOCK : 0);
  s.state = TCP_CLOSE;
  s.opts = socket_defaults;
  s.congestion = default_congestion;
  int fd = new_socket(std::move(s));
  calls_.back().fd = fd;
  return finish(fd, 0);
}

int FakeSys::close(int fd) {
  if (int e = begin({Op::close, fd}); e != 0) {
    return finish(-1, e);
  }
  return finish(::close(fd), errno);
}

int FakeSys::setsockopt(int fd, int level, int name, const void* val, socklen_t len) {
  Call c{Op::setsockopt, fd, level, name};
  c.len = len;
  int v = 0;
  if (len == sizeof(int)) {
    std::memcpy(&v, val, sizeof v);
    c.value = v;
  }
  if (int e = begin(c); e != 0) {
    return finish(-1, e);
  }
  FakeSocket* s = find(fd);
  if (s == nullptr) {
    return finish(-1, EBADF);
  }
  if (level == IPPROTO_TCP) {
    switch (name) {
      case TCP_REPAIR:
        s->repair = v == TCP_REPAIR_ON;
        // As the kernel: sk_reuse is SK_FORCE_REUSE in repair mode and SK_NO_REUSE after it.
        s->opts[{SOL_SOCKET, SO_REUSEADDR}] = s->repair ? 2 : 0;
        return finish(0, 0);
      case TCP_REPAIR_QUEUE:
        if (!s->repair) {
          return finish(-1, EPERM);
        }
        s->queue = v;
        return finish(0, 0);
      case TCP_QUEUE_SEQ:
        if (!s->repair || s->connected) {
          return finish(-1, EPERM);
        }
        if (s->queue == TCP_RECV_QUEUE) {
          s->recv_seq = static_cast<std::uint32_t>(v);
        } else if (s->queue == TCP_SEND_QUEUE) {
          s->send_seq = static_cast<std::uint32_t>(v);
        } else {
          return finish(-1, EINVAL);
        }
        return finish(0, 0);
      case TCP_REPAIR_WINDOW:
        if (!s->window_supported) {
          return finish(-1, ENOPROTOOPT);
        }
        if (len != sizeof(tcp_repair_window)) {
          return finish(-1, EINVAL);
        }
        std::memcpy(&s->window, val, sizeof s->window);
        return finish(0, 0);
      case TCP_REPAIR_OPTIONS:
        return finish(s->repair ? 0 : -1, EPERM);
      case TCP_TIMESTAMP:
        s->timestamp = static_cast<std::uint32_t>(v);
        return finish(0, 0);
      case TCP_CONGESTION:
        s->congestion.assign(static_cast<const char*>(val), len);
        return finish(0, 0);
      default:
        break;
    }
  }
  if (level == SOL_SOCKET && name == SO_LINGER) {
    std::memcpy(&s->lingering, val, std::min<std::size_t>(len, sizeof s->lingering));
    return finish(0, 0);
  }
  s->opts[{level, name}] = v;
  return finish(0, 0);
}

int FakeSys::getsockopt(int fd, int level, int name, void* val, socklen_t* len) {
  if (int e = begin({Op::getsockopt, fd, level, name}); e != 0) {
    return finish(-1, e);
  }
  FakeSocket* s = find(fd);
  if (s == nullptr) {
    return finish(-1, EBADF);
  }
  auto put_int = [&](int v) {
    std::memcpy(val, &v, sizeof v);
    *len = sizeof v;
    return finish(0, 0);
  };
  if (level == SOL_SOCKET && name == SO_TYPE) {
    return put_int(s->type);
  }
  if (level == SOL_SOCKET && name == SO_PROTOCOL) {
    return put_int(s->protocol);
  }
  if (level == SOL_SOCKET && name == SO_LINGER) {
    std::memcpy(val, &s->lingering, sizeof s->lingering);
    *len = sizeof s->lingering;
    return finish(0, 0);
  }
  if (level == SOL_SOCKET && name == SO_NETNS_COOKIE && netns_cookie != 0) {
    std::memcpy(val, &netns_cookie, std::min<std::size_t>(*len, sizeof netns_cookie));
    *len = std::min<socklen_t>(*len, sizeof netns_cookie);
    return finish(0, 0);
  }
  if (level == SOL_SOCKET && name == SO_MEMINFO) {
    std::uint32_t mem[SK_MEMINFO_VARS] = {};
    auto opt = [&](int n) {
      auto it = s->opts.find({SOL_SOCKET, n});
      return it == s->opts.end() ? 0U : static_cast<std::uint32_t>(it->second);
    };
    mem[SK_MEMINFO_SNDBUF] = opt(SO_SNDBUF);
    mem[SK_MEMINFO_RCVBUF] = opt(SO_RCVBUF);
    std::memcpy(val, mem, std::min<std::size_t>(*len, sizeof mem));
    *len = std::min<socklen_t>(*len, sizeof mem);
    return finish(0, 0);
  }
  if (level == IPPROTO_TCP && (s->type != SOCK_STREAM || s->protocol != IPPROTO_TCP)) {
    return finish(-1, ENOPROTOOPT);  // as the kernel: SOL_TCP options exist only on TCP sockets
  }
  if (level == IPPROTO_TCP) {
    switch (name) {
      case TCP_INFO: {
        tcp_info ti{};
        ti.tcpi_state = s->state;
        ti.tcpi_options = s->tcpi_options;
        ti.tcpi_snd_wscale = s->snd_wscale & 0xF;
        ti.tcpi_rcv_wscale = s->rcv_wscale & 0xF;
        std::memcpy(val, &ti, std::min<std::size_t>(*len, sizeof ti));
        *len = std::min<socklen_t>(*len, sizeof ti);
        return finish(0, 0);
      }
      case TCP_QUEUE_SEQ:
        if (s->queue == TCP_RECV_QUEUE) {
          return put_int(static_cast<int>(s->recv_seq + s->recv_queue.size() +
                                          (s->peer_fin ? 1U : 0U)));
        }
        if (s->queue == TCP_SEND_QUEUE) {
          return put_int(static_cast<int>(s->send_seq + s->send_queue.size() +
                                          (s->our_fin ? 1U : 0U)));
        }
        return finish(-1, EINVAL);
      case TCP_MAXSEG:
        return put_int(static_cast<int>(s->mss));
      case TCP_TIMESTAMP:
        return put_int(static_cast<int>(s->timestamp));
      case TCP_REPAIR_WINDOW:
        if (!s->window_supported) {
          return finish(-1, ENOPROTOOPT);
        }
        std::memcpy(val, &s->window, sizeof s->window);
        *len = sizeof s->window;
        return finish(0, 0);
      case TCP_CONGESTION: {
        char buf[16] = {};
        std::memcpy(buf, s->congestion.data(), std::min<std::size_t>(s->congestion.size(), 15));
        std::memcpy(val, buf, std::min<std::size_t>(*len, sizeof buf));
        *len = std::min<socklen_t>(*len, sizeof buf);
        return finish(0, 0);
      }
      default:
        break;
    }
  }
  auto it = s->opts.find({level, name});
  return put_int(it == s->opts.end() ? 0 : it->second);
}

int FakeSys::ioctl_int(int fd, unsigned long request, int* out) {
  if (int e = begin({Op::ioctl, fd, 0, static_cast<int>(request)}); e != 0) {
    return finish(-1, e);
  }
  FakeSocket* s = find(fd);
  if (s == nullptr) {
    return finish(-1, EBADF);
  }
  switch (request) {
    case SIOCINQ:
      if (s->kernel_grows_recv_queue) {
        s->recv_queue.push_back(std::byte{0x42});
      }
      *out = static_cast<int>(s->recv_queue.size());
      return finish(0, 0);
    case SIOCOUTQ:
      *out = static_cast<int>(s->send_queue.size() + (s->our_fin && !s->our_fin_acked ? 1 : 0));
      return finish(0, 0);
    case SIOCOUTQNSD:
      *out = static_cast<int>(s->unsent + (s->our_fin && s->unsent > 0 ? 1 : 0));
      return finish(0, 0);
    default:
      return finish(-1, ENOTTY);
  }
}

ssize_t FakeSys::recv(int fd, void* buf, std::size_t len, int flags) {
  if (int e = begin({Op::recv, fd, 0, flags}); e != 0) {
    return finish(-1, e);
  }
  FakeSocket* s = find(fd);
  if (s == nullptr) {
    return finish(-1, EBADF);
  }
  if (!s->repair || (flags & MSG_PEEK) == 0) {
    return finish(-1, EINVAL);  // repair/ only ever peeks a selected queue
  }
  const auto& q = s->queue == TCP_SEND_QUEUE ? s->send_queue : s->recv_queue;
  if (q.empty()) {
    return finish(-1, EAGAIN);
  }
  const std::size_t n = std::min(len, q.size());
  std::memcpy(buf, q.data(), n);
  return finish(static_cast<int>(n), 0);
}

ssize_t FakeSys::send(int fd, const void* buf, std::size_t len, int flags) {
  Call c{Op::send, fd, 0, flags};
  c.len = len;
  if (int e = begin(c); e != 0) {
    return finish(-1, e);
  }
  FakeSocket* s = find(fd);
  if (s == nullptr) {
    return finish(-1, EBADF);
  }
  const auto* b = static_cast<const std::byte*>(buf);
  if (s->repair) {
    auto& q = s->queue == TCP_SEND_QUEUE ? s->send_queue : s->recv_queue;
    if (s->queue == TCP_NO_QUEUE) {
      return finish(-1, EINVAL);
    }
    q.insert(q.end(), b, b + len);
    return finish(static_cast<int>(len), 0);
  }
  s->live_sends += len;
  return finish(static_cast<int>(len), 0);
}

ssize_t FakeSys::sendto(int fd, const void* buf, std::size_t len, int flags, const sockaddr*,
                        socklen_t) {
  Call c{Op::sendto, fd, 0, flags};
  c.len = len;
  if (int e = begin(c); e != 0) {
    return finish(-1, e);
  }
  FakeSocket* s = find(fd);
  if (s == nullptr || !s->raw) {
    return finish(-1, EBADF);
  }
  // A forged segment for the restored socket: an IPv4 or IPv6 header, then TCP; FIN is bit 0 of
  // the flags byte (offset 13). A segment acknowledging our FIN (ack = write_seq) acks it.
  const auto* p = static_cast<const std::uint8_t*>(buf);
  raw_sent.emplace_back(static_cast<const std::byte*>(buf), static_cast<const std::byte*>(buf) + len);
  const std::size_t iph = len > 0 && (p[0] >> 4) == 4 ? 20 : 40;
  FakeSocket* t = len >= iph + 20 ? tcp_target() : nullptr;
  if (t != nullptr && (p[iph + 13] & 0x01U) != 0) {
    t->peer_fin = true;
  } else if (t != nullptr && t->our_fin) {
    const std::uint32_t ack = (std::uint32_t{p[iph + 8]} << 24) |
                              (std::uint32_t{p[iph + 9]} << 16) |
                              (std::uint32_t{p[iph + 10]} << 8) | std::uint32_t{p[iph + 11]};
    if (t->send_queue.empty() &&
        ack == t->send_seq + static_cast<std::uint32_t>(t->send_queue.size()) + 1) {
      t->our_fin_acked = true;
      t->state = TCP_FIN_WAIT2;
    }
  }
  return finish(static_cast<int>(len), 0);
}

int FakeSys::bind(int fd, const sockaddr* addr, socklen_t len) {
  if (int e = begin({Op::bind, fd}); e != 0) {
    return finish(-1, e);
  }
  FakeSocket* s = find(fd);
  if (s == nullptr) {
    return finish(-1, EBADF);
  }
  store_addr(s->local, s->local_len, addr, len);
  return finish(0, 0);
}

int FakeSys::connect(int fd, const sockaddr* addr, socklen_t len) {
  if (int e = begin({Op::connect, fd}); e != 0) {
    return finish(-1, e);
  }
  FakeSocket* s = find(fd);
  if (s == nullptr) {
    return finish(-1, EBADF);
  }
  if (!s->repair) {
    return finish(-1, EINPROGRESS);  // would send a SYN: not what restore does
  }
  store_addr(s->remote, s->remote_len, addr, len);
  s->connected = true;
  s->state = TCP_ESTABLISHED;
  return finish(0, 0);
}

int FakeSys::shutdown(int fd, int how) {
  if (int e = begin({Op::shutdown, fd, 0, how}); e != 0) {
    return finish(-1, e);
  }
  FakeSocket* s = find(fd);
  if (s == nullptr) {
    return finish(-1, EBADF);
  }
  s->our_fin = true;
  return finish(0, 0);
}

int FakeSys::getsockname(int fd, sockaddr* addr, socklen_t* len) {
  if (int e = begin({Op::getsockname, fd}); e != 0) {
    return finish(-1, e);
  }
  FakeSocket* s = find(fd);
  if (s == nullptr) {
    return finish(-1, EBADF);
  }
  return finish(copy_addr(s->local, s->local_len, addr, len), 0);
}

int FakeSys::getpeername(int fd, sockaddr* addr, socklen_t* len) {
  if (int e = begin({Op::getpeername, fd}); e != 0) {
    return finish(-1, e);
  }
  FakeSocket* s = find(fd);
  if (s == nullptr) {
    return finish(-1, EBADF);
  }
  if (!s->connected) {
    return finish(-1, ENOTCONN);
  }
  return finish(copy_addr(s->remote, s->remote_len, addr, len), 0);
}

int FakeSys::uname(struct utsname* out) {
  *out = {};
  std::snprintf(out->release, sizeof out->release, "%s", kernel_release.c_str());
  return 0;
}

int FakeSys::get_fl(int fd) {
  if (int e = begin({Op::get_fl, fd}); e != 0) {
    return finish(-1, e);
  }
  FakeSocket* s = find(fd);
  return s == nullptr ? finish(-1, EBADF) : finish(s->fl, 0);
}

int FakeSys::set_fl(int fd, int flags) {
  if (int e = begin({Op::set_fl, fd, 0, flags}); e != 0) {
    return finish(-1, e);
  }
  FakeSocket* s = find(fd);
  if (s == nullptr) {
    return finish(-1, EBADF);
  }
  s->fl = flags;
  return finish(0, 0);
}

}  // namespace rendr::repair::test
