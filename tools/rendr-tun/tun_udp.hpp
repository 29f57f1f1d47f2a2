// SPDX-License-Identifier: Apache-2.0
// UdpIngress: UDP through rendr-tun (docs/tun-ingress.md "UDP"). The Stack hands every UDP
// datagram read from the TUN to on_datagram (reader thread: it only queues); each 5-tuple gets
// a flow (UdpTable: bounded, reaped when idle) whose worker asks the decision hook, dials an
// engine packet flow with the L3 identity (proto 17) and writes one packet per datagram, while
// a second thread reads the replies and injects them into the TUN as UDP datagrams from the
// original destination to the app. A denied or refused flow (and every later datagram of its
// 5-tuple until it is reaped) gets an ICMP destination-unreachable back, so a connected app
// socket sees an error instead of silence. Everything is counted (udp_* in the status).
#pragma once

#include "tun_dial.hpp"
#include "tun_roles.hpp"
#include "tun_status.hpp"
#include "tun_udp_table.hpp"

#include <rendr/userstack/stack.hpp>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

namespace rendr::tun {

class UdpIngress {
 public:
  // |o|, |dialers|, |status| and |stack| outlive the UdpIngress and its flows' threads (the
  // ingress runs until the process ends).
  UdpIngress(const IngressOptions& o, Dialers& dialers, TunStatus& status, userstack::Stack& stack);
  ~UdpIngress();
  UdpIngress(const UdpIngress&) = delete;
  UdpIngress& operator=(const UdpIngress&) = delete;

  // on_datagram: one datagram from the TUN (the Stack's UDP handler). Never blocks on the
  // network.
  void on_datagram(const userstack::UdpDatagram& d);

 private:
  struct Flow;
  using FlowPtr = std::shared_ptr<Flow>;
  void run_flow(const FlowPtr& f);
  void receive(const FlowPtr& f, PacketConn& conn);
  // fail ends |f| as refused (once): counted udp_refused_<reason>, queued datagrams dropped,
  // the app told by an ICMP unreachable; later datagrams of the 5-tuple get one each.
  void fail(const FlowPtr& f, const std::string& reason);
  void unreachable(const Flow& f);
  void janitor();

  const IngressOptions& o_;
  Dialers& dialers_;
  TunStatus& status_;
  userstack::Stack& stack_;
  std::mutex mu_;
  UdpTable<FlowPtr> table_;  // (mu_)
  bool stop_ = false;        // (mu_)
  std::condition_variable stop_cv_;
  std::thread janitor_;
};

}  // namespace rendr::tun
