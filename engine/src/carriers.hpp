// SPDX-License-Identifier: Apache-2.0
// Built-in carrier implementations shared by the dialer and the listeners (private):
// carrier_tcp.cpp, carrier_udpflow.cpp, and what they share in carrier_common.cpp.
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/engine/carrier.hpp>

#include <asio/ip/tcp.hpp>
#include <asio/ip/udp.hpp>

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace rendr::detail {

// make_tcp_carrier wraps a connected socket (sets TCP_NODELAY, keepalive off).
[[nodiscard]] StreamCarrierPtr make_tcp_carrier(asio::ip::tcp::socket sock);

using UdpFlowId = std::array<std::uint8_t, 7>;

// One udpflow path as the listener sees it: datagrams for |id| arrive through the listener's
// socket and are handed to on_packet; replies go to |remote| (updated when the client's source
// address changes: NAT rebinding).
struct UdpServerPathState {
  UdpFlowId id{};
  asio::ip::udp::endpoint remote;
  std::function<void(std::span<const std::byte>)> on_packet;
  std::function<void(std::error_code)> on_error;
  bool closed = false;
};

// make_udpflow_server_path builds the carrier of such a path, sending through |sock|.
[[nodiscard]] PacketCarrierPtr make_udpflow_server_path(
    std::shared_ptr<asio::ip::udp::socket> sock, std::shared_ptr<UdpServerPathState> state,
    std::string local);

[[nodiscard]] Result<asio::ip::udp::endpoint> parse_udp_endpoint(const std::string& text);
[[nodiscard]] Result<asio::ip::tcp::endpoint> parse_tcp_endpoint(const std::string& text);
[[nodiscard]] std::string endpoint_string(const asio::ip::address& a, std::uint16_t port);

// fd_local / fd_remote: a socket's local / peer address as "ip:port" ("" when unknown).
[[nodiscard]] std::string fd_local(int fd);
[[nodiscard]] std::string fd_remote(int fd);
// connect_fd: a non-blocking socket of |type| (SOCK_STREAM, SOCK_DGRAM) connected to
// |spec.address| (bound to spec.local when given) before |deadline|. Errors: errno of
// socket/bind/connect, timed_out, invalid_argument (address).
[[nodiscard]] Result<UniqueFd> connect_fd(const PathSpec& spec, int type, Deadline deadline);
// The same in two steps, for a caller that waits for writability itself (Dialer::async_dial):
// start_connect_fd returns the socket with its connect under way (or done) and sets |remote|;
// connect_result, once the socket is writable, is the connect's outcome (SO_ERROR).
[[nodiscard]] Result<UniqueFd> start_connect_fd(const PathSpec& spec, int type, Endpoint& remote);
[[nodiscard]] Status connect_result(int fd, const Endpoint& remote);

}  // namespace rendr::detail
