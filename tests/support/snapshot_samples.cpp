// SPDX-License-Identifier: Apache-2.0
#include "support/snapshot_samples.hpp"

#include <cstdint>

namespace rendr::test {
namespace {

Endpoint ep(const char* text) {
  auto e = Endpoint::parse(text);
  return e.ok() ? *e : Endpoint{};  // the literals below always parse; validate() catches slips
}

std::vector<std::byte> bytes(std::size_t n, std::uint8_t salt) {
  std::vector<std::byte> b(n);
  for (std::size_t i = 0; i < n; ++i) {
    b[i] = static_cast<std::byte>((i * 131U + salt) & 0xFFU);
  }
  return b;
}

TcpSnapshot base(bool v6) {
  TcpSnapshot s;
  if (v6) {
    s.tuple.local = ep("[fd99::1]:443");
    s.tuple.remote = ep("[fd00:1::2]:51000");
  } else {
    s.tuple.local = ep("10.99.0.1:443");
    s.tuple.remote = ep("10.0.1.2:51000");
  }
  s.state = TcpState::established;
  s.send_seq = 1000;
  s.recv_seq = 2000;
  s.mss_clamp = v6 ? 1440 : 1460;
  s.options.congestion = "cubic";
  s.options.sndbuf = 16384;
  s.options.rcvbuf = 131072;
  s.options.ttl = 64;
  return s;
}

void full_options(TcpSnapshot& s) {
  s.opt_sack = true;
  s.opt_timestamps = true;
  s.opt_wscale = true;
  s.snd_wscale = 7;
  s.rcv_wscale = 14;
  s.timestamp = 0xFEDCBA98U;
  s.has_window = true;
  s.window = TcpWindow{s.recv_seq, 64240, 65535, 65483, s.recv_seq};
  auto& o = s.options;
  o.nodelay = true;
  o.cork = true;
  o.keepalive = true;
  o.keepidle = 32767;
  o.keepintvl = 75;
  o.keepcnt = 127;
  o.user_timeout = 30000;
  o.congestion = "bbr_v2-X";
  o.mark = 0xC114;
  o.tos = 0xB8;
  o.ttl = 255;
  o.linger_on = true;
  o.linger_secs = 5;
  o.notsent_lowat = 16384;
  o.nonblocking = true;
}

}  // namespace

std::vector<SampleSnapshot> sample_snapshots() {
  std::vector<SampleSnapshot> out;
  for (bool v6 : {false, true}) {
    const std::string fam = v6 ? "-v6" : "-v4";

    out.push_back({"established-empty" + fam, base(v6)});

    TcpSnapshot q = base(v6);
    full_options(q);
    q.send_seq = 0xFFFFFF00U;  // wraps inside the send queue
    q.send_queue = bytes(3000, 7);
    q.send_unsent = 1000;
    q.recv_seq = 0xFFFFFFF0U;
    q.recv_queue = bytes(1500, 9);
    q.options.v6only = v6;
    out.push_back({"established-queues" + fam, q});

    TcpSnapshot fw1 = base(v6);  // our FIN sent, data still unacked
    fw1.state = TcpState::fin_wait1;
    fw1.fin_queued = true;
    fw1.fin_sent = true;
    fw1.send_queue = bytes(200, 1);
    out.push_back({"fin_wait1-sent" + fam, fw1});

    TcpSnapshot fw1u = base(v6);  // our FIN queued behind unsent data
    fw1u.state = TcpState::fin_wait1;
    fw1u.fin_queued = true;
    fw1u.send_queue = bytes(300, 2);
    fw1u.send_unsent = 100;
    out.push_back({"fin_wait1-unsent" + fam, fw1u});

    TcpSnapshot fw2 = base(v6);
    fw2.state = TcpState::fin_wait2;
    fw2.fin_queued = true;
    fw2.fin_sent = true;
    fw2.recv_queue = bytes(64, 3);
    out.push_back({"fin_wait2" + fam, fw2});

    TcpSnapshot cw = base(v6);
    full_options(cw);
    cw.has_window = false;  // kernel without TCP_REPAIR_WINDOW
    cw.window = {};
    cw.state = TcpState::close_wait;
    cw.peer_fin = true;
    cw.recv_queue = bytes(10, 4);
    out.push_back({"close_wait-nowindow" + fam, cw});

    TcpSnapshot la = base(v6);
    la.state = TcpState::last_ack;
    la.fin_queued = true;
    la.fin_sent = true;
    la.peer_fin = true;
    out.push_back({"last_ack" + fam, la});

    TcpSnapshot cl = base(v6);
    cl.state = TcpState::closing;
    cl.fin_queued = true;
    cl.fin_sent = true;
    cl.peer_fin = true;
    cl.send_queue = bytes(1, 5);
    out.push_back({"closing" + fam, cl});
  }

  TcpSnapshot scoped = base(true);
  scoped.tuple.local = ep("[fe80::1%3]:8080");
  scoped.tuple.remote = ep("[fe80::2%3]:65535");
  scoped.options.congestion.clear();
  out.push_back({"established-v6-scoped", scoped});

  TcpSnapshot mapped = base(true);
  mapped.tuple.local = ep("[::ffff:10.99.0.1]:443");
  mapped.tuple.remote = ep("[::ffff:10.0.1.2]:1");
  mapped.options.v6only = false;
  out.push_back({"established-v4mapped", mapped});
  return out;
}

}  // namespace rendr::test
