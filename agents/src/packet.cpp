// SPDX-License-Identifier: Apache-2.0
#include <rendr/agents/packet.hpp>

#include <poll.h>
#include <sys/socket.h>

#include <cstring>

namespace rendr::agents {

namespace {

Status send_one(int sock, const Message& m, int fd, bool wait) {
  auto body = m.encode();
  iovec iov{body.data(), body.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    mh.msg_control = cbuf;
    mh.msg_controllen = sizeof cbuf;
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  for (;;) {
    ssize_t n = ::sendmsg(sock, &mh, MSG_NOSIGNAL | (wait ? 0 : MSG_DONTWAIT));
    if (n >= 0) {
      return {};
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN && wait) {
      // Seqpacket sends are atomic; wait (bounded) for room.
      pollfd p{sock, POLLOUT, 0};
      if (::poll(&p, 1, 5000) > 0) {
        continue;
      }
    }
    return errno_error(std::string("send ") + to_string(m.type()) + " on control socket");
  }
}

}  // namespace

Status send_packet(int sock, const Message& m, int fd) { return send_one(sock, m, fd, true); }

Status send_packet_nowait(int sock, const Message& m, int fd) {
  return send_one(sock, m, fd, false);
}

Result<Packet> recv_packet(int sock) {
  // Peek at the datagram's size first, so nothing is truncated.
  ssize_t len = 0;
  for (;;) {
    len = ::recv(sock, nullptr, 0, MSG_PEEK | MSG_TRUNC);
    if (len >= 0 || errno != EINTR) {
      break;
    }
  }
  if (len < 0) {
    return errno_error("receive on control socket");
  }
  std::vector<std::byte> buf(static_cast<std::size_t>(len) + 1);
  iovec iov{buf.data(), buf.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * 4)] = {};
  mh.msg_control = cbuf;
  mh.msg_controllen = sizeof cbuf;
  ssize_t n = 0;
  for (;;) {
    n = ::recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    if (n >= 0 || errno != EINTR) {
      break;
    }
  }
  if (n < 0) {
    return errno_error("receive on control socket");
  }
  Packet p;
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      std::size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < nfd; ++i) {
        int f = -1;
        std::memcpy(&f, CMSG_DATA(c) + i * sizeof(int), sizeof f);
        UniqueFd u(f);
        if (!p.fd.valid()) {
          p.fd = std::move(u);
        }
      }
    }
  }
  if (n == 0) {
    return make_error(std::errc::connection_reset, "control socket closed by the other side");
  }
  if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    return make_error(std::errc::bad_message, "control message truncated");
  }
  auto m = Message::decode(std::span(buf.data(), static_cast<std::size_t>(n)));
  if (!m) {
    return std::move(m).take_error();
  }
  p.msg = std::move(*m);
  return p;
}

Result<UniqueFd> connect_control(const std::string& path, bool nonblocking) {
  const int type = SOCK_SEQPACKET | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0);
  auto s = UniqueFd::connect_unix(path, type);
  if (s) {
    return s;
  }
  if (s.error().code == std::errc::filename_too_long) {
    return make_error(std::errc::filename_too_long, "control socket path too long: " + path);
  }
  const int err = s.error().code.value();
  std::string hint;
  if (err == EACCES || err == EPERM) {
    hint = " (the agent's control socket is root-only)";
  } else if (err == ENOENT || err == ECONNREFUSED) {
    hint = " (is rendr-agent running? see docs/native-migration.md)";
  }
  return errno_error("connect to agent at " + path + hint, err);
}

Result<Message> call(int sock, const Message& m, int timeout_ms,
                     void (*on_progress)(const std::string&)) {
  RENDR_TRY(send_packet(sock, m));
  for (;;) {
    if (timeout_ms > 0) {
      pollfd p{sock, POLLIN, 0};
      int r = ::poll(&p, 1, timeout_ms);
      if (r == 0) {
        return make_error(std::errc::timed_out, std::string("no reply to ") + to_string(m.type()) +
                                                    " within " + std::to_string(timeout_ms) +
                                                    " ms");
      }
    }
    auto p = recv_packet(sock);
    if (!p) {
      return std::move(p).take_error();
    }
    if (p->msg.type() == MsgType::progress) {
      if (on_progress != nullptr) {
        on_progress(p->msg.str_or(Tag::text, ""));
      }
      continue;
    }
    return std::move(p->msg);
  }
}

}  // namespace rendr::agents
