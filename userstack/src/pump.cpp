// SPDX-License-Identifier: Apache-2.0
#include <rendr/userstack/pump.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace rendr::userstack {

namespace {

// The pool of free default-size buffers (Pump::Buffer); bounded (16 kept, 4 MiB), so a burst
// of ended flows still gives its memory back.
BlockPool& pump_pool() {
  // Never destroyed: pumps may outlive statics.
  static auto* pool = new BlockPool(kPumpBuffer, 16);
  return *pool;
}

}  // namespace

Pump::Buffer::Buffer(std::size_t n) : n_(n) {
  if (n == kPumpBuffer) {
    block_ = pump_pool().take();
    p_ = block_.data();
  } else {
    other_.reset(new std::byte[n]);
    p_ = other_.get();
  }
}

Pump::Buffer::~Buffer() = default;

Result<std::unique_ptr<Pump>> Pump::start(ConnectionPtr conn, std::size_t buffer) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return errno_error("userstack pump: socketpair");
  }
  UniqueFd mine(sv[0]);
  UniqueFd server(sv[1]);
  if (::fcntl(mine.get(), F_SETFL, O_NONBLOCK) != 0) {
    return errno_error("userstack pump: O_NONBLOCK");
  }
  // Socket buffers sized like the pump's own, so the bytes "in the pipe" stay bounded.
  int sz = static_cast<int>(buffer);
  ::setsockopt(mine.get(), SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
  ::setsockopt(mine.get(), SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  std::unique_ptr<Pump> p(new Pump(std::move(conn), std::move(mine), std::move(server), buffer));
  return p;
}

Result<std::unique_ptr<Pump>> Pump::resume(BridgeState st, std::size_t buffer) {
  if (!st.conn || !st.pump_end) {
    return make_error(std::errc::invalid_argument,
                      "userstack pump: resume needs a connection and the pump end");
  }
  buffer = std::max({buffer, st.to_server.size(), st.from_server.size()});
  std::unique_ptr<Pump> p(
      new Pump(std::move(st.conn), std::move(st.pump_end), UniqueFd(), buffer));
  std::copy(st.to_server.begin(), st.to_server.end(), p->in_.data());
  p->in_len_ = st.to_server.size();
  std::copy(st.from_server.begin(), st.from_server.end(), p->out_.data());
  p->out_len_ = st.from_server.size();
  p->in_eof_ = st.peer_eof;
  p->in_shut_ = st.server_told_eof;
  p->out_eof_ = st.server_eof;
  p->out_shut_ = st.conn_shut;
  return p;
}

Pump::Pump(ConnectionPtr conn, UniqueFd mine, UniqueFd server, std::size_t buf)
    : in_(buf),
      out_(buf),
      conn_(std::move(conn)),
      tuple_(conn_->tuple()),
      mine_(std::move(mine)),
      server_fd_(std::move(server)) {}

Pump::~Pump() = default;

int Pump::event_fd() const { return conn_ ? conn_->event_fd() : -1; }

short Pump::wants() const {
  short ev = 0;
  if (in_len_ > 0) {
    ev |= POLLOUT;
  }
  if (out_len_ == 0 && !out_eof_) {
    ev |= POLLIN;
  }
  return ev;
}

BridgeStats Pump::stats() const { return BridgeStats{to_server_, from_server_, reset_, done_}; }

std::optional<ConnectionInfo> Pump::info() const {
  if (!conn_) {
    return std::nullopt;
  }
  return conn_->info();
}

Result<BridgeState> Pump::detach() {
  if (!conn_) {
    return make_error(std::errc::connection_already_in_progress,
                      "userstack pump: already detached");
  }
  BridgeState st;
  st.conn = std::move(conn_);
  st.pump_end = std::move(mine_);
  st.to_server.assign(in_.data() + in_off_, in_.data() + in_off_ + in_len_);
  st.from_server.assign(out_.data() + out_off_, out_.data() + out_off_ + out_len_);
  st.peer_eof = in_eof_;
  st.server_told_eof = in_shut_;
  st.server_eof = out_eof_;
  st.conn_shut = out_shut_;
  return st;
}

void account_bridge(TcpSnapshot& snap, BridgeState& st) {
  if (!st.to_server.empty()) {
    snap.recv_queue.insert(snap.recv_queue.begin(), st.to_server.begin(), st.to_server.end());
    snap.recv_seq -= static_cast<std::uint32_t>(st.to_server.size());
    st.to_server.clear();
  }
  if (!st.from_server.empty()) {
    snap.send_queue.insert(snap.send_queue.end(), st.from_server.begin(), st.from_server.end());
    snap.send_unsent += static_cast<std::uint32_t>(st.from_server.size());
    st.from_server.clear();
  }
}

Pump::State Pump::step() {
  more_ = false;
  if (state_ != State::running || !conn_ || !mine_) {
    return state_;
  }
  for (int round = 0;; ++round) {
    if (round == kRounds) {
      more_ = true;  // a busy flow yields: its owner steps it again before it waits
      return state_;
    }
    bool progress = false;
    conn_->clear_event();
    // lwIP -> server
    if (in_len_ == 0 && !in_eof_) {
      auto r = conn_->read(std::span<std::byte>(in_.data(), in_.size()));
      if (r) {
        if (*r == 0) {
          in_eof_ = true;
        } else {
          in_off_ = 0;
          in_len_ = *r;
          progress = true;
        }
      } else if (r.error().code != std::errc::resource_unavailable_try_again) {
        reset_ = true;
        return state_ = State::reset;
      }
    }
    if (in_len_ > 0) {
      const ssize_t n = ::send(mine_.get(), in_.data() + in_off_, in_len_, MSG_NOSIGNAL);
      if (n > 0) {
        in_off_ += static_cast<std::size_t>(n);
        in_len_ -= static_cast<std::size_t>(n);
        to_server_ += static_cast<std::uint64_t>(n);
        progress = true;
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        // The bytes held here were never read by anyone: reset the connection, as a kernel
        // socket closed with unread input does. A graceful close would leave lwIP taking and
        // dropping whatever the client sends next (its PCB has no receiver any more) whenever
        // the pump happened to have drained lwIP's queue - the client never learnt.
        conn_->abort();
        return state_ = State::server_gone;
      }
    }
    if (in_eof_ && in_len_ == 0 && !in_shut_) {
      ::shutdown(mine_.get(), SHUT_WR);
      in_shut_ = true;
    }
    // server -> lwIP
    if (out_len_ == 0 && !out_eof_) {
      const ssize_t n = ::recv(mine_.get(), out_.data(), out_.size(), 0);
      if (n > 0) {
        out_off_ = 0;
        out_len_ = static_cast<std::size_t>(n);
        progress = true;
      } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        out_eof_ = true;
      }
    }
    if (out_len_ > 0) {
      auto r = conn_->write(std::span<const std::byte>(out_.data() + out_off_, out_len_));
      if (r) {
        out_off_ += *r;
        out_len_ -= *r;
        from_server_ += *r;
        progress = progress || *r > 0;
      } else if (r.error().code != std::errc::resource_unavailable_try_again) {
        reset_ = true;
        return state_ = State::reset;
      }
    }
    if (out_eof_ && out_len_ == 0 && !out_shut_) {
      if (!conn_->shutdown_write()) {
        reset_ = true;
        return state_ = State::reset;
      }
      out_shut_ = true;
    }
    if (in_shut_ && out_shut_) {
      done_ = true;
      return state_ = State::done;
    }
    if (!progress) {
      return state_;
    }
  }
}

