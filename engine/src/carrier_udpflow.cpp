// SPDX-License-Identifier: Apache-2.0
// The udpflow carrier: one frame per datagram behind the 8-byte udpflow header ("0 | id[7]"),
// dialling side (a connected UDP socket) and listening side (paths sharing the listener's
// socket). The socket lives in a state its own handlers co-own, so a handler completing after
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

// --- udpflow, dialing side ---

struct UdpClientState {
  explicit UdpClientState(asio::io_context& io) : sock(io) {}
  asio::ip::udp::socket sock;
  UdpFlowId id{};
  std::vector<std::byte> sendbuf;
  std::vector<std::byte> recvbuf;
  std::function<void(std::span<const std::byte>)> on_packet;
  std::function<void(std::error_code)> on_error;
  bool closed = false;
};

void udp_client_wait(const std::shared_ptr<UdpClientState>& st) {
  st->sock.async_wait(asio::socket_base::wait_read, [st](std::error_code ec) {
    if (st->closed) {
      return;
    }
    if (ec) {
      if (st->on_error) {
        st->on_error(ec);
      }
      return;
    }
    // Drain a bounded batch, then wait again (other flows get their turn).
    for (int i = 0; i < 64 && !st->closed; ++i) {
      const ssize_t n = ::recv(st->sock.native_handle(), st->recvbuf.data(), st->recvbuf.size(),
                               MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
          break;
        }
        if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH) {
          continue;  // ICMP on a datagram path: probes decide whether it is dead
        }
        if (st->on_error) {
          st->on_error(std::error_code(errno, std::generic_category()));
        }
        return;
      }
      const auto len = static_cast<std::size_t>(n);
      if (len < kUdpFlowHeader + 8 || st->recvbuf[0] != std::byte{0} ||
          std::memcmp(st->recvbuf.data() + 1, st->id.data(), st->id.size()) != 0) {
        continue;  // not ours: silently dropped
      }
      st->on_packet(std::span<const std::byte>(st->recvbuf.data() + kUdpFlowHeader,
                                               len - kUdpFlowHeader));
    }
    if (!st->closed) {
      udp_client_wait(st);
    }
  });
}

class UdpFlowClient final : public PacketCarrier {
 public:
  explicit UdpFlowClient(std::shared_ptr<UdpClientState> st) : st_(std::move(st)) {
    local_ = fd_local(st_->sock.native_handle());
    remote_ = fd_remote(st_->sock.native_handle());
  }
  ~UdpFlowClient() override { close(); }
  void start(std::function<void(std::span<const std::byte>)> on_packet,
             std::function<void(std::error_code)> on_error) override {
    st_->on_packet = std::move(on_packet);
    st_->on_error = std::move(on_error);
    udp_client_wait(st_);
  }
  std::error_code send(std::span<const std::byte> frame) override {
    auto& b = st_->sendbuf;
    b.resize(kUdpFlowHeader + frame.size());
    b[0] = std::byte{0};
    std::memcpy(b.data() + 1, st_->id.data(), st_->id.size());
    std::memcpy(b.data() + kUdpFlowHeader, frame.data(), frame.size());
    const ssize_t n = ::send(st_->sock.native_handle(), b.data(), b.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH ||
          errno == ENOBUFS) {
        return {};  // a lost datagram, not a dead carrier
      }
      return {errno, std::generic_category()};
    }
    return {};
  }
  void async_wait_writable(std::function<void(std::error_code)> handler) override {
    st_->sock.async_wait(asio::socket_base::wait_write,
                         [st = st_, h = std::move(handler)](std::error_code ec) { h(ec); });
  }
  [[nodiscard]] std::size_t max_frame() const override { return kUdpFlowMaxFrame; }
  void close() override {
    st_->closed = true;
    std::error_code ec;
    st_->sock.close(ec);
  }
  [[nodiscard]] std::string local() const override { return local_; }
  [[nodiscard]] std::string remote() const override { return remote_; }
  [[nodiscard]] std::size_t pending_input() const override {
    std::error_code ec;
    const std::size_t n = st_->sock.is_open() ? st_->sock.available(ec) : 0;
    return ec ? 0 : n;
  }

 private:
  std::shared_ptr<UdpClientState> st_;
  std::string local_;
  std::string remote_;
};

// --- udpflow, listening side ---

