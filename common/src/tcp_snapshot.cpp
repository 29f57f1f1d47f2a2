// SPDX-License-Identifier: Apache-2.0
#include <rendr/common/tcp_snapshot.hpp>

namespace rendr {

std::string_view to_string(TcpState s) {
  switch (s) {
    case TcpState::established: return "ESTABLISHED";
    case TcpState::syn_sent: return "SYN_SENT";
    case TcpState::syn_recv: return "SYN_RECV";
    case TcpState::fin_wait1: return "FIN_WAIT1";
    case TcpState::fin_wait2: return "FIN_WAIT2";
    case TcpState::time_wait: return "TIME_WAIT";
    case TcpState::close: return "CLOSE";
    case TcpState::close_wait: return "CLOSE_WAIT";
    case TcpState::last_ack: return "LAST_ACK";
    case TcpState::listen: return "LISTEN";
    case TcpState::closing: return "CLOSING";
  }
  return "UNKNOWN";
}

bool snapshot_state_supported(TcpState s) {
  switch (s) {
    case TcpState::established:
    case TcpState::fin_wait1:
    case TcpState::fin_wait2:
    case TcpState::close_wait:
    case TcpState::last_ack:
    case TcpState::closing:
      return true;
    default:
      return false;
  }
}

namespace {

Status invalid(const std::string& what) {
  return refusal(std::errc::invalid_argument, "snapshot: " + what);
}

bool state_has_our_fin(TcpState s) {
  return s == TcpState::fin_wait1 || s == TcpState::fin_wait2 || s == TcpState::closing ||
         s == TcpState::last_ack;
}
bool state_has_peer_fin(TcpState s) {
  return s == TcpState::close_wait || s == TcpState::last_ack || s == TcpState::closing;
}

}  // namespace

Status validate(const TcpSnapshot& s) {
  if (!snapshot_state_supported(s.state)) {
    return invalid("state " + std::string(to_string(s.state)) + " (" +
                   std::to_string(static_cast<int>(s.state)) + ") is not supported");
  }
  for (const Endpoint* e : {&s.tuple.local, &s.tuple.remote}) {
    if (e->family != IpFamily::v4 && e->family != IpFamily::v6) {
      return invalid("address family " + std::to_string(static_cast<int>(e->family)));
    }
    if (e->port == 0) {
      return invalid("port 0 in " + e->to_string());
    }
  }
  if (s.tuple.local.family != s.tuple.remote.family) {
    return invalid("local and remote address families differ");
  }
  if (s.send_queue.size() > TcpSnapshot::kMaxQueueBytes ||
      s.recv_queue.size() > TcpSnapshot::kMaxQueueBytes) {
    return invalid("queue larger than " + std::to_string(TcpSnapshot::kMaxQueueBytes) + " bytes");
  }
  if (s.send_unsent > s.send_queue.size()) {
    return invalid("send_unsent " + std::to_string(s.send_unsent) + " exceeds send queue " +
                   std::to_string(s.send_queue.size()));
  }
  if (s.fin_queued != state_has_our_fin(s.state)) {
    return invalid("fin_queued does not match state " + std::string(to_string(s.state)));
  }
  if (s.peer_fin != state_has_peer_fin(s.state)) {
    return invalid("peer_fin does not match state " + std::string(to_string(s.state)));
  }
  if (s.fin_sent && !s.fin_queued) {
    return invalid("fin_sent without fin_queued");
  }
  if (s.fin_sent && s.send_unsent != 0) {
    return invalid("FIN sent but data behind it is unsent");
  }
  if (s.state == TcpState::fin_wait2 && (!s.fin_sent || !s.send_queue.empty())) {
    return invalid("FIN_WAIT2 with unacknowledged data or unsent FIN");
  }
  if (s.mss_clamp == 0 || s.mss_clamp > 65535) {
    return invalid("mss_clamp " + std::to_string(s.mss_clamp) + " not in 1..65535");
  }
  if (s.snd_wscale > 14 || s.rcv_wscale > 14) {
    return invalid("window scale above 14");
  }
  if (!s.opt_wscale && (s.snd_wscale != 0 || s.rcv_wscale != 0)) {
    return invalid("window scale values without the window scale option");
  }
  if (s.has_window && s.window.max_window < s.window.snd_wnd) {
    return invalid("max_window below snd_wnd");
  }
  const auto& o = s.options;
  if (o.congestion.size() > 15) {
    return invalid("congestion control name longer than 15 characters");
  }
  for (char c : o.congestion) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '_' || c == '-')) {
      return invalid("congestion control name has a character outside [A-Za-z0-9_-]");
    }
  }
  if (o.tos > 255 || o.ttl > 255) {
    return invalid("tos/ttl above 255");
  }
  if (o.linger_secs > 0x7FFFFFFFU || o.keepidle > 32767 || o.keepintvl > 32767 ||
      o.keepcnt > 127 || o.sndbuf > 0x7FFFFFFFU || o.rcvbuf > 0x7FFFFFFFU ||
      o.user_timeout > 0x7FFFFFFFU || o.notsent_lowat > 0x7FFFFFFFU) {
    return invalid("socket option value out of the kernel's range");
  }
  return {};
}

}  // namespace rendr
