// SPDX-License-Identifier: Apache-2.0
// The Stack: lwIP initialisation, the netif whose output writes to the TUN, the reader thread
// and the input/output shim (sequence offset, freeze/hold, listen-on-demand).
#include "stack_impl.hpp"

#include <pthread.h>
#include <rendr/common/log.hpp>
#include <rendr/userstack/tcp_packet.hpp>
#include <rendr/userstack/udp_packet.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <optional>
#include <random>
#include <unordered_set>

namespace rendr::userstack {
namespace {

std::atomic<bool> g_running{false};
std::once_flag g_tcpip_once;

// A dummy address for the netif (RFC 7600's IPv4 dummy address; the IPv6 discard prefix):
// lwIP needs one to route output, while the connections' own addresses come from the packets.
constexpr std::uint8_t kDummy4[4] = {192, 0, 0, 8};

err_t netif_out4(netif* n, pbuf* p, const ip4_addr_t* /*dst*/) {
  return static_cast<Stack::Impl*>(n->state)->output(p);
}
err_t netif_out6(netif* n, pbuf* p, const ip6_addr_t* /*dst*/) {
  return static_cast<Stack::Impl*>(n->state)->output(p);
}
err_t netif_init_cb(netif* n) {
  n->name[0] = 'r';
  n->name[1] = 't';
  n->output = netif_out4;
  n->output_ip6 = netif_out6;
  n->flags = 0;  // no broadcast, no ARP: a point-to-point L3 device
  return ERR_OK;
}
err_t netif_input_unused(pbuf* p, netif* /*n*/) {
  pbuf_free(p);
  return ERR_OK;
}

void signal_fd(int fd) {
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(fd, &one, sizeof one);
}

}  // namespace

Endpoint endpoint_of(const ip_addr_t& a, std::uint16_t port) {
  Endpoint e;
  e.port = port;
  if (IP_IS_V6_VAL(a)) {
    e.family = IpFamily::v6;
    std::memcpy(e.addr.data(), ip_2_ip6(&a)->addr, 16);
  } else {
    e.family = IpFamily::v4;
    std::memcpy(e.addr.data(), &ip_2_ip4(&a)->addr, 4);
  }
  return e;
}

ip_addr_t ip_addr_of(const Endpoint& e) {
  ip_addr_t a{};
  if (e.family == IpFamily::v6) {
    IP_SET_TYPE_VAL(a, IPADDR_TYPE_V6);
    std::memcpy(ip_2_ip6(&a)->addr, e.addr.data(), 16);
    ip6_addr_clear_zone(ip_2_ip6(&a));
  } else {
    IP_SET_TYPE_VAL(a, IPADDR_TYPE_V4);
    std::memcpy(&ip_2_ip4(&a)->addr, e.addr.data(), 4);
  }
  return a;
}

FourTuple tuple_of(const tcp_pcb* pcb) {
  return FourTuple{endpoint_of(pcb->local_ip, pcb->local_port),
                   endpoint_of(pcb->remote_ip, pcb->remote_port)};
}

Stack::Impl::Impl(const StackOptions& opts, TunDevice tun)
    : opts_(opts),
      tun_(std::move(tun)),
      flows_(opts.seed != 0 ? opts.seed
                            : (static_cast<std::uint64_t>(std::random_device{}()) << 32) ^
                                  std::random_device{}(),
             HoldLimits{opts.hold_max_packets, opts.hold_max_bytes}) {}

Stack::Impl::~Impl() { stop(); }

Status Stack::Impl::init() {
  stop_efd_ = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  accept_efd_ = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!stop_efd_ || !accept_efd_) {
    return errno_error("userstack: eventfd");
  }
  auto mtu = tun_.mtu();
  if (!mtu) {
    return std::move(mtu).take_error();
  }
  std::call_once(g_tcpip_once, [] { tcpip_init(nullptr, nullptr); });
  CoreLock lock;
  ip4_addr_t addr;
  ip4_addr_t mask;
  ip4_addr_t gw;
  IP4_ADDR(&addr, kDummy4[0], kDummy4[1], kDummy4[2], kDummy4[3]);
  IP4_ADDR(&mask, 255, 255, 255, 255);
  ip4_addr_set_zero(&gw);
  if (netif_add(&nif_, &addr, &mask, &gw, this, netif_init_cb, netif_input_unused) == nullptr) {
    return make_error(std::errc::io_error, "userstack: netif_add failed");
  }
  netif_added_ = true;
  nif_.mtu = static_cast<u16_t>(std::min(*mtu, 65535U));
  nif_.mtu6 = nif_.mtu;
  ip6_addr_t a6;
  IP6_ADDR(&a6, PP_HTONL(0x01000000UL), 0, 0, PP_HTONL(1UL));  // 100::1 (discard prefix)
  netif_ip6_addr_set(&nif_, 0, &a6);
  netif_ip6_addr_set_state(&nif_, 0, IP6_ADDR_PREFERRED);
  netif_set_default(&nif_);
  netif_set_link_up(&nif_);
  netif_set_up(&nif_);
  out_buf_.resize(sizeof(VnetHeader) + 65536);
  return {};
}

