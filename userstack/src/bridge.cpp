// SPDX-License-Identifier: Apache-2.0
#include <pthread.h>
#include <rendr/userstack/bridge.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

namespace rendr::userstack {

Result<std::unique_ptr<Bridge>> Bridge::start(ConnectionPtr conn, std::size_t buffer) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return errno_error("userstack bridge: socketpair");
  }
  UniqueFd mine(sv[0]);
  UniqueFd server(sv[1]);
  if (::fcntl(mine.get(), F_SETFL, O_NONBLOCK) != 0) {
    return errno_error("userstack bridge: O_NONBLOCK");
  }
  // Socket buffers sized like the pump's own, so the bytes "in the pipe" stay bounded.
  int sz = static_cast<int>(buffer);
  ::setsockopt(mine.get(), SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
  ::setsockopt(mine.get(), SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
  UniqueFd stop(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!stop) {
    return errno_error("userstack bridge: eventfd");
  }
  std::unique_ptr<Bridge> b(
      new Bridge(std::move(conn), std::move(mine), std::move(server), std::move(stop), buffer));
  b->in_.resize(buffer);
  b->out_.resize(buffer);
  b->start_thread();
  return b;
}

Bridge::Bridge(ConnectionPtr conn, UniqueFd mine, UniqueFd server, UniqueFd stop_efd,
               std::size_t buf)
    : conn_(std::move(conn)),
      tuple_(conn_->tuple()),
      mine_(std::move(mine)),
      server_fd_(std::move(server)),
      stop_efd_(std::move(stop_efd)),
      buf_size_(buf) {}

Bridge::~Bridge() {
  stop();
  conn_.reset();
}

void Bridge::wait() {
  if (thread_.joinable()) {
    thread_.join();
  }
}

void Bridge::stop() {
  if (thread_.joinable()) {
    stop_req_ = true;
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(stop_efd_.get(), &one, sizeof one);
    thread_.join();
  }
}

BridgeStats Bridge::stats() const { return BridgeStats{to_server_, from_server_, reset_, done_}; }

std::optional<ConnectionInfo> Bridge::info() const {
  if (!conn_) {
    return std::nullopt;
  }
  return conn_->info();
}

void Bridge::start_thread() {
  thread_ = std::thread([this] {
    (void)::pthread_setname_np(::pthread_self(), "us-bridge");  // per-thread CPU reports
    run();
  });
}

Result<std::unique_ptr<Bridge>> Bridge::resume(BridgeState st, std::size_t buffer) {
  if (!st.conn || !st.pump_end) {
    return make_error(std::errc::invalid_argument,
                      "userstack bridge: resume needs a connection and the pump end");
  }
  UniqueFd stop(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!stop) {
    return errno_error("userstack bridge: eventfd");
  }
  buffer = std::max({buffer, st.to_server.size(), st.from_server.size()});
  std::unique_ptr<Bridge> b(
      new Bridge(std::move(st.conn), std::move(st.pump_end), UniqueFd(), std::move(stop), buffer));
  b->in_.resize(buffer);
  b->out_.resize(buffer);
  std::copy(st.to_server.begin(), st.to_server.end(), b->in_.begin());
  b->in_len_ = st.to_server.size();
  std::copy(st.from_server.begin(), st.from_server.end(), b->out_.begin());
  b->out_len_ = st.from_server.size();
  b->in_eof_ = st.peer_eof;
  b->in_shut_ = st.server_told_eof;
  b->out_eof_ = st.server_eof;
  b->out_shut_ = st.conn_shut;
  b->start_thread();
  return b;
}

Result<BridgeState> Bridge::detach() {
  if (!conn_) {
    return make_error(std::errc::connection_already_in_progress,
                      "userstack bridge: already detached");
  }
  stop();
  BridgeState st;
  st.conn = std::move(conn_);
  st.pump_end = std::move(mine_);
  st.to_server.assign(in_.begin() + static_cast<std::ptrdiff_t>(in_off_),
                      in_.begin() + static_cast<std::ptrdiff_t>(in_off_ + in_len_));
  st.from_server.assign(out_.begin() + static_cast<std::ptrdiff_t>(out_off_),
                        out_.begin() + static_cast<std::ptrdiff_t>(out_off_ + out_len_));
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

void Bridge::run() {
  Buffer& in = in_;
  Buffer& out = out_;
  std::size_t& in_off = in_off_;
  std::size_t& in_len = in_len_;
  std::size_t& out_off = out_off_;
  std::size_t& out_len = out_len_;
  bool& in_eof = in_eof_;
  bool& out_eof = out_eof_;
  bool& in_shut = in_shut_;
  bool& out_shut = out_shut_;
  bool stopped = false;
  for (;;) {
    if (stop_req_) {
      stopped = true;
      break;
    }
    bool progress = false;
    conn_->clear_event();
    // lwIP -> server
    if (in_len == 0 && !in_eof) {
      auto r = conn_->read(in);
      if (r) {
        if (*r == 0) {
          in_eof = true;
        } else {
          in_off = 0;
          in_len = *r;
          progress = true;
        }
      } else if (r.error().code != std::errc::resource_unavailable_try_again) {
        reset_ = true;
        break;
      }
    }
    if (in_len > 0) {
      ssize_t n = ::send(mine_.get(), in.data() + in_off, in_len, MSG_NOSIGNAL);
      if (n > 0) {
        in_off += static_cast<std::size_t>(n);
        in_len -= static_cast<std::size_t>(n);
        to_server_ += static_cast<std::uint64_t>(n);
        progress = true;
      } else if (n < 0 && errno != EAGAIN) {
        break;  // server closed its end
      }
    }
    if (in_eof && in_len == 0 && !in_shut) {
      ::shutdown(mine_.get(), SHUT_WR);
      in_shut = true;
    }
    // server -> lwIP
    if (out_len == 0 && !out_eof) {
      ssize_t n = ::recv(mine_.get(), out.data(), out.size(), 0);
      if (n > 0) {
        out_off = 0;
        out_len = static_cast<std::size_t>(n);
        progress = true;
      } else if (n == 0) {
        out_eof = true;
      } else if (errno != EAGAIN) {
        out_eof = true;
      }
    }
    if (out_len > 0) {
      auto r = conn_->write(std::span<const std::byte>(out.data() + out_off, out_len));
      if (r) {
        out_off += *r;
        out_len -= *r;
        from_server_ += *r;
        progress = progress || *r > 0;
      } else if (r.error().code != std::errc::resource_unavailable_try_again) {
        reset_ = true;
        break;
      }
    }
    if (out_eof && out_len == 0 && !out_shut) {
      if (!conn_->shutdown_write()) {
        reset_ = true;
        break;
      }
      out_shut = true;
    }
    if (in_shut && out_shut) {
      done_ = true;
      break;
    }
    if (progress) {
      continue;
    }
    pollfd pf[3] = {
        {mine_.get(), 0, 0}, {conn_->event_fd(), POLLIN, 0}, {stop_efd_.get(), POLLIN, 0}};
    if (in_len > 0) {
      pf[0].events |= POLLOUT;
    }
    if (out_len == 0 && !out_eof) {
      pf[0].events |= POLLIN;
    }
    ::poll(pf, 3, 1000);
    if ((pf[2].revents & POLLIN) != 0) {
      stopped = true;
      break;
    }
  }
  // The pump end stays open when stopped (detach() may hand it on); when the pump finished
  // or failed, close it so the server sees EOF (or its writes fail).
  if (stopped) {
    return;
  }
  mine_.reset();
}

}  // namespace rendr::userstack
