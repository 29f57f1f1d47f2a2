// SPDX-License-Identifier: Apache-2.0
// The tcp carrier: frames with the u16 length prefix over a TCP socket (TCP_NODELAY on,
// keepalive off). The carrier's own handlers co-own the socket, so a handler completing after
// close() never touches a destroyed object.
#include "carriers.hpp"

#include <rendr/common/endpoint.hpp>
#include <rendr/common/unique_fd.hpp>

#include <asio/read.hpp>
#include <asio/write.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace rendr {

namespace detail {

namespace {

// The socket and what its handlers share: the carrier may be gone when they run.
struct TcpState {
  explicit TcpState(asio::ip::tcp::socket s) : sock(std::move(s)) {}
  asio::ip::tcp::socket sock;
  int fd = -1;                 // the socket, also while out of asio's reactor
  bool released = false;       // out of the reactor (direct receive)
  bool watch_input = true;     // set_input_watch
  int asio_writes = 0;         // writes asio has in flight
  asio::ip::tcp protocol = asio::ip::tcp::v4();

  // unwatch takes the socket out of asio's reactor when nothing of asio's is pending: its
  // registration is edge-triggered EPOLLIN, which would wake the io thread for every segment
  // the reader receives itself.
  void unwatch() {
    if (released || fd < 0 || watch_input || asio_writes > 0) {
      return;
    }
    std::error_code ec;
    const int got = sock.release(ec);
    if (!ec && got == fd) {
      released = true;
    }
  }
  void rewatch() {
    if (!released) {
      return;
    }
    released = false;
    std::error_code ec;
    sock.assign(protocol, fd, ec);
    if (ec) {
      ::close(fd);  // no way back into the reactor: the path fails on its next operation
      fd = -1;
    }
  }
};

class TcpCarrier final : public StreamCarrier {
 public:
  explicit TcpCarrier(asio::ip::tcp::socket sock)
      : st_(std::make_shared<TcpState>(std::move(sock))) {
    // Keepalive is off as every socket starts (and the engine's listener never turns it on,
    // so accepted ones inherit off): no setsockopt for it. One getsockname serves the address
    // family and the local address (a short flow pays these per carrier and side).
    std::error_code ec;
    st_->sock.set_option(asio::ip::tcp::no_delay(true), ec);
    st_->fd = st_->sock.native_handle();
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(st_->fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
      st_->protocol = ss.ss_family == AF_INET6 ? asio::ip::tcp::v6() : asio::ip::tcp::v4();
      if (auto e = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len)) {
        local_ = e->to_string();
      }
    }
    remote_ = fd_remote(st_->fd);
  }
  ~TcpCarrier() override { close(); }