void Stack::Impl::stop() {
  if (reader_.joinable()) {
    signal_fd(stop_efd_.get());
    reader_.join();
  }
  if (netif_added_) {
    CoreLock lock;
    for (auto& [port, l] : listeners_) {
      tcp_arg(l, nullptr);
      tcp_accept(l, nullptr);
      tcp_close(l);
    }
    listeners_.clear();
    netif_set_down(&nif_);
    netif_remove(&nif_);
    netif_added_ = false;
    // lwIP is process-global: the connections it was finishing alone (closed ones in FIN_WAIT,
    // LAST_ACK, TIME_WAIT) and those still attached would outlive this Stack and retransmit
    // through the next one's device, into a network that never knew them (its kernel answers
    // with RST). Removed silently; an attached Connection sees a reset.
    while (tcp_active_pcbs != nullptr) {
      tcp_clear_flags(tcp_active_pcbs, TF_ACK_DELAY | TF_ACK_NOW);
      tcp_abandon(tcp_active_pcbs, 0);
    }
    while (tcp_tw_pcbs != nullptr) {
      tcp_abandon(tcp_tw_pcbs, 0);
    }
  }
  // Connections accepted but never handed out are closed outside the core lock (their
  // destructors take it).
  std::vector<ConnectionPtr> orphans;
  {
    CoreLock lock;
    orphans.swap(new_conns_);
  }
  orphans.clear();
  std::deque<ConnectionPtr> queued;
  {
    std::lock_guard<std::mutex> g(accept_mu_);
    queued.swap(accept_q_);
  }
  queued.clear();
}

void Stack::Impl::ensure_listener(std::uint16_t port) {
  if (listeners_.count(port) != 0) {
    return;
  }
  tcp_pcb* pcb = tcp_new_ip_type(IPADDR_TYPE_ANY);
  if (pcb == nullptr) {
    return;
  }
  ip_set_option(pcb, SOF_REUSEADDR);
  if (tcp_bind(pcb, IP_ANY_TYPE, port) != ERR_OK) {
    tcp_close(pcb);
    return;
  }
  tcp_pcb* l = tcp_listen(pcb);
  if (l == nullptr) {
    tcp_close(pcb);
    return;
  }
  tcp_arg(l, this);
  tcp_accept(l, &Stack::Impl::on_accept);
  listeners_[port] = l;
  ++c_.listeners;
}

err_t Stack::Impl::on_accept(void* arg, tcp_pcb* newpcb, err_t err) {
  auto* self = static_cast<Stack::Impl*>(arg);
  if (err != ERR_OK || newpcb == nullptr || self == nullptr) {
    return ERR_VAL;
  }
  if (self->opts_.send_mss != 0) {
    newpcb->mss = self->opts_.send_mss;
  }
  self->new_conns_.push_back(self->make_connection(newpcb));
  ++self->c_.accepted;
  return ERR_OK;
}

ConnectionPtr Stack::Impl::make_connection(tcp_pcb* pcb) {
  auto impl = std::make_unique<Connection::Impl>(*this, pcb, tuple_of(pcb));
  impl->attach(pcb);
  return std::make_unique<Connection>(std::move(impl));
}

void Stack::Impl::deliver_accepts() {
  std::vector<ConnectionPtr> batch;
  {
    CoreLock lock;
    batch.swap(new_conns_);
  }
  if (batch.empty()) {
    return;
  }
  std::function<void(ConnectionPtr)> h;
  {
    std::lock_guard<std::mutex> g(accept_mu_);
    h = accept_handler_;
    if (!h) {
      for (auto& c : batch) {
        accept_q_.push_back(std::move(c));
      }
      signal_fd(accept_efd_.get());
      return;
    }
  }
  for (auto& c : batch) {
    h(std::move(c));
  }
}

