// SPDX-License-Identifier: Apache-2.0
// Small blocking-with-deadline socket helpers for the repair priv tests.
#pragma once

#include "support/netns.hpp"
#include "support/pattern.hpp"

#include <rendr/common/endpoint.hpp>
#include <rendr/common/unique_fd.hpp>

#include <cstddef>
#include <string>
#include <vector>

namespace rendr::test {

// listen_on creates a listening socket on |ep| inside |ns|.
UniqueFd listen_on(const Netns& ns, const Endpoint& ep);
// connect_from connects from inside |ns| to |ep| (blocking, 5 s timeout).
UniqueFd connect_from(const Netns& ns, const Endpoint& ep);
UniqueFd accept_one(int listener);
// write_all writes |data| with poll(), failing after |timeout_ms| without progress.
void write_all(int fd, std::span<const std::byte> data, int timeout_ms = 10000);
// read_exact reads exactly |n| bytes or throws (EOF, error or |timeout_ms| without progress).
std::vector<std::byte> read_exact(int fd, std::size_t n, int timeout_ms = 10000);
// expect_eof waits for EOF on |fd|.
void expect_eof(int fd, int timeout_ms = 10000);
// wait_inq waits until SIOCINQ on |fd| reaches |n|.
void wait_inq(int fd, int n, int timeout_ms = 5000);
// write_until_full writes pattern bytes from |offset| until the socket would block; returns
// how many were written.
std::size_t write_until_full(int fd, const Pattern& p, std::uint64_t offset);
void set_nonblocking(int fd, bool on);
FourTuple tuple_of(int fd);
std::vector<std::byte> pattern_bytes(const Pattern& p, std::uint64_t offset, std::size_t n);

}  // namespace rendr::test