class UdpFlowServerPath final : public PacketCarrier {
 public:
  UdpFlowServerPath(std::shared_ptr<asio::ip::udp::socket> sock,
                    std::shared_ptr<UdpServerPathState> st, std::string local)
      : sock_(std::move(sock)), st_(std::move(st)), local_(std::move(local)) {}
  ~UdpFlowServerPath() override { close(); }
  void start(std::function<void(std::span<const std::byte>)> on_packet,
             std::function<void(std::error_code)> on_error) override {
    st_->on_packet = std::move(on_packet);
    st_->on_error = std::move(on_error);
  }
  std::error_code send(std::span<const std::byte> frame) override {
    if (st_->closed) {
      return std::make_error_code(std::errc::not_connected);
    }
    buf_.resize(kUdpFlowHeader + frame.size());
    buf_[0] = std::byte{0};
    std::memcpy(buf_.data() + 1, st_->id.data(), st_->id.size());
    std::memcpy(buf_.data() + kUdpFlowHeader, frame.data(), frame.size());
    const ssize_t n =
        ::sendto(sock_->native_handle(), buf_.data(), buf_.size(), MSG_DONTWAIT,
                 static_cast<const sockaddr*>(st_->remote.data()), st_->remote.size());
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return {errno, std::generic_category()};
      }
      return {};  // shared socket: a send error is one lost datagram, never a dead listener
    }
    return {};
  }
  void async_wait_writable(std::function<void(std::error_code)> handler) override {
    sock_->async_wait(asio::socket_base::wait_write,
                      [s = sock_, h = std::move(handler)](std::error_code ec) { h(ec); });
  }
  [[nodiscard]] std::size_t pending_input() const override {
    std::error_code ec;
    const std::size_t n = sock_->is_open() ? sock_->available(ec) : 0;
    return ec ? 0 : n;
  }
  [[nodiscard]] std::size_t max_frame() const override { return kUdpFlowMaxFrame; }
  void close() override { st_->closed = true; }
  [[nodiscard]] std::string local() const override { return local_; }
  [[nodiscard]] std::string remote() const override {
    return endpoint_string(st_->remote.address(), st_->remote.port());
  }

 private:
  std::shared_ptr<asio::ip::udp::socket> sock_;
  std::shared_ptr<UdpServerPathState> st_;
  std::string local_;
  std::vector<std::byte> buf_;
};

}  // namespace

PacketCarrierPtr make_udpflow_server_path(std::shared_ptr<asio::ip::udp::socket> sock,
                                          std::shared_ptr<UdpServerPathState> state,
                                          std::string local) {
  return std::make_unique<UdpFlowServerPath>(std::move(sock), std::move(state), std::move(local));
}

}  // namespace detail

Result<PacketCarrierPtr> dial_udpflow(asio::io_context& io, const PathSpec& spec,
                                      Deadline deadline) {
  detail::UdpFlowId id{};
  if (auto it = spec.opts.find("flow_id_hex"); it != spec.opts.end()) {
    const std::string& h = it->second;
    if (h.size() != 14) {
      return make_error(std::errc::invalid_argument, "udpflow flow_id_hex: need 14 hex digits");
    }
    for (std::size_t i = 0; i < 7; ++i) {
      char* end = nullptr;
      const std::string byte = h.substr(i * 2, 2);
      const unsigned long v = std::strtoul(byte.c_str(), &end, 16);
      if (end != byte.c_str() + 2) {
        return make_error(std::errc::invalid_argument, "udpflow flow_id_hex: not hex");
      }
      id[i] = static_cast<std::uint8_t>(v);
    }
  } else if (::getrandom(id.data(), id.size(), 0) != static_cast<ssize_t>(id.size())) {
    return errno_error("udpflow: getrandom");
  }
  auto fd = detail::connect_fd(spec, SOCK_DGRAM, deadline);
  if (!fd) {
    return std::move(fd).take_error().with_context("dial udpflow");
  }
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd->get(), reinterpret_cast<sockaddr*>(&ss), &len);
  auto st = std::make_shared<detail::UdpClientState>(io);
  st->id = id;
  st->recvbuf.resize(64 * 1024);
  std::error_code ec;
  st->sock.assign(ss.ss_family == AF_INET6 ? asio::ip::udp::v6() : asio::ip::udp::v4(),
                  fd->release(), ec);
  if (ec) {
    return Error{ec, "dial udpflow: assign"};
  }
  return PacketCarrierPtr(std::make_unique<detail::UdpFlowClient>(std::move(st)));
}

}  // namespace rendr