void Stack::Impl::feed(std::span<std::byte> pkt, bool replay) {
  auto parsed = parse_tcp(pkt);
  if (!parsed) {
    ++c_.rx_ignored;
    count_ignored(pkt);
    return;
  }
  const TcpPacket& tp = *parsed;
  FourTuple key{tp.dst, tp.src};
  if (!replay) {
    switch (flows_.inbound(key, pkt.first(tp.total_len))) {
      case InboundAction::held:
        ++c_.rx_held;
        return;
      case InboundAction::dropped:
        ++c_.rx_hold_dropped;
        return;
      case InboundAction::deliver:
        break;
    }
  }
  FlowEntry* flow = flows_.find(key);
  if (tp.syn() && !tp.has_ack()) {
    flow = &flows_.on_syn(key);
    ensure_listener(tp.dst.port);
  }
  if (flow != nullptr) {
    shift_ack(pkt, tp, 0U - flow->offset);
  }
  pbuf* p = pbuf_alloc(PBUF_RAW, static_cast<u16_t>(tp.total_len), PBUF_RAM);
  if (p == nullptr) {
    ++c_.rx_ignored;
    return;
  }
  pbuf_take(p, pkt.data(), static_cast<u16_t>(tp.total_len));
  ip_data.current_netif = &nif_;
  ip_data.current_input_netif = &nif_;
  if (tp.family == IpFamily::v4) {
    ip_data.current_ip4_header = static_cast<const ip_hdr*>(p->payload);
    ip_data.current_ip6_header = nullptr;
  } else {
    ip_data.current_ip4_header = nullptr;
    ip_data.current_ip6_header = static_cast<ip6_hdr*>(p->payload);
  }
  ip_data.current_ip_header_tot_len = static_cast<u16_t>(tp.ip_header_len);
  ip_data.current_iphdr_src = ip_addr_of(tp.src);
  ip_data.current_iphdr_dest = ip_addr_of(tp.dst);
  pbuf_remove_header(p, tp.ip_header_len);
  ++c_.rx_packets;
  tcp_input(p, &nif_);
  ip_data.current_netif = nullptr;
  ip_data.current_input_netif = nullptr;
  ip_data.current_ip4_header = nullptr;
  ip_data.current_ip6_header = nullptr;
  ip_data.current_ip_header_tot_len = 0;
  ip_addr_set_zero(&ip_data.current_iphdr_src);
  ip_addr_set_zero(&ip_data.current_iphdr_dest);
}

err_t Stack::Impl::output(pbuf* p) {
  const std::size_t hdr = sizeof(VnetHeader);
  if (p->tot_len + hdr > out_buf_.size()) {
    ++c_.tx_errors;
    return ERR_BUF;
  }
  std::memset(out_buf_.data(), 0, hdr);  // no GSO, checksums complete
  pbuf_copy_partial(p, out_buf_.data() + hdr, p->tot_len, 0);
  std::span<std::byte> pkt(out_buf_.data() + hdr, p->tot_len);
  auto parsed = parse_tcp(pkt);
  if (!parsed) {
    return ERR_OK;  // lwIP's own ICMPv6/MLD chatter: not ours to emit
  }
  FourTuple key{parsed->src, parsed->dst};
  if (FlowEntry* flow = flows_.find(key); flow != nullptr) {
    shift_seq(pkt, *parsed, flow->offset);
    // While frozen, what lwIP emits is held, not dropped: a rebuilt PCB transmits at once
    // (its in-flight bytes), and dropping that would leave them to lwIP's RTO (>= 1 s).
    switch (flows_.outbound(key, pkt)) {
      case InboundAction::held:
        ++c_.tx_held;
        return ERR_OK;
      case InboundAction::dropped:
        ++c_.tx_frozen_dropped;
        return ERR_OK;
      case InboundAction::deliver:
        break;
    }
  }
  ssize_t n = ::write(tun_.fd(), out_buf_.data(), hdr + p->tot_len);
  if (n < 0) {
    ++c_.tx_errors;  // TUN queue full (EAGAIN) or device down: TCP retransmits
    return ERR_OK;
  }
  ++c_.tx_packets;
  return ERR_OK;
}

