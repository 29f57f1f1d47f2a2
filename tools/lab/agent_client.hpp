// SPDX-License-Identifier: Apache-2.0
// AgentTlsClient: one agent channel (mutual TLS, the agents' framed messages) opened from a
// network namespace with a certificate from an AgentStack / agent-lab directory - the view an
// attacker holding a certificate of the agents' CA has. Blocking OpenSSL; for tests and
// rendr-bench hostile.
#pragma once

#include <rendr/agents/message.hpp>
#include <rendr/common/result.hpp>

#include <memory>
#include <optional>
#include <span>
#include <string>

namespace rendr::lab {

class AgentTlsClient {
 public:
  // open connects from |netns_fd| (-1: the caller's namespace) to |ip|:|port| with the
  // certificate |dir|/|name|.pem (key |name|.key, CA ca.pem) and completes the handshake.
  // Errors: the connect or handshake failure (an agent that refuses the name may still finish
  // the handshake and close the channel right after it).
  [[nodiscard]] static Result<std::unique_ptr<AgentTlsClient>> open(
      const std::string& dir, const std::string& name, int netns_fd, const std::string& ip,
      int port = 7300, int timeout_s = 5);
  ~AgentTlsClient();
  AgentTlsClient(const AgentTlsClient&) = delete;
  AgentTlsClient& operator=(const AgentTlsClient&) = delete;

  // send_raw writes |b| on the channel; false when the agent closed it.
  bool send_raw(std::span<const std::byte> b);
  // ask sends |m| and returns the reply, or nullopt when the agent closed the channel.
  std::optional<agents::Message> ask(const agents::Message& m);

 private:
  AgentTlsClient() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rendr::lab
