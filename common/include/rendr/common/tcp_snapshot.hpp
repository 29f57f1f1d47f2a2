// SPDX-License-Identifier: Apache-2.0
// TcpSnapshot — the complete saved state of one kernel (or user-space) TCP connection, as a plain,
// versioned value with no fd inside (STYLE M2). repair/ produces and consumes it, userstack/
// imports it, agents ship it. The binary codec (snapshot_codec.hpp) and the JSON dump live beside
// it so every module reads the same bytes the same way.
//
// Sequence convention: |send_seq| is the sequence number of the first byte of |send_queue| (the
// oldest unacknowledged byte, i.e. snd_una when no FIN is involved) and |recv_seq| that of the
// first byte of |recv_queue| (the next byte the application would read). FINs are not counted in
// the queues; the flags say whether one was queued/sent by us or received from the peer.
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace rendr {

// TCP states as the kernel numbers them (netinet/tcp.h: TCP_ESTABLISHED = 1, ...).
enum class TcpState : std::uint8_t {
  established = 1,
  syn_sent = 2,
  syn_recv = 3,
  fin_wait1 = 4,
  fin_wait2 = 5,
  time_wait = 6,
  close = 7,
  close_wait = 8,
  last_ack = 9,
  listen = 10,
  closing = 11,
};

[[nodiscard]] std::string_view to_string(TcpState s);
// snapshot_state_supported: the states repair/ can checkpoint and restore.
[[nodiscard]] bool snapshot_state_supported(TcpState s);

struct TcpWindow {
  std::uint32_t snd_wl1 = 0;
  std::uint32_t snd_wnd = 0;
  std::uint32_t max_window = 0;
  std::uint32_t rcv_wnd = 0;
  std::uint32_t rcv_wup = 0;
  friend bool operator==(const TcpWindow&, const TcpWindow&) = default;
};

// Socket-level and TCP-level options that are restored after the connection itself.
struct TcpSocketOptions {
  bool nodelay = false;
  bool cork = false;
  bool keepalive = false;
  std::uint32_t keepidle = 0;   // seconds
  std::uint32_t keepintvl = 0;  // seconds
  std::uint32_t keepcnt = 0;
  std::uint32_t user_timeout = 0;  // ms
  std::string congestion;          // e.g. "cubic"; at most 15 characters
  std::uint32_t sndbuf = 0;        // as getsockopt reports it (the kernel's doubled value)
  std::uint32_t rcvbuf = 0;
  std::uint32_t mark = 0;
  std::uint32_t tos = 0;   // IP_TOS, or IPV6_TCLASS for IPv6
  std::uint32_t ttl = 0;   // IP_TTL, or IPV6_UNICAST_HOPS for IPv6
  bool linger_on = false;
  std::uint32_t linger_secs = 0;
  std::uint32_t notsent_lowat = 0;  // 0 = unset (kernel default)
  bool v6only = false;
  bool nonblocking = false;  // O_NONBLOCK on the file
  bool reuseaddr = false;    // SO_REUSEADDR (as before repair mode, which overrides it)
  friend bool operator==(const TcpSocketOptions&, const TcpSocketOptions&) = default;
};

struct TcpSnapshot {
  static constexpr std::uint16_t kVersion = 1;
  // Upper bound per queue accepted by the codec and by restore (the kernel's own limits on
  // sk_sndbuf/sk_rcvbuf make larger queues impossible in practice).
  static constexpr std::size_t kMaxQueueBytes = 256U << 20;

  FourTuple tuple;
  TcpState state = TcpState::established;

  std::uint32_t send_seq = 0;
  std::uint32_t recv_seq = 0;
  std::vector<std::byte> send_queue;  // sent-unacked bytes followed by not-yet-sent bytes
  std::uint32_t send_unsent = 0;      // how many bytes at the tail of send_queue were never sent
  std::vector<std::byte> recv_queue;  // received, not yet read by the application

  bool fin_queued = false;     // we shut down writing: our FIN is queued (FIN_WAIT*, CLOSING, LAST_ACK)
  bool fin_sent = false;       // ... and it was transmitted already
  bool peer_fin = false;       // the peer's FIN was received (CLOSE_WAIT, LAST_ACK, CLOSING)

  // Negotiated TCP options.
  std::uint32_t mss_clamp = 0;
  bool opt_sack = false;
  bool opt_timestamps = false;
  bool opt_wscale = false;
  std::uint8_t snd_wscale = 0;
  std::uint8_t rcv_wscale = 0;
  std::uint32_t timestamp = 0;  // TCP_TIMESTAMP clock (valid when opt_timestamps)

  bool has_window = false;  // TCP_REPAIR_WINDOW was available (kernel >= 4.8)
  TcpWindow window;

  TcpSocketOptions options;

  friend bool operator==(const TcpSnapshot&, const TcpSnapshot&) = default;

  [[nodiscard]] std::uint32_t send_unacked() const {
    return static_cast<std::uint32_t>(send_queue.size()) - send_unsent;
  }
};

// validate checks the invariants every consumer relies on (supported state, families agree,
// queue sizes within bounds, unsent <= queue, FIN flags consistent with the state, window scale
// <= 14, congestion name printable). Returns EINVAL with a message naming the first violation.
[[nodiscard]] Status validate(const TcpSnapshot& s);

}  // namespace rendr