void Stack::Impl::prune_flows() {
  CoreLock lock;
  std::unordered_set<FourTuple, FourTupleHash> live;
  for (tcp_pcb* list : {tcp_active_pcbs, tcp_tw_pcbs}) {
    for (tcp_pcb* p = list; p != nullptr; p = p->next) {
      live.insert(tuple_of(p));
    }
  }
  flows_.prune([&live](const FourTuple& t) { return live.count(t) != 0; });
}

void Stack::Impl::write_tun(std::span<const std::byte> pkt) {
  const std::size_t hdr = sizeof(VnetHeader);
  if (pkt.size() + hdr > out_buf_.size()) {
    ++c_.tx_errors;
    return;
  }
  std::memset(out_buf_.data(), 0, hdr);
  std::memcpy(out_buf_.data() + hdr, pkt.data(), pkt.size());
  if (::write(tun_.fd(), out_buf_.data(), hdr + pkt.size()) < 0) {
    ++c_.tx_errors;
    return;
  }
  ++c_.tx_packets;
}

void Stack::Impl::run() {
  auto next_prune = std::chrono::steady_clock::now() + kPruneInterval;
  for (;;) {
    if (std::chrono::steady_clock::now() >= next_prune) {
      prune_flows();
      next_prune = std::chrono::steady_clock::now() + kPruneInterval;
    }
    pollfd pf[2] = {{tun_.fd(), POLLIN, 0}, {stop_efd_.get(), POLLIN, 0}};
    int pr = ::poll(pf, 2, 1000);
    if (pr < 0 && errno != EINTR) {
      default_log_sink(LogLevel::error, "userstack: poll: " + std::string(std::strerror(errno)));
      return;
    }
    if ((pf[1].revents & POLLIN) != 0) {
      return;
    }
    if (read_batch((pf[0].revents & (POLLERR | POLLHUP | POLLNVAL)) != 0) < 0) {
      return;
    }
  }
}

int Stack::Impl::read_batch(bool error_seen) {
  constexpr std::size_t kCap = sizeof(VnetHeader) + 65536 + 256;
  if (bufs_.empty()) {
    bufs_.assign(kBatch, std::vector<std::byte>(kCap));
  }
  auto& bufs = bufs_;
  std::array<std::size_t, kBatch> lens{};
  std::size_t got = 0;
  bool gone = error_seen;
  while (got < kBatch && !gone) {
    ssize_t n = ::read(tun_.fd(), bufs[got].data(), kCap);
    if (n < 0) {
      // EBADFD: the device was deleted (tun_chr_poll reports POLLERR from then on, so
      // polling again would spin). EAGAIN: drained.
      gone = errno == EBADFD || errno == EIO;
      break;
    }
    if (static_cast<std::size_t>(n) <= sizeof(VnetHeader)) {
      continue;
    }
    lens[got] = static_cast<std::size_t>(n);
    ++got;
  }
  if (gone && got == 0) {
    default_log_sink(LogLevel::warn, "userstack: TUN device " + tun_.name() +
                                         " is gone; its connections cannot continue");
    device_gone_ = true;
    return -1;
  }
  if (got == 0) {
    return 0;
  }
  for (std::size_t i = 0; i < got; ++i) {
    VnetHeader vh;
    std::memcpy(&vh, bufs[i].data(), sizeof vh);
    std::span<std::byte> pkt(bufs[i].data() + sizeof vh, lens[i] - sizeof vh);
    if ((vh.flags & VnetHeader::kNeedsCsum) != 0 &&
        !complete_partial_checksum(pkt, vh.csum_start, vh.csum_offset)) {
      ++c_.rx_bad_checksum;
      lens[i] = 0;
    }
  }
  std::function<void(const UdpDatagram&)> udp;
  {
    std::lock_guard<std::mutex> g(udp_mu_);
    udp = udp_handler_;
  }
  if (udp) {
    for (std::size_t i = 0; i < got; ++i) {
      if (lens[i] != 0 &&
          hand_udp(std::span<const std::byte>(bufs[i].data() + sizeof(VnetHeader),
                                              lens[i] - sizeof(VnetHeader)),
                   udp)) {
        lens[i] = 0;
      }
    }
  }
  {
    CoreLock lock;
    for (std::size_t i = 0; i < got; ++i) {
      if (lens[i] != 0) {
        feed(std::span<std::byte>(bufs[i].data() + sizeof(VnetHeader),
                                  lens[i] - sizeof(VnetHeader)),
             false);
      }
    }
  }
  deliver_accepts();
  return static_cast<int>(got);
}

