// SPDX-License-Identifier: Apache-2.0
#include "inject.hpp"
#include "ops.hpp"

#include <rendr/common/unique_fd.hpp>

#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <netinet/tcp.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace rendr::repair {
namespace {

std::uint32_t sum16(const std::uint8_t* p, std::size_t n, std::uint32_t acc) {
  for (std::size_t i = 0; i + 1 < n; i += 2) {
    acc += static_cast<std::uint32_t>((p[i] << 8) | p[i + 1]);
  }
  if ((n & 1U) != 0) {
    acc += static_cast<std::uint32_t>(p[n - 1] << 8);
  }
  return acc;
}

std::uint16_t fold(std::uint32_t acc) {
  while ((acc >> 16) != 0) {
    acc = (acc & 0xFFFFU) + (acc >> 16);
  }
  return static_cast<std::uint16_t>(~acc);
}

void put16(std::uint8_t* p, std::uint16_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}
void put32(std::uint8_t* p, std::uint32_t v) {
  put16(p, static_cast<std::uint16_t>(v >> 16));
  put16(p + 2, static_cast<std::uint16_t>(v));
}

}  // namespace

ForgedSegment peer_probe(const TcpSnapshot& snap) {
  ForgedSegment probe;
  probe.from = snap.tuple.local;
  probe.to = snap.tuple.remote;
  detail::unmap_v4(probe.from);
  detail::unmap_v4(probe.to);
  probe.seq = snap.send_seq - 1;
  probe.ack = snap.recv_seq + static_cast<std::uint32_t>(snap.recv_queue.size()) +
              (snap.peer_fin ? 1U : 0U);
  // The window this socket announced last: the peer does not take it from an old segment,
  // but if it did, nothing would change.
  const std::uint32_t wnd = snap.has_window ? snap.window.rcv_wnd >> snap.rcv_wscale : 0xFFFF;
  probe.window = static_cast<std::uint16_t>(std::min<std::uint32_t>(wnd, 0xFFFF));
  probe.payload = 1;
  return probe;
}

std::vector<std::byte> build_segment(const ForgedSegment& seg) {
  const bool v4 = seg.from.family == IpFamily::v4;
  const std::size_t iph = v4 ? 20 : 40;
  const std::size_t tcp_len = 20U + seg.payload;
  std::vector<std::uint8_t> pkt(iph + tcp_len, 0);
  std::uint8_t* tcp = pkt.data() + iph;
  put16(tcp + 0, seg.from.port);
  put16(tcp + 2, seg.to.port);
  put32(tcp + 4, seg.seq);
  put32(tcp + 8, seg.ack);
  tcp[12] = 5U << 4;  // data offset: 5 words, no options
  tcp[13] = static_cast<std::uint8_t>(0x10U | (seg.fin ? 0x01U : 0U));  // ACK [+ FIN]
  put16(tcp + 14, seg.window);

  std::uint32_t acc = 0;
  const std::size_t alen = v4 ? 4 : 16;
  acc = sum16(seg.from.addr.data(), alen, acc);
  acc = sum16(seg.to.addr.data(), alen, acc);
  acc += IPPROTO_TCP;
  acc += static_cast<std::uint32_t>(tcp_len);
  acc = sum16(tcp, tcp_len, acc);
  put16(tcp + 16, fold(acc));

  std::uint8_t* ip = pkt.data();
  if (v4) {
    ip[0] = 0x45;
    put16(ip + 2, static_cast<std::uint16_t>(pkt.size()));
    ip[6] = 0x40;  // DF
    ip[8] = 64;
    ip[9] = IPPROTO_TCP;
    std::memcpy(ip + 12, seg.from.addr.data(), 4);
    std::memcpy(ip + 16, seg.to.addr.data(), 4);
    put16(ip + 10, fold(sum16(ip, 20, 0)));
  } else {
    ip[0] = 0x60;
    put16(ip + 4, static_cast<std::uint16_t>(tcp_len));
    ip[6] = IPPROTO_TCP;
    ip[7] = 64;
    std::memcpy(ip + 8, seg.from.addr.data(), 16);
    std::memcpy(ip + 24, seg.to.addr.data(), 16);
  }
  std::vector<std::byte> out(pkt.size());
  std::memcpy(out.data(), pkt.data(), pkt.size());
  return out;
}

