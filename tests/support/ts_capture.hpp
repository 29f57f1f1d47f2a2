// SPDX-License-Identifier: Apache-2.0
// TsCapture: records the TCP timestamp value (TSval) of every segment a network namespace sends
// from local port |port|, with the time the kernel handed it to the device (AF_PACKET tap,
// SO_TIMESTAMPNS), so a test can check that a connection's timestamp clock never went back
// across moves - at the source. The peer's PAWS counter cannot tell: it also counts segments
// that were reordered on the way (veth backlogs on different CPUs under load), which no move
// causes. ts_went_back merges the captures of several namespaces in tap order.
#pragma once

#include "support/netns.hpp"

#include <rendr/common/unique_fd.hpp>

#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace rendr::test {

struct TsSegment {
  std::int64_t tap_ns = 0;  // CLOCK_REALTIME when the segment reached the device
  std::uint32_t tsval = 0;
  std::uint32_t seq = 0;
  int where = 0;  // the capture's index in ts_went_back's list
};

// parse_tsval: the source port, SEQ and TSval of an IPv4/IPv6 TCP packet (no extension
// headers); false when it is not TCP or has no timestamp option.
inline bool parse_tsval(const std::uint8_t* p, std::size_t n, std::uint16_t proto,
                        std::uint16_t& sport, std::uint32_t& seq, std::uint32_t& tsval) {
  std::size_t off = 0;
  if (proto == ETH_P_IP) {
    if (n < 20 || p[9] != IPPROTO_TCP) {
      return false;
    }
    off = static_cast<std::size_t>(p[0] & 0x0F) * 4;
  } else if (proto == ETH_P_IPV6) {
    if (n < 40 || p[6] != IPPROTO_TCP) {
      return false;
    }
    off = 40;
  } else {
    return false;
  }
  if (n < off + 20) {
    return false;
  }
  const std::uint8_t* t = p + off;
  sport = static_cast<std::uint16_t>((t[0] << 8) | t[1]);
  seq = (static_cast<std::uint32_t>(t[4]) << 24) | (static_cast<std::uint32_t>(t[5]) << 16) |
        (static_cast<std::uint32_t>(t[6]) << 8) | t[7];
  const std::size_t doff = static_cast<std::size_t>(t[12] >> 4) * 4;
  if (doff < 20 || n < off + doff) {
    return false;
  }
  for (std::size_t i = 20; i < doff;) {
    const std::uint8_t kind = t[i];
    if (kind == 0) {
      break;
    }
    if (kind == 1) {
      ++i;
      continue;
    }
    if (i + 1 >= doff || t[i + 1] < 2 || i + t[i + 1] > doff) {
      break;
    }
    if (kind == 8 && t[i + 1] == 10) {
      tsval = (static_cast<std::uint32_t>(t[i + 2]) << 24) |
              (static_cast<std::uint32_t>(t[i + 3]) << 16) |
              (static_cast<std::uint32_t>(t[i + 4]) << 8) | t[i + 5];
      return true;
    }
    i += t[i + 1];
  }
  return false;
}

class TsCapture {
 public:
  TsCapture(const Netns& ns, std::uint16_t port) : port_(port) {
    {
      NetnsScope in(ns);
      fd_ = UniqueFd(::socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ALL)));
    }
    if (!fd_) {
      throw std::runtime_error("TsCapture: AF_PACKET socket: " + std::string(std::strerror(errno)));
    }
    const int on = 1;
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
    const int buf = 64 << 20;
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf);
    thread_ = std::thread([this] { run(); });
  }
  ~TsCapture() { stop(); }
  TsCapture(const TsCapture&) = delete;
  TsCapture& operator=(const TsCapture&) = delete;

  // stop ends the capture (what the socket holds is read first) and returns the segments.
  std::vector<TsSegment> stop() {
    if (thread_.joinable()) {
      stop_ = true;
      thread_.join();
    }
    return segs_;
  }
  // drops: segments the kernel dropped because the capture's buffer was full (missed, so a
  // check over the rest sees less, never a false step back).
  [[nodiscard]] unsigned drops() const { return drops_; }

 private:
  void run() {
    std::uint8_t pkt[256];
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(timespec))];
    for (;;) {
      pollfd p{fd_.get(), POLLIN, 0};
      const int r = ::poll(&p, 1, 50);
      if (r <= 0) {
        if (stop_) {
          break;
        }
        continue;
      }
      sockaddr_ll from{};
      iovec iov{pkt, sizeof pkt};
      msghdr mh{};
      mh.msg_name = &from;
      mh.msg_namelen = sizeof from;
      mh.msg_iov = &iov;
      mh.msg_iovlen = 1;
      mh.msg_control = ctl;
      mh.msg_controllen = sizeof ctl;
      const ssize_t n = ::recvmsg(fd_.get(), &mh, MSG_TRUNC | MSG_DONTWAIT);
      if (n <= 0 || from.sll_pkttype != PACKET_OUTGOING) {
        continue;
      }
      std::uint16_t sport = 0;
      std::uint32_t seq = 0;
      std::uint32_t tsval = 0;
      if (!parse_tsval(pkt, std::min<std::size_t>(static_cast<std::size_t>(n), sizeof pkt),
                       ntohs(from.sll_protocol), sport, seq, tsval) ||
          sport != port_) {
        continue;
      }
      TsSegment s;
      s.tsval = tsval;
      s.seq = seq;
      for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
          timespec ts{};
          std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
          s.tap_ns = static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
        }
      }
      segs_.push_back(s);
    }
    tpacket_stats st{};
    socklen_t len = sizeof st;
    if (::getsockopt(fd_.get(), SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) {
      drops_ = st.tp_drops;
    }
  }

  std::uint16_t port_;
  UniqueFd fd_;
  std::atomic<bool> stop_{false};
  std::vector<TsSegment> segs_;  // the reader thread's until stop()
  unsigned drops_ = 0;
  std::thread thread_;
};

// ts_went_back merges |captures| (each stopped) in tap order and returns the first segment
// whose TSval is lower than one sent before it ("" when the clock never went back), naming
// the capture index of both.
inline std::string ts_went_back(const std::vector<std::vector<TsSegment>>& captures,
                                std::size_t* total = nullptr) {
  std::vector<TsSegment> all;
  for (std::size_t i = 0; i < captures.size(); ++i) {
    for (TsSegment s : captures[i]) {
      s.where = static_cast<int>(i);
      all.push_back(s);
    }
  }
  std::stable_sort(all.begin(), all.end(),
                   [](const TsSegment& a, const TsSegment& b) { return a.tap_ns < b.tap_ns; });
  if (total != nullptr) {
    *total = all.size();
  }
  for (std::size_t i = 1, top = 0; i < all.size(); ++i) {
    if (static_cast<std::int32_t>(all[i].tsval - all[top].tsval) < 0) {
      return "TSval " + std::to_string(all[i].tsval) + " (capture " +
             std::to_string(all[i].where) + ", seq " + std::to_string(all[i].seq) + ") after " +
             std::to_string(all[top].tsval) + " (capture " + std::to_string(all[top].where) +
             ", seq " + std::to_string(all[top].seq) + ", " +
             std::to_string((all[i].tap_ns - all[top].tap_ns) / 1000) + " us earlier)";
    }
    top = i;
  }
  return "";
}

}  // namespace rendr::test
