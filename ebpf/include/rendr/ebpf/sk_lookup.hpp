// SPDX-License-Identifier: Apache-2.0
// SkLookup: the sk_lookup family (progs/steer_sk_lookup.bpf.c, kernel >= 5.9). Attached to a
// network namespace, it hands new connections (TCP SYNs; unconnected UDP) for a VIP port, or a
// whole port range of a VIP, to a registered listening socket - so a host accepts VIP traffic
// without binding the VIP on every port, and new connections can be pointed at a new process.
// Established sockets, including restored TCP_REPAIR ones, never reach it (ehash wins).
//
// Owns the program, its maps and its netns link (released on destruction). The registered
// sockets are referenced by the SOCKMAP, not owned: closing a listener removes it from the map.
// Not synchronised: one thread at a time.
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>

#include <cstdint>
#include <memory>

namespace rendr::ebpf {

enum class SkProtocol { tcp, udp };

struct SkLookupOptions {
  std::uint32_t max_sockets = 64;  // SOCKMAP slots (one per registration)
};

struct SkLookupCounters {
  std::uint64_t assigned = 0;       // lookups answered with a registered socket
  std::uint64_t no_socket = 0;      // target matched but its socket is gone
  std::uint64_t assign_failed = 0;  // bpf_sk_assign refused (family/protocol/state mismatch)
};

class SkLookup {
 public:
  // create opens and loads steer_sk_lookup; attaches nothing.
  [[nodiscard]] static Result<SkLookup> create(const SkLookupOptions& options = {});

  SkLookup(SkLookup&&) noexcept;
  SkLookup& operator=(SkLookup&&) noexcept;
  ~SkLookup();

  // attach links the program to the calling thread's network namespace (attach()) or to the
  // namespace |netns_fd| refers to. EEXIST if already attached.
  [[nodiscard]] Status attach();
  [[nodiscard]] Status attach(int netns_fd);

  // add_listener sends lookups for |vip| (address and port, port != 0) to socket |fd|: a
  // listening TCP socket or a bound UDP socket (protocol read from the socket). Replaces an
  // earlier registration of the same VIP port. EINVAL (port 0, bad socket), ENOSPC (no slot).
  [[nodiscard]] Status add_listener(const Endpoint& vip, int fd);
  // add_listener_range does the same for every port in [lo, hi] of |vip|'s address (its port is
  // ignored); exact-port registrations take precedence. One range per address and protocol.
  [[nodiscard]] Status add_listener_range(const Endpoint& vip, std::uint16_t lo, std::uint16_t hi,
                                          int fd);
  // remove drops the registration of |vip| (port 0: the address's range) for |protocol|.
  // ENOENT if there is none.
  [[nodiscard]] Status remove(const Endpoint& vip, SkProtocol protocol = SkProtocol::tcp);

  [[nodiscard]] Result<SkLookupCounters> counters() const;

  // program_fd_for_test exposes the loaded program for BPF_PROG_TEST_RUN.
  [[nodiscard]] int program_fd_for_test() const;

 private:
  struct Impl;
  explicit SkLookup(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rendr::ebpf
