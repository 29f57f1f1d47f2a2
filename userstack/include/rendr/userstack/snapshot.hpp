// SPDX-License-Identifier: Apache-2.0
// The pure part of lwIP <-> TcpSnapshot conversion: lwIP numbers its TCP states differently
// from the kernel (lwIP ESTABLISHED = 4, TCP_ESTABLISHED = 1), so the mapping is explicit here
// and checked against lwIP's enum where lwIP is included. The live conversion is
// Stack::snapshot() / Stack::restore(). No lwIP, no I/O.
#pragma once

#include <rendr/common/tcp_snapshot.hpp>

#include <cstdint>
#include <optional>

namespace rendr::userstack {

// LwipState — lwIP 2.1's enum tcp_state values (asserted equal in snapshot.cpp).
enum class LwipState : std::uint8_t {
  closed = 0,
  listen = 1,
  syn_sent = 2,
  syn_rcvd = 3,
  established = 4,
  fin_wait_1 = 5,
  fin_wait_2 = 6,
  close_wait = 7,
  closing = 8,
  last_ack = 9,
  time_wait = 10,
};

// kernel_state maps an lwIP state number; nullopt for values outside lwIP's enum.
[[nodiscard]] std::optional<TcpState> kernel_state(int lwip_state);
// lwip_state maps a kernel state; nullopt for kernel states lwIP lacks (none today, but
// TCP_NEW_SYN_RECV-like values are rejected).
[[nodiscard]] std::optional<LwipState> lwip_state(TcpState s);
// userstack_state_supported: the states snapshot/restore handle (ESTABLISHED and the
// half-closed ones: FIN_WAIT1/2, CLOSE_WAIT, CLOSING, LAST_ACK).
[[nodiscard]] bool userstack_state_supported(TcpState s);

}  // namespace rendr::userstack
