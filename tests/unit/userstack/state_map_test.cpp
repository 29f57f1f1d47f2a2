// SPDX-License-Identifier: Apache-2.0
// lwIP numbers TCP states differently from the kernel: the mapping is explicit.
#include <rendr/userstack/snapshot.hpp>

#include <catch2/catch.hpp>

using namespace rendr;
using namespace rendr::userstack;

TEST_CASE("userstack lwIP and kernel TCP state numbers map explicitly both ways",
          "[userstack][state]") {
  CHECK(kernel_state(4) == TcpState::established);
  CHECK(static_cast<int>(TcpState::established) == 1);
  CHECK(kernel_state(5) == TcpState::fin_wait1);
  CHECK(kernel_state(6) == TcpState::fin_wait2);
  CHECK(kernel_state(7) == TcpState::close_wait);
  CHECK(kernel_state(8) == TcpState::closing);
  CHECK(kernel_state(9) == TcpState::last_ack);
  CHECK(kernel_state(10) == TcpState::time_wait);
  CHECK_FALSE(kernel_state(11));
  CHECK_FALSE(kernel_state(-1));
  for (int v = 0; v <= 10; ++v) {
    auto k = kernel_state(v);
    REQUIRE(k);
    auto back = lwip_state(*k);
    REQUIRE(back);
    CHECK(static_cast<int>(*back) == v);
  }
}

TEST_CASE("userstack snapshot supports ESTABLISHED and the half-closed states only",
          "[userstack][state]") {
  for (TcpState s : {TcpState::established, TcpState::fin_wait1, TcpState::fin_wait2,
                     TcpState::close_wait, TcpState::closing, TcpState::last_ack}) {
    CHECK(userstack_state_supported(s));
  }
  for (TcpState s : {TcpState::listen, TcpState::syn_sent, TcpState::syn_recv, TcpState::time_wait,
                     TcpState::close}) {
    CHECK_FALSE(userstack_state_supported(s));
  }
}
