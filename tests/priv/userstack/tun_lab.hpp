// SPDX-License-Identifier: Apache-2.0
// TunLab: a netns with a TUN device rtun0 provisioned as root would do it once, the VIP subnets
// 198.18.0.0/24 and fd99::/64 routed into it, and helpers for a kernel client that checks an
// echoed pattern. The calling thread enters the netns for the lab's lifetime (NetnsScope), so
// the Stack attaches there and client sockets live there. Torn down with the netns.
#pragma once

#include "support/netns.hpp"
#include "support/pattern.hpp"
#include "support/sockets.hpp"  // connect_bound, connect_from, ...

#include <rendr/common/endpoint.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/userstack/stack.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace rendr::test {

inline constexpr const char* kTun = "rtun0";

class TunLab {
 public:
  TunLab();
  ~TunLab();
  TunLab(const TunLab&) = delete;
  TunLab& operator=(const TunLab&) = delete;
  [[nodiscard]] const Netns& ns() const { return ns_; }
  // resets: the client side's view of resets (EstabResets + OutRsts seen in the netns).
  [[nodiscard]] long long resets() const;

 private:
  Netns ns_;
  std::unique_ptr<NetnsScope> scope_;
};

// StackLab: a TunLab plus a userstack::Stack started with |options| on rtun0 (tun.name is set
// here); the test fails (REQUIRE) when the Stack does not start. The Stack stops before the
// netns goes.
class StackLab : public TunLab {
 public:
  explicit StackLab(userstack::StackOptions options = {});
  ~StackLab();
  [[nodiscard]] userstack::Stack& stack() { return *stack_; }

 private:
  std::unique_ptr<userstack::Stack> stack_;
};

struct EchoResult {
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  long long first_bad = -1;  // stream offset of the first wrong byte, -1 = none
  bool reset = false;        // ECONNRESET / EPIPE seen by the client
  bool eof = false;          // clean EOF after all bytes
  std::string error;
  double seconds = 0;
};

// echo_client connects to |vip|, sends |total| pattern bytes while reading the echo back and
// checking every byte, half-closes, and waits for EOF. Bounded by |timeout|.
EchoResult echo_client(const Endpoint& vip, std::uint64_t total, std::uint32_t seed,
                       std::chrono::seconds timeout = std::chrono::seconds(60));

}  // namespace rendr::test