// --- PumpSet

Result<PumpSet> PumpSet::create() {
  UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  if (!ep) {
    return errno_error("userstack pump set: epoll_create1");
  }
  UniqueFd again(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!again) {
    return errno_error("userstack pump set: eventfd");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;  // level-triggered: readable until run() clears it
  ev.data.ptr = nullptr;
  if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, again.get(), &ev) != 0) {
    return errno_error("userstack pump set: epoll_ctl");
  }
  return PumpSet(std::move(ep), std::move(again));
}

void PumpSet::step(Pump& p, std::vector<Pump*>& stopped) {
  if (p.step() != Pump::State::running) {
    if (std::find(stopped.begin(), stopped.end(), &p) == stopped.end()) {
      stopped.push_back(&p);
    }
  } else if (p.more() && std::find(more_.begin(), more_.end(), &p) == more_.end()) {
    more_.push_back(&p);
  }
}

Status PumpSet::add(Pump& p) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = &p;
  if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, p.pump_fd(), &ev) != 0) {
    return errno_error("userstack pump set: add the pump end");
  }
  ev.events = EPOLLIN | EPOLLET;
  if (::epoll_ctl(ep_.get(), EPOLL_CTL_ADD, p.event_fd(), &ev) != 0) {
    const Error e = errno_error("userstack pump set: add the connection's event fd");
    ::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, p.pump_fd(), nullptr);
    return e;
  }
  ++count_;
  // Edges that came before the registration are not reported: step once now (the caller
  // checks p.state() after add: a pump may stop right here).
  if (p.step() == Pump::State::running && p.more()) {
    more_.push_back(&p);
    wake();
  }
  return {};
}

void PumpSet::remove(Pump& p) {
  const bool a = p.pump_fd() >= 0 && ::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, p.pump_fd(), nullptr) == 0;
  const bool b =
      p.event_fd() >= 0 && ::epoll_ctl(ep_.get(), EPOLL_CTL_DEL, p.event_fd(), nullptr) == 0;
  if ((a || b) && count_ > 0) {
    --count_;
  }
  more_.erase(std::remove(more_.begin(), more_.end(), &p), more_.end());
}

void PumpSet::wake() {
  const std::uint64_t one = 1;
  (void)!::write(again_.get(), &one, sizeof one);
}

std::vector<Pump*> PumpSet::run() {
  std::vector<Pump*> stopped;
  std::uint64_t v = 0;
  (void)!::read(again_.get(), &v, sizeof v);
  // Pumps that yielded with work left first: no edge will come for what they left.
  std::vector<Pump*> again;
  again.swap(more_);
  for (Pump* p : again) {
    step(*p, stopped);
  }
  epoll_event evs[64];
  // Bounded: at most this many batches per call, so the owner's other fds get their turn.
  for (int batch = 0; batch < 16; ++batch) {
    const int n = ::epoll_wait(ep_.get(), evs, 64, 0);
    if (n <= 0) {
      break;
    }
    for (int i = 0; i < n; ++i) {
      if (auto* p = static_cast<Pump*>(evs[i].data.ptr); p != nullptr) {
        step(*p, stopped);
      }
    }
    if (n < 64) {
      break;
    }
  }
  if (!more_.empty()) {
    wake();  // fd() stays readable: the owner calls run() again before it sleeps
  }
  return stopped;
}

}  // namespace rendr::userstack