namespace {

// short_send: sendto took only part of a packet - it did not fail, so errno says nothing.
Error short_send(const Endpoint& to, ssize_t n, std::size_t size) {
  return make_error(std::errc::io_error, "inject: sendto " + to.address_string() + " took " +
                                          std::to_string(n) + " of " + std::to_string(size) +
                                          " bytes");
}

Result<int> open_raw(Sys& sys, bool v4) {
  int raw = sys.socket(v4 ? AF_INET : AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
  if (raw < 0) {
    int err = errno;
    if (err == EPERM || err == EACCES) {
      return errno_error("inject: raw socket needs CAP_NET_RAW", err);
    }
    return errno_error("inject: raw socket", err);
  }
  return raw;
}

Status set_mark(Sys& sys, int raw, std::uint32_t mark) {
  if (sys.setsockopt(raw, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    return errno_error("inject: SO_MARK");
  }
  return {};
}

Status send_on(Sys& sys, int raw, const ForgedSegment& seg) {
  auto pkt = build_segment(seg);
  Endpoint dst = seg.to;
  dst.port = 0;  // raw sockets take the protocol, not a port, in the address
  sockaddr_storage ss{};
  socklen_t sl = dst.to_sockaddr(ss);
  const ssize_t n =
      sys.sendto(raw, pkt.data(), pkt.size(), 0, reinterpret_cast<sockaddr*>(&ss), sl);
  if (n < 0) {
    return errno_error("inject: sendto " + seg.to.address_string());
  }
  if (n != static_cast<ssize_t>(pkt.size())) {
    return short_send(seg.to, n, pkt.size());
  }
  return {};
}

}  // namespace

Result<std::vector<std::byte>> prepare_replay(std::span<const std::byte> l3, const Endpoint& from,
                                              const Endpoint& to) {
  auto bad = [](const std::string& why) -> Error {
    return make_error(std::errc::invalid_argument, "replay packet: " + why);
  };
  std::vector<std::uint8_t> pkt(l3.size());
  std::memcpy(pkt.data(), l3.data(), l3.size());
  const bool v4 = from.family == IpFamily::v4;
  if (pkt.size() < (v4 ? 20U : 40U) + 20U) {
    return bad("truncated (" + std::to_string(pkt.size()) + " bytes)");
  }
  std::size_t iph = 0;
  std::size_t total = 0;
  const std::size_t alen = v4 ? 4 : 16;
  const std::uint8_t* src = nullptr;
  const std::uint8_t* dst = nullptr;
  if (v4) {
    if ((pkt[0] >> 4) != 4 || pkt[9] != IPPROTO_TCP) {
      return bad("not IPv4 TCP");
    }
    iph = static_cast<std::size_t>(pkt[0] & 0x0FU) * 4;
    total = static_cast<std::size_t>((pkt[2] << 8) | pkt[3]);
    src = pkt.data() + 12;
    dst = pkt.data() + 16;
  } else {
    if ((pkt[0] >> 4) != 6 || pkt[6] != IPPROTO_TCP) {
      return bad("not IPv6 TCP (or has extension headers)");
    }
    iph = 40;
    total = 40 + static_cast<std::size_t>((pkt[4] << 8) | pkt[5]);
    src = pkt.data() + 8;
    dst = pkt.data() + 24;
  }
  if (iph < 20 || total > pkt.size() || total < iph + 20) {
    return bad("bad lengths");
  }
  pkt.resize(total);
  std::uint8_t* tcp = pkt.data() + iph;
  const std::size_t tcp_len = total - iph;
  if (std::memcmp(src, from.addr.data(), alen) != 0 || std::memcmp(dst, to.addr.data(), alen) != 0 ||
      static_cast<std::uint16_t>((tcp[0] << 8) | tcp[1]) != from.port ||
      static_cast<std::uint16_t>((tcp[2] << 8) | tcp[3]) != to.port) {
    return bad("not of this connection");
  }
  if (static_cast<std::size_t>(tcp[12] >> 4) * 4 < 20 ||
      static_cast<std::size_t>(tcp[12] >> 4) * 4 > tcp_len) {
    return bad("bad TCP header length");
  }
  put16(tcp + 16, 0);
  std::uint32_t acc = 0;
  acc = sum16(src, alen, acc);
  acc = sum16(dst, alen, acc);
  acc += IPPROTO_TCP;
  acc += static_cast<std::uint32_t>(tcp_len);
  acc = sum16(tcp, tcp_len, acc);
  put16(tcp + 16, fold(acc));
  if (v4) {
    put16(pkt.data() + 10, 0);
    put16(pkt.data() + 10, fold(sum16(pkt.data(), iph, 0)));
  }
  std::vector<std::byte> out(pkt.size());
  std::memcpy(out.data(), pkt.data(), pkt.size());
  return out;
}

Result<std::size_t> inject_packets(Sys& sys, const Endpoint& to,
                                   std::span<const std::vector<std::byte>> pkts,
                                   std::uint32_t mark) {
  if (pkts.empty()) {
    return std::size_t{0};
  }
  auto raw = open_raw(sys, to.family == IpFamily::v4);
  if (!raw) {
    return std::move(raw).take_error();
  }
  struct Closer {
    Sys& s;
    int fd;
    ~Closer() { s.close(fd); }
  } closer{sys, *raw};
  if (mark != 0) {
    RENDR_TRY(set_mark(sys, *raw, mark));
  }
  Endpoint dst = to;
  dst.port = 0;
  sockaddr_storage ss{};
  socklen_t sl = dst.to_sockaddr(ss);
  std::size_t sent = 0;
  for (const auto& p : pkts) {
    const ssize_t n =
        sys.sendto(*raw, p.data(), p.size(), 0, reinterpret_cast<sockaddr*>(&ss), sl);
    if (n != static_cast<ssize_t>(p.size())) {
      const std::string which = " (replayed packet " + std::to_string(sent + 1) + " of " +
                                std::to_string(pkts.size()) + ")";
      Error e = n < 0 ? errno_error("inject: sendto " + to.address_string())
                      : short_send(to, n, p.size());
      e.context += which;
      return e;
    }
    ++sent;
  }
  return sent;
}

Status inject_segment(Sys& sys, const ForgedSegment& seg, std::uint32_t mark) {
  auto raw = open_raw(sys, seg.from.family == IpFamily::v4);
  if (!raw) {
    return std::move(raw).take_error();
  }
  struct Closer {
    Sys& s;
    int fd;
    ~Closer() { s.close(fd); }
  } closer{sys, *raw};
  if (mark != 0) {
    RENDR_TRY(set_mark(sys, *raw, mark));
  }
  return send_on(sys, *raw, seg);
}

InjectCache::~InjectCache() {
  for (auto& e : entries_) {
    drop(e);
  }
}

void InjectCache::drop(Entry& e) {
  if (e.fd >= 0) {
    sys_.close(e.fd);
  }
  e = Entry{};
}

Status InjectCache::inject(const ForgedSegment& seg, std::uint32_t mark,
                           std::uint64_t netns_cookie) {
  const bool v4 = seg.from.family == IpFamily::v4;
  Entry& e = entries_[v4 ? 0 : 1];
  if (e.fd >= 0 && e.netns_cookie != netns_cookie) {
    drop(e);
  }
  if (e.fd < 0) {
    auto raw = open_raw(sys_, v4);
    if (!raw) {
      return std::move(raw).take_error();
    }
    e.fd = *raw;
    e.netns_cookie = netns_cookie;
    e.mark = 0;  // a new socket carries no mark
  }
  if (e.mark != mark) {
    if (auto st = set_mark(sys_, e.fd, mark); !st.ok()) {
      drop(e);
      return st;
    }
    e.mark = mark;
  }
  if (auto st = send_on(sys_, e.fd, seg); !st.ok()) {
    drop(e);  // never keep a socket that just failed
    return st;
  }
  return {};
}

}  // namespace rendr::repair
