// SPDX-License-Identifier: Apache-2.0
#include "sock_diag.hpp"

#include <rendr/common/endpoint.hpp>
#include <rendr/common/unique_fd.hpp>

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace rendr::agents {

namespace {

// NLMSG_DATA casts C-style; the payload follows the aligned header.
template <typename T>
const T* payload(const nlmsghdr* h) {
  return reinterpret_cast<const T*>(reinterpret_cast<const char*>(h) + NLMSG_HDRLEN);
}

// endpoint_of renders what getsockname/getpeername would (the tracked tuple came from them):
// a link-local IPv6 address carries the socket's device as its scope.
Result<Endpoint> endpoint_of(std::uint8_t family, const __be32* addr, __be16 port,
                             std::uint32_t ifindex) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (family == AF_INET) {
    auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
    s4->sin_family = AF_INET;
    s4->sin_port = port;
    std::memcpy(&s4->sin_addr, addr, 4);
    len = sizeof *s4;
  } else {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = port;
    std::memcpy(&s6->sin6_addr, addr, 16);
    if (IN6_IS_ADDR_LINKLOCAL(&s6->sin6_addr)) {
      s6->sin6_scope_id = ifindex;
    }
    len = sizeof *s6;
  }
  return Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
}

// A SOCK_DIAG_BY_FAMILY request for TCP sockets of |family|.
struct DiagRequest {
  nlmsghdr nh;
  inet_diag_req_v2 req;
};

DiagRequest diag_request(std::uint8_t family, std::uint16_t flags, std::uint32_t seq) {
  DiagRequest msg{};
  msg.nh.nlmsg_len = sizeof msg;
  msg.nh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nh.nlmsg_flags = flags;
  msg.nh.nlmsg_seq = seq;
  msg.req.sdiag_family = family;
  msg.req.sdiag_protocol = IPPROTO_TCP;
  return msg;
}

Status send_request(int nl, const DiagRequest& msg) {
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (::sendto(nl, &msg, sizeof msg, 0, reinterpret_cast<const sockaddr*>(&kernel),
               sizeof kernel) < 0) {
    return errno_error("sock_diag request");
  }
  return {};
}

// recv_answer reads the next part of the kernel's answer into |buf| (EINTR retried).
Result<unsigned> recv_answer(int nl, char* buf, std::size_t size) {
  for (;;) {
    const ssize_t n = ::recv(nl, buf, size, 0);
    if (n >= 0) {
      return static_cast<unsigned>(n);
    }
    if (errno != EINTR) {
      return errno_error("sock_diag read");
    }
  }
}

Status dump_family(int nl, std::uint8_t family, std::set<std::string>& out) {
  DiagRequest msg = diag_request(family, NLM_F_REQUEST | NLM_F_DUMP, family);
  // Connected states only: a listener, a request socket or a TIME_WAIT entry is never a
  // tracked connection.
  msg.req.idiag_states = ~((1U << TCP_LISTEN) | (1U << TCP_TIME_WAIT) | (1U << TCP_SYN_RECV) |
                           (1U << 12 /* TCP_NEW_SYN_RECV */));
  RENDR_TRY(send_request(nl, msg));
  std::vector<char> buf(64 * 1024);
  for (;;) {
    auto n = recv_answer(nl, buf.data(), buf.size());
    if (!n) {
      return std::move(n).take_error();
    }
    auto left = *n;
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf.data()); NLMSG_OK(h, left);
         h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_type == NLMSG_DONE) {
        return {};
      }
      if (h->nlmsg_type == NLMSG_ERROR) {
        const auto* e = payload<nlmsgerr>(h);
        return errno_error("sock_diag dump", -e->error);
      }
      const auto* d = payload<inet_diag_msg>(h);
      if (d->idiag_inode == 0) {
        continue;  // no file refers to it any more: its owner closed it
      }
      auto local = endpoint_of(d->idiag_family, d->id.idiag_src, d->id.idiag_sport, d->id.idiag_if);
      auto remote = endpoint_of(d->idiag_family, d->id.idiag_dst, d->id.idiag_dport, d->id.idiag_if);
      if (local && remote) {
        out.insert(FourTuple{*local, *remote}.to_string());
      }
    }
  }
}

// lookup_one asks for the socket of exactly |t| (no dump: the kernel looks it up by its tuple).
// Returns whether a file descriptor refers to it; not found is false.
Result<bool> lookup_one(int nl, const FourTuple& t, std::uint32_t seq) {
  const std::uint8_t family = t.local.family == IpFamily::v4 ? AF_INET : AF_INET6;
  DiagRequest msg = diag_request(family, NLM_F_REQUEST, seq);
  msg.req.idiag_states = ~0U;
  msg.req.id.idiag_sport = htons(t.local.port);
  msg.req.id.idiag_dport = htons(t.remote.port);
  const std::size_t alen = family == AF_INET ? 4 : 16;
  std::memcpy(msg.req.id.idiag_src, t.local.addr.data(), alen);
  std::memcpy(msg.req.id.idiag_dst, t.remote.addr.data(), alen);
  msg.req.id.idiag_if = t.local.scope_id;
  msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
  msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
  RENDR_TRY(send_request(nl, msg));
  alignas(nlmsghdr) char buf[8192];
  for (;;) {
    auto n = recv_answer(nl, buf, sizeof buf);
    if (!n) {
      return std::move(n).take_error();
    }
    auto left = *n;
    for (auto* h = reinterpret_cast<nlmsghdr*>(buf); NLMSG_OK(h, left); h = NLMSG_NEXT(h, left)) {
      if (h->nlmsg_seq != seq) {
        continue;  // a late answer to an earlier request
      }
      if (h->nlmsg_type == NLMSG_ERROR) {
        const auto* e = payload<nlmsgerr>(h);
        if (e->error == 0 || e->error == -ENOENT) {
          return false;  // (0: an ACK without a socket)
        }
        return errno_error("sock_diag lookup", -e->error);
      }
      const auto* d = payload<inet_diag_msg>(h);
      // The lookup falls back to a listener on the local port: only this connection counts.
      return d->idiag_state != TCP_LISTEN && d->id.idiag_dport == htons(t.remote.port) &&
             d->idiag_inode != 0;
    }
  }
}

}  // namespace

Result<std::set<std::string>> held_tcp_sockets(const std::vector<FourTuple>& only) {
  if (only.size() > kHeldLookupMax) {
    auto all = held_tcp_sockets();
    if (!all) {
      return std::move(all).take_error();
    }
    std::set<std::string> out;
    for (const auto& t : only) {
      if (all->count(t.to_string()) != 0) {
        out.insert(t.to_string());
      }
    }
    return out;
  }
  UniqueFd nl(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!nl.valid()) {
    return errno_error("sock_diag socket");
  }
  std::set<std::string> out;
  std::uint32_t seq = 0;
  for (const auto& t : only) {
    auto held = lookup_one(nl.get(), t, ++seq);
    if (!held) {
      return std::move(held).take_error();
    }
    if (*held) {
      out.insert(t.to_string());
    }
  }
  return out;
}

Result<std::set<std::string>> held_tcp_sockets() {
  UniqueFd nl(::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!nl.valid()) {
    return errno_error("sock_diag socket");
  }
  std::set<std::string> out;
  RENDR_TRY(dump_family(nl.get(), AF_INET, out));
  RENDR_TRY(dump_family(nl.get(), AF_INET6, out));
  return out;
}

}  // namespace rendr::agents