Stack::Stack(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Stack::~Stack() {
  impl_->stop();
  g_running = false;
}

Result<std::unique_ptr<Stack>> Stack::start(const StackOptions& opts) {
  bool expected = false;
  if (!g_running.compare_exchange_strong(expected, true)) {
    return make_error(std::errc::device_or_resource_busy,
                      "userstack: a Stack is already running in this process (lwIP is global: only "
                      "one Stack per process)");
  }
  auto tun = TunDevice::attach(opts.tun);
  if (!tun) {
    g_running = false;
    return std::move(tun).take_error().with_context("userstack");
  }
  auto impl = std::make_unique<Impl>(opts, std::move(tun).value());
  if (auto st = impl->init(); !st) {
    g_running = false;
    return std::move(st).take_error();
  }
  Impl* raw = impl.get();
  if (opts.reader_thread) {
    raw->reader_ = std::thread([raw] {
      (void)::pthread_setname_np(::pthread_self(), "us-tun-reader");  // per-thread CPU reports
      raw->run();
    });
  }
  return std::unique_ptr<Stack>(new Stack(std::move(impl)));
}

int Stack::tun_fd() const { return impl_->tun_.fd(); }

int Stack::poll_tun() {
  if (impl_->device_gone_) {
    return -1;
  }
  const auto now = std::chrono::steady_clock::now();
  if (now >= impl_->next_prune_) {
    impl_->prune_flows();
    impl_->next_prune_ = now + Impl::kPruneInterval;
  }
  int total = 0;
  for (int i = 0; i < 4; ++i) {  // bounded: the owner's other work runs between calls
    const int n = impl_->read_batch(false);
    if (n < 0) {
      return total > 0 ? total : -1;
    }
    total += n;
    if (n < static_cast<int>(Impl::kBatch)) {
      break;
    }
  }
  return total;
}

void Stack::set_accept_handler(std::function<void(ConnectionPtr)> h) {
  std::deque<ConnectionPtr> pending;
  {
    std::lock_guard<std::mutex> g(impl_->accept_mu_);
    impl_->accept_handler_ = h;
    pending.swap(impl_->accept_q_);
  }
  for (auto& c : pending) {
    h(std::move(c));
  }
}

Result<ConnectionPtr> Stack::accept(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    {
      std::lock_guard<std::mutex> g(impl_->accept_mu_);
      if (!impl_->accept_q_.empty()) {
        ConnectionPtr c = std::move(impl_->accept_q_.front());
        impl_->accept_q_.pop_front();
        return c;
      }
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return make_error(std::errc::timed_out, "userstack: no connection accepted in time");
    }
    pollfd pf{impl_->accept_efd_.get(), POLLIN, 0};
    ::poll(&pf, 1, static_cast<int>(left.count()));
    std::uint64_t v = 0;
    [[maybe_unused]] ssize_t r = ::read(impl_->accept_efd_.get(), &v, sizeof v);
  }
}

void Stack::freeze(const FourTuple& tuple) {
  CoreLock lock;
  impl_->flows_.freeze(tuple);
}

std::size_t Stack::thaw(const FourTuple& tuple) { return thaw(tuple, {}); }

std::size_t Stack::thaw(const FourTuple& tuple, std::vector<std::vector<std::byte>> first) {
  std::size_t n = 0;
  {
    CoreLock lock;
    for (auto& pkt : impl_->flows_.take_outbound(tuple)) {
      impl_->write_tun(pkt);
    }
    auto held = impl_->flows_.thaw(tuple);
    for (auto& pkt : first) {
      // Recorded elsewhere (a native source's tc freeze): the TCP checksum may be the partial
      // one of a CHECKSUM_PARTIAL skb, which lwIP's check drops silently (the peer then waits
      // for its RTO). repair's replay (prepare_replay) recomputes it likewise.
      if (auto tp = parse_tcp(pkt); tp) {
        set_tcp_checksum(pkt, *tp);
      }
      impl_->feed(pkt, true);
      ++n;
    }
    for (auto& pkt : held) {
      impl_->feed(pkt, true);
      ++n;
    }
  }
  impl_->c_.rx_replayed += n;
  impl_->deliver_accepts();
  return n;
}

std::vector<std::vector<std::byte>> Stack::take_held(const FourTuple& tuple) {
  CoreLock lock;
  impl_->c_.tx_discarded += impl_->flows_.take_outbound(tuple).size();
  auto held = impl_->flows_.thaw(tuple);
  return {std::make_move_iterator(held.begin()), std::make_move_iterator(held.end())};
}

