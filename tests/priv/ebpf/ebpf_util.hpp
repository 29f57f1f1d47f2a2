// SPDX-License-Identifier: Apache-2.0
// Helpers for the ebpf priv tests: Result assertions (STYLE T8), tc verdicts from the UAPI
// header, and small poll-with-deadline socket helpers (no sleeps).
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include <catch2/catch.hpp>

#include <cstddef>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#define EBPF_REQUIRE_OK(r)                                                            \
  do {                                                                                \
    const auto& ebpf_req_r_ = (r);                                                    \
    INFO("error: " << (ebpf_req_r_.ok() ? std::string("-") : ebpf_req_r_.error().message())); \
    REQUIRE(ebpf_req_r_.ok());                                                        \
  } while (0)

#define EBPF_REQUIRE_ERROR(r, errc, substring)                                  \
  do {                                                                          \
    const auto& ebpf_req_r_ = (r);                                              \
    REQUIRE_FALSE(ebpf_req_r_.ok());                                            \
    INFO("error: " << ebpf_req_r_.error().message());                           \
    REQUIRE(ebpf_req_r_.error().code == std::make_error_code(errc));            \
    REQUIRE_THAT(ebpf_req_r_.error().message(), Catch::Contains(substring));    \
  } while (0)

namespace rendr::test {

// listen_tcp binds a listening TCP socket to |ep| (port 0: any) in the calling thread's netns.
UniqueFd listen_tcp(const Endpoint& ep);
// connect_tcp connects to |ep| (blocking with a 5 s deadline); returns the errno on failure.
Result<UniqueFd> connect_tcp(const Endpoint& ep);
// accept_tcp waits up to |timeout_ms| for a connection on |listener|.
UniqueFd accept_tcp(int listener, int timeout_ms = 5000);
// local_of / peer_of: getsockname / getpeername as Endpoint.
Endpoint local_of(int fd);
Endpoint peer_of(int fd);
// readable waits up to |timeout_ms| for POLLIN; false on timeout.
bool readable(int fd, int timeout_ms);
// send_all writes |data| (poll with a deadline per step).
void send_all(int fd, std::span<const std::byte> data, int timeout_ms = 10000);
// recv_exact reads exactly |n| bytes, throwing on EOF, error or |timeout_ms| without progress.
std::vector<std::byte> recv_exact(int fd, std::size_t n, int timeout_ms = 10000);
// socket_error reads SO_ERROR.
int socket_error(int fd);
// ifindex_of resolves |name| in the calling thread's netns (throws if absent).
int ifindex_of(const std::string& name);

}  // namespace rendr::test
