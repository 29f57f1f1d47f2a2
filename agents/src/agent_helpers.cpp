// SPDX-License-Identifier: Apache-2.0
// Small host helpers of rendr-agent (see agent_internal.hpp).
#include "agent_internal.hpp"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <dirent.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>

namespace rendr::agents {

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

std::optional<repair::PeerAck> decode_peer_ack(std::uint64_t v) {
  if ((v >> 48) != 1) {
    return std::nullopt;
  }
  return repair::PeerAck{static_cast<std::uint32_t>(v), static_cast<std::uint16_t>(v >> 32)};
}

std::uint64_t encode_peer_ack(const repair::PeerAck& pa) {
  return (std::uint64_t{1} << 48) | (std::uint64_t{pa.window} << 32) | pa.ack;
}

std::string fmt_ms(Clock::time_point a, Clock::time_point b) {
  char out[32];
  std::snprintf(out, sizeof out, "%.2f", std::chrono::duration<double, std::milli>(b - a).count());
  return out;
}


// peer_in_our_netns: whether the process at the other end of control socket |fd| lives in this
// agent's network namespace (then its sockets can be looked up here).
bool peer_in_our_netns(int fd) {
  ucred cred{};
  socklen_t cl = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 || cred.pid <= 0) {
    return false;
  }
  struct stat theirs {};
  struct stat ours {};
  const std::string path = "/proc/" + std::to_string(cred.pid) + "/ns/net";
  return ::stat(path.c_str(), &theirs) == 0 && ::stat("/proc/self/ns/net", &ours) == 0 &&
         theirs.st_ino == ours.st_ino && theirs.st_dev == ours.st_dev;
}

// socket_closed: the TCP socket |fd| reached CLOSE (the peer reset it, or both sides closed
// it): nothing of the connection is left to move.
bool socket_closed(int fd) {
  tcp_info ti{};
  socklen_t len = sizeof ti;
  return ::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 && ti.tcpi_state == TCP_CLOSE;
}


FdRoom fd_room() {
  FdRoom r;
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) {
    r.flows = SIZE_MAX;
    return r;
  }
  r.limit = rl.rlim_cur;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') {
        ++r.open;
      }
    }
    ::closedir(d);
    r.open = r.open > 0 ? r.open - 1 : 0;  // the directory's own descriptor
  }
  const std::uint64_t reserve = std::max<std::uint64_t>(32, r.limit / 16);
  r.flows = r.limit > r.open + reserve ? static_cast<std::size_t>((r.limit - r.open - reserve) / 2)
                                       : 0;
  return r;
}

std::uint64_t u64_of(const std::string& s) { return std::strtoull(s.c_str(), nullptr, 10); }


Result<asio::ip::tcp::endpoint> tcp_endpoint(const std::string& text) {
  auto ep = Endpoint::parse(text);
  if (!ep) {
    return std::move(ep).take_error();
  }
  sockaddr_storage ss{};
  socklen_t len = ep->to_sockaddr(ss);
  asio::ip::tcp::endpoint out;
  std::memcpy(out.data(), &ss, len);
  out.resize(len);
  return out;
}

std::vector<std::string> default_ifaces() {
  std::vector<std::string> out;
  ifaddrs* ifa = nullptr;
  if (::getifaddrs(&ifa) != 0) {
    return out;
  }
  for (ifaddrs* i = ifa; i != nullptr; i = i->ifa_next) {
    if ((i->ifa_flags & IFF_LOOPBACK) != 0 || (i->ifa_flags & IFF_UP) == 0) {
      continue;
    }
    if (std::find(out.begin(), out.end(), i->ifa_name) == out.end()) {
      out.emplace_back(i->ifa_name);
    }
  }
  ::freeifaddrs(ifa);
  return out;
}

std::string peer_common_name(SSL* ssl) {
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) {
    return {};
  }
  char cn[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
  X509_free(cert);
  return cn;
}

}  // namespace rendr::agents