  void async_read_some(std::span<std::byte> buf, IoHandler handler) override {
    st_->sock.async_read_some(asio::buffer(buf.data(), buf.size()),
                              [s = st_, h = std::move(handler)](std::error_code ec,
                                                                std::size_t n) { h(ec, n); });
  }
  void async_write(std::span<const std::byte> buf, IoHandler handler) override {
    const std::span<const std::byte> one[] = {buf};
    async_write_gather(one, std::move(handler));
  }
  void async_write_gather(std::span<const std::span<const std::byte>> pieces,
                          IoHandler handler) override {
    std::size_t skip = 0;
    if (st_->released) {
      // Out of the reactor (the reader owns the input): send what the socket takes now; only
      // a send that would block brings asio back, to wait for room.
      std::error_code ec;
      skip = send_now(pieces, ec);
      std::size_t total = 0;
      for (const auto& p : pieces) {
        total += p.size();
      }
      if (ec || skip == total) {
        asio::post(st_->sock.get_executor(), [h = std::move(handler), ec, skip] { h(ec, skip); });
        return;
      }
      st_->rewatch();
    }
    std::vector<asio::const_buffer> bufs;
    bufs.reserve(pieces.size());
    for (const auto& p : pieces) {
      if (skip >= p.size()) {
        skip -= p.size();
        continue;
      }
      bufs.emplace_back(p.data() + skip, p.size() - skip);
      skip = 0;
    }
    std::size_t before = 0;
    for (const auto& p : pieces) {
      before += p.size();
    }
    for (const auto& b : bufs) {
      before -= b.size();
    }
    st_->asio_writes += 1;
    asio::async_write(st_->sock, std::move(bufs),
                      [s = st_, before, h = std::move(handler)](std::error_code ec,
                                                                std::size_t n) {
                        s->asio_writes -= 1;
                        s->unwatch();  // the reader still owns the input: out again
                        h(ec, before + n);
                      });
  }
  [[nodiscard]] int direct_read_fd() const override { return st_->fd; }
  void set_input_watch(bool on) override {
    st_->watch_input = on;
    if (on) {
      st_->rewatch();
    } else {
      st_->unwatch();
    }
  }
  void close() override {
    if (st_->released) {
      st_->released = false;
      if (st_->fd >= 0) {
        ::close(st_->fd);
      }
    } else {
      std::error_code ec;
      st_->sock.close(ec);
    }
    st_->fd = -1;
  }
  [[nodiscard]] std::string local() const override { return local_; }
  [[nodiscard]] std::string remote() const override { return remote_; }
  [[nodiscard]] std::size_t pending_input() const override {
    int n = 0;
    if (st_->fd < 0 || ::ioctl(st_->fd, FIONREAD, &n) != 0 || n < 0) {
      return 0;
    }
    return static_cast<std::size_t>(n);
  }
  [[nodiscard]] std::optional<engine::TransportAck> transport_ack() const override {
    if (st_->fd < 0) {
      return std::nullopt;
    }
    tcp_info ti{};
    socklen_t len = sizeof ti;
    if (::getsockopt(st_->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) {
      return std::nullopt;
    }
    engine::TransportAck a;
    a.in_flight_packets = ti.tcpi_unacked;
    a.since_ack = std::chrono::milliseconds(ti.tcpi_last_ack_recv);
    a.srtt = std::chrono::microseconds(ti.tcpi_rtt);
    a.rttvar = std::chrono::microseconds(ti.tcpi_rttvar);
    return a;
  }

 private:
  // send_now: one non-blocking sendmsg of |pieces|; the bytes sent (|ec| set on a failure
  // other than a full socket).
  std::size_t send_now(std::span<const std::span<const std::byte>> pieces, std::error_code& ec) {
    std::vector<iovec> iov;
    iov.reserve(pieces.size());
    for (const auto& p : pieces) {
      iov.push_back(iovec{const_cast<std::byte*>(p.data()), p.size()});
    }
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = iov.size();
    for (;;) {
      const ssize_t n = ::sendmsg(st_->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n >= 0) {
        return static_cast<std::size_t>(n);
      }
      if (errno == EINTR) {
        continue;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        ec = std::error_code(errno, std::system_category());
      }
      return 0;
    }
  }

  std::shared_ptr<TcpState> st_;
  std::string local_;
  std::string remote_;
};

}  // namespace

StreamCarrierPtr make_tcp_carrier(asio::ip::tcp::socket sock) {
  return std::make_unique<TcpCarrier>(std::move(sock));
}

}  // namespace detail

Result<StreamCarrierPtr> dial_tcp(asio::io_context& io, const PathSpec& spec, Deadline deadline) {
  auto fd = detail::connect_fd(spec, SOCK_STREAM, deadline);
  if (!fd) {
    return std::move(fd).take_error().with_context("dial tcp");
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd->get(), reinterpret_cast<sockaddr*>(&ss), &len);
  asio::ip::tcp::socket sock(io);
  std::error_code ec;
  sock.assign(ss.ss_family == AF_INET6 ? asio::ip::tcp::v6() : asio::ip::tcp::v4(),
              fd->release(), ec);
  if (ec) {
    return Error{ec, "dial tcp: assign"};
  }
  return detail::make_tcp_carrier(std::move(sock));
}

}  // namespace rendr
