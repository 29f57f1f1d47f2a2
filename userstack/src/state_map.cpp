// SPDX-License-Identifier: Apache-2.0
#include <rendr/userstack/snapshot.hpp>

namespace rendr::userstack {

std::optional<TcpState> kernel_state(int v) {
  switch (v) {
    case static_cast<int>(LwipState::closed):
      return TcpState::close;
    case static_cast<int>(LwipState::listen):
      return TcpState::listen;
    case static_cast<int>(LwipState::syn_sent):
      return TcpState::syn_sent;
    case static_cast<int>(LwipState::syn_rcvd):
      return TcpState::syn_recv;
    case static_cast<int>(LwipState::established):
      return TcpState::established;
    case static_cast<int>(LwipState::fin_wait_1):
      return TcpState::fin_wait1;
    case static_cast<int>(LwipState::fin_wait_2):
      return TcpState::fin_wait2;
    case static_cast<int>(LwipState::close_wait):
      return TcpState::close_wait;
    case static_cast<int>(LwipState::closing):
      return TcpState::closing;
    case static_cast<int>(LwipState::last_ack):
      return TcpState::last_ack;
    case static_cast<int>(LwipState::time_wait):
      return TcpState::time_wait;
    default:
      return std::nullopt;
  }
}

std::optional<LwipState> lwip_state(TcpState s) {
  switch (s) {
    case TcpState::close:
      return LwipState::closed;
    case TcpState::listen:
      return LwipState::listen;
    case TcpState::syn_sent:
      return LwipState::syn_sent;
    case TcpState::syn_recv:
      return LwipState::syn_rcvd;
    case TcpState::established:
      return LwipState::established;
    case TcpState::fin_wait1:
      return LwipState::fin_wait_1;
    case TcpState::fin_wait2:
      return LwipState::fin_wait_2;
    case TcpState::close_wait:
      return LwipState::close_wait;
    case TcpState::closing:
      return LwipState::closing;
    case TcpState::last_ack:
      return LwipState::last_ack;
    case TcpState::time_wait:
      return LwipState::time_wait;
  }
  return std::nullopt;
}

bool userstack_state_supported(TcpState s) {
  switch (s) {
    case TcpState::established:
    case TcpState::fin_wait1:
    case TcpState::fin_wait2:
    case TcpState::close_wait:
    case TcpState::closing:
    case TcpState::last_ack:
      return true;
    default:
      return false;
  }
}

}  // namespace rendr::userstack
