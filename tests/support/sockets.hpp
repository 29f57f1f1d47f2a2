// SPDX-License-Identifier: Apache-2.0
// Socket helpers for the privileged tests: TCP listen/connect/accept in a Netns or the calling
// thread's namespace, and I/O bounded by poll() deadlines (no sleeps). They throw
// std::runtime_error on failure, which Catch reports with the message; connect_tcp returns the
// errno as a Result for tests that expect a refusal.
#pragma once

#include "support/netns.hpp"
#include "support/pattern.hpp"

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace rendr::test {

// listen_tcp binds a listening TCP socket (SO_REUSEADDR) to |ep| (port 0: any) in the calling
// thread's netns; listen_on does it inside |ns|.
UniqueFd listen_tcp(const Endpoint& ep);
UniqueFd listen_on(const Netns& ns, const Endpoint& ep);
// connect_from connects from inside |ns| to |ep| (blocking socket, 5 s timeout).
UniqueFd connect_from(const Netns& ns, const Endpoint& ep);
// connect_tcp connects from the calling thread's netns to |ep| (a non-blocking socket, 5 s
// deadline); returns the errno on failure.
Result<UniqueFd> connect_tcp(const Endpoint& ep);
// connect_bound connects from the calling thread's netns to |to|, bound to |from| (port 0),
// blocking with a 5 s timeout.
UniqueFd connect_bound(const Endpoint& from, const Endpoint& to);
// accept_one waits up to |timeout_ms| for a connection on |listener|.
UniqueFd accept_one(int listener, int timeout_ms = 5000);
// readable waits up to |timeout_ms| for POLLIN; false on timeout.
bool readable(int fd, int timeout_ms);
// local_of / peer_of: getsockname / getpeername as Endpoint; socket_error reads SO_ERROR.
Endpoint local_of(int fd);
Endpoint peer_of(int fd);
int socket_error(int fd);
// write_all writes |data| with poll(), failing after |timeout_ms| without progress.
void write_all(int fd, std::span<const std::byte> data, int timeout_ms = 10000);
// read_exact reads exactly |n| bytes or throws (EOF, error or |timeout_ms| without progress).
std::vector<std::byte> read_exact(int fd, std::size_t n, int timeout_ms = 10000);
// expect_eof waits for EOF on |fd|.
void expect_eof(int fd, int timeout_ms = 10000);
// wait_inq waits until SIOCINQ on |fd| reaches |n|.
void wait_inq(int fd, int n, int timeout_ms = 5000);
// send_queue: bytes in |fd|'s send queue (SIOCOUTQ: unacknowledged plus never sent).
int send_queue(int fd);
// in_flight: bytes |fd| sent that are not acknowledged yet (SIOCOUTQ - SIOCOUTQNSD).
int in_flight(int fd);
// inq: bytes |fd| received in order that nobody read yet (SIOCINQ).
int inq(int fd);
// total_retrans: TCP_INFO's tcpi_total_retrans of |fd| (0 when it cannot be read).
std::uint32_t total_retrans(int fd);
// write_until_full writes pattern bytes from |offset| until the socket would block; returns
// how many were written.
std::size_t write_until_full(int fd, const Pattern& p, std::uint64_t offset);
void set_nonblocking(int fd, bool on);
FourTuple tuple_of(int fd);
std::vector<std::byte> pattern_bytes(const Pattern& p, std::uint64_t offset, std::size_t n);

}  // namespace rendr::test
