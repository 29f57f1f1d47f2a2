// SPDX-License-Identifier: Apache-2.0
// Control-socket transport: one agent Message per SOCK_SEQPACKET datagram, with at most one fd
// attached (SCM_RIGHTS). Used by the agent, rendrctl and the embedder library. Blocking or
// non-blocking follows the socket's O_NONBLOCK flag (EAGAIN is returned as an Error).
#pragma once

#include <rendr/agents/message.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include <string>

namespace rendr::agents {

struct Packet {
  Message msg;
  UniqueFd fd;  // invalid when none was attached
};

// send_packet sends |m| (and |fd| when >= 0). Errors: sendmsg's (EPIPE when the other side
// left), EMSGSIZE.
[[nodiscard]] Status send_packet(int sock, const Message& m, int fd = -1);
// send_packet_nowait is send_packet without waiting for room: EAGAIN when the other side's
// queue is full (a client that does not read its replies), so a server can wait for it
// without stopping anyone else.
[[nodiscard]] Status send_packet_nowait(int sock, const Message& m, int fd = -1);
// recv_packet receives one datagram. ECONNRESET when the other side closed; EBADMSG for a
// malformed message (any fd that came with it is closed).
[[nodiscard]] Result<Packet> recv_packet(int sock);

// connect_control connects to an agent's control socket at |path| (SOCK_SEQPACKET). The
// error names the path and, for EACCES, that the socket is root-only. |nonblocking| makes the
// socket O_NONBLOCK from the start, so the connect() itself does not wait either (EAGAIN when
// the agent's backlog is full).
[[nodiscard]] Result<UniqueFd> connect_control(const std::string& path, bool nonblocking = false);

// call sends |m| and waits for the reply, passing progress lines to |on_progress| (may be
// empty) until the final reply arrives. |timeout_ms| bounds each wait (<= 0: no bound).
[[nodiscard]] Result<Message> call(int sock, const Message& m, int timeout_ms,
                                   void (*on_progress)(const std::string&) = nullptr);

// Default control socket path.
inline constexpr const char* kDefaultControlSocket = "/run/rendr/agent.sock";

}  // namespace rendr::agents
