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
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace rendr {

namespace detail {

namespace {

class TcpCarrier final : public StreamCarrier {
 public:
  explicit TcpCarrier(asio::ip::tcp::socket sock)
      : sock_(std::make_shared<asio::ip::tcp::socket>(std::move(sock))) {
    std::error_code ec;
    sock_->set_option(asio::ip::tcp::no_delay(true), ec);
    sock_->set_option(asio::socket_base::keep_alive(false), ec);
    local_ = fd_local(sock_->native_handle());
    remote_ = fd_remote(sock_->native_handle());
  }
  ~TcpCarrier() override { close(); }

  void async_read_some(std::span<std::byte> buf, IoHandler handler) override {
    sock_->async_read_some(asio::buffer(buf.data(), buf.size()),
                           [s = sock_, h = std::move(handler)](std::error_code ec, std::size_t n) {
                             h(ec, n);
                           });
  }
  void async_write(std::span<const std::byte> buf, IoHandler handler) override {
    asio::async_write(*sock_, asio::buffer(buf.data(), buf.size()),
                      [s = sock_, h = std::move(handler)](std::error_code ec, std::size_t n) {
                        h(ec, n);
                      });
  }
  void async_write_gather(std::span<const std::span<const std::byte>> pieces,
                          IoHandler handler) override {
    std::vector<asio::const_buffer> bufs;
    bufs.reserve(pieces.size());
    for (const auto& p : pieces) {
      bufs.emplace_back(p.data(), p.size());
    }
    asio::async_write(*sock_, std::move(bufs),
                      [s = sock_, h = std::move(handler)](std::error_code ec, std::size_t n) {
                        h(ec, n);
                      });
  }
  [[nodiscard]] bool can_wait_readable() const override { return true; }
  void async_wait_readable(std::function<void(std::error_code)> handler) override {
    sock_->async_wait(asio::socket_base::wait_read,
                      [s = sock_, h = std::move(handler)](std::error_code ec) { h(ec); });
  }
  void close() override {
    std::error_code ec;
    sock_->close(ec);
  }
  [[nodiscard]] std::string local() const override { return local_; }
  [[nodiscard]] std::string remote() const override { return remote_; }
  [[nodiscard]] std::size_t pending_input() const override {
    std::error_code ec;
    const std::size_t n = sock_->is_open() ? sock_->available(ec) : 0;
    return ec ? 0 : n;
  }
  [[nodiscard]] std::optional<engine::TransportAck> transport_ack() const override {
    if (!sock_->is_open()) {
      return std::nullopt;
    }
    tcp_info ti{};
    socklen_t len = sizeof ti;
    if (::getsockopt(sock_->native_handle(), IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) {
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
  std::shared_ptr<asio::ip::tcp::socket> sock_;
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