std::optional<AckSeen> Stack::held_latest_ack(const FourTuple& tuple) {
  CoreLock lock;
  const FlowEntry* e = impl_->flows_.find(tuple);
  if (e == nullptr || !e->frozen) {
    return std::nullopt;
  }
  std::optional<AckSeen> best;
  for (const auto& pkt : e->held) {
    best = later_ack(best, ack_of(pkt));
  }
  return best;
}

bool Stack::Impl::hand_udp(std::span<const std::byte> pkt,
                           const std::function<void(const UdpDatagram&)>& h) {
  const auto u = parse_udp(pkt);
  if (!u) {
    return false;  // not UDP, or a fragment: the shim counts it
  }
  ++c_.rx_udp;
  h(UdpDatagram{u->src, u->dst, pkt.subspan(u->payload_offset, u->payload_len)});
  return true;
}

void Stack::set_udp_handler(std::function<void(const UdpDatagram&)> h) {
  std::lock_guard<std::mutex> g(impl_->udp_mu_);
  impl_->udp_handler_ = std::move(h);
}

Status Stack::inject(std::span<const std::byte> ip_packet) {
  if (ip_packet.size() > 65535) {
    return make_error(std::errc::message_size,
                      "userstack: inject: " + std::to_string(ip_packet.size()) + "-byte packet");
  }
  VnetHeader vh;  // no GSO, checksums complete
  iovec iov[2] = {{&vh, sizeof vh},
                  {const_cast<std::byte*>(ip_packet.data()), ip_packet.size()}};
  if (::writev(impl_->tun_.fd(), iov, 2) < 0) {
    ++impl_->c_.tx_errors;
    return errno_error("userstack: inject into " + impl_->tun_.name());
  }
  ++impl_->c_.tx_injected;
  return {};
}

void Stack::Impl::count_ignored(std::span<const std::byte> pkt) {
  // Identified, not carried: what the TUN sees besides TCP (the first header only for IPv6;
  // a fragment is counted as a fragment whatever it carries).
  const auto b = [&pkt](std::size_t i) { return static_cast<unsigned>(pkt[i]); };
  std::optional<unsigned> proto;
  if (pkt.size() >= 20 && (b(0) >> 4) == 4) {
    const unsigned frag = ((b(6) << 8) | b(7)) & 0x3fffU;  // MF flag and offset
    if (frag != 0) {
      ++c_.rx_fragments;
      return;
    }
    proto = b(9);
  } else if (pkt.size() >= 40 && (b(0) >> 4) == 6) {
    proto = b(6);
    if (*proto == 44) {
      ++c_.rx_fragments;
      return;
    }
  }
  if (proto == 1U || proto == 58U) {
    ++c_.rx_icmp;
  } else if (proto == 17U) {
    ++c_.rx_udp;
  }
}

StackCounters Stack::counters() const {
  const auto& c = impl_->c_;
  StackCounters s;
  s.rx_packets = c.rx_packets;
  s.rx_ignored = c.rx_ignored;
  s.rx_icmp = c.rx_icmp;
  s.rx_fragments = c.rx_fragments;
  s.rx_udp = c.rx_udp;
  s.rx_bad_checksum = c.rx_bad_checksum;
  s.rx_held = c.rx_held;
  s.rx_hold_dropped = c.rx_hold_dropped;
  s.rx_replayed = c.rx_replayed;
  s.tx_packets = c.tx_packets;
  s.tx_frozen_dropped = c.tx_frozen_dropped;
  s.tx_held = c.tx_held;
  {
    CoreLock lock;
    for (tcp_pcb* list : {tcp_active_pcbs, tcp_tw_pcbs}) {
      for (tcp_pcb* p = list; p != nullptr; p = p->next) {
        ++s.tcp_pcbs;
      }
    }
  }
  s.tx_discarded = c.tx_discarded;
  s.tx_errors = c.tx_errors;
  s.tx_injected = c.tx_injected;
  s.accepted = c.accepted;
  s.listeners = c.listeners;
  {
    CoreLock lock;
    s.flows = impl_->flows_.size();
  }
  return s;
}

const TunDevice& Stack::tun() const { return impl_->tun_; }

bool Stack::device_gone() const { return impl_->device_gone_.load(); }

}  // namespace rendr::userstack
