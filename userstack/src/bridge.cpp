// SPDX-License-Identifier: Apache-2.0
#include <rendr/userstack/bridge.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

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
  Bridge* raw = b.get();
  b->thread_ = std::thread([raw] { raw->run(); });
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

void Bridge::stop() {
  if (thread_.joinable()) {
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(stop_efd_.get(), &one, sizeof one);
    thread_.join();
  }
}

BridgeStats Bridge::stats() const {
  return BridgeStats{to_server_, from_server_, reset_, done_};
}

void Bridge::run() {
  std::vector<std::byte> in(buf_size_);   // lwIP -> server
  std::vector<std::byte> out(buf_size_);  // server -> lwIP
  std::size_t in_off = 0;
  std::size_t in_len = 0;
  std::size_t out_off = 0;
  std::size_t out_len = 0;
  bool in_eof = false;
  bool out_eof = false;
  bool in_shut = false;
  bool out_shut = false;
  for (;;) {
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
    pollfd pf[3] = {{mine_.get(), 0, 0}, {conn_->event_fd(), POLLIN, 0}, {stop_efd_.get(), POLLIN, 0}};
    if (in_len > 0) {
      pf[0].events |= POLLOUT;
    }
    if (out_len == 0 && !out_eof) {
      pf[0].events |= POLLIN;
    }
    ::poll(pf, 3, 1000);
    if ((pf[2].revents & POLLIN) != 0) {
      break;
    }
  }
  mine_.reset();  // the server sees EOF (or its writes fail) when the pump ends
}

}  // namespace rendr::userstack
