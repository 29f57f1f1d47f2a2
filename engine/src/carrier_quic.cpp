// SPDX-License-Identifier: Apache-2.0
// The quic carrier, stream mode: rendr frames (u16 length prefix, as over tcp) on one QUIC
// bidirectional stream. QuicLink is the Asio shell around the I/O-free QuicConn; dial_quic
// makes a dialing link and waits (on the calling thread) for the handshake.
#include "quic_link.hpp"

#include <rendr/common/endpoint.hpp>

#include <asio/post.hpp>

#include <linux/udp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <utility>

namespace rendr {

namespace detail {

namespace {
constexpr std::size_t kBurstPackets = 64;
constexpr QuicTime kTimerTick = 1'000'000;  // ns: see arm_timer
// A write completes once no more than this is unacknowledged: the writer waits on the peer.
constexpr std::uint64_t kSendLimit = 4 << 20;
constexpr QuicTime kLinger = 2'000'000'000ULL;  // close(): unacknowledged data gets 2 s
constexpr std::size_t kGsoBytes = 65000;          // one UDP send with UDP_SEGMENT
constexpr int kGsoSegments = 64;
constexpr QuicTime kOldSocketLinger = 300'000'000ULL;  // a rebind still reads the old socket
}  // namespace

QuicTime quic_now() {
  return static_cast<QuicTime>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

QuicLink::QuicLink(asio::io_context& io, std::shared_ptr<asio::ip::udp::socket> sock,
                   bool own_socket, std::unique_ptr<QuicConn> qc)
    : io_(io), sock_(std::move(sock)), own_(own_socket), qc_(std::move(qc)), timer_(io) {
  note_remote();
}

QuicLink::~QuicLink() = default;

std::error_code QuicLink::error() const {
  if (qc_->failed()) {
    return qc_->failed()->code;
  }
  return closed_ ? std::make_error_code(std::errc::not_connected) : std::error_code{};
}

QuicRecvBatch::QuicRecvBatch()
    : buf_(kCount * kSlot), msgs_(kCount), iov_(kCount), from_(kCount) {}

int QuicRecvBatch::recv(int fd) {
  for (std::size_t i = 0; i < static_cast<std::size_t>(kCount); ++i) {
    iov_[i] = iovec{buf_.data() + i * kSlot, kSlot};
    msgs_[i] = mmsghdr{};
    msgs_[i].msg_hdr.msg_iov = &iov_[i];
    msgs_[i].msg_hdr.msg_iovlen = 1;
    msgs_[i].msg_hdr.msg_name = &from_[i].ss;
    msgs_[i].msg_hdr.msg_namelen = sizeof from_[i].ss;
  }
  const int n = ::recvmmsg(fd, msgs_.data(), kCount, MSG_DONTWAIT, nullptr);
  for (int i = 0; i < n; ++i) {
    from_[static_cast<std::size_t>(i)].len = msgs_[static_cast<std::size_t>(i)].msg_hdr.msg_namelen;
  }
  return n < 0 ? 0 : n;
}

std::span<const std::byte> QuicRecvBatch::packet(int i) const {
  const auto& m = msgs_[static_cast<std::size_t>(i)];
  if ((m.msg_hdr.msg_flags & MSG_TRUNC) != 0) {
    return {};
  }
  return {buf_.data() + static_cast<std::size_t>(i) * kSlot, m.msg_len};
}

void QuicLink::start() {
  if (own_) {
    read_own();
  }
  service();
}

void QuicLink::read_own() { read_old(sock_); }

void QuicLink::read_old(const std::shared_ptr<asio::ip::udp::socket>& sock) {
  sock->async_wait(asio::socket_base::wait_read, [self = shared_from_this(),
                                                  sock](std::error_code ec) {
    if (ec || self->finished_) {
      return;
    }
    const bool current = sock == self->sock_;
    const QuicAddr* to = nullptr;
    for (const auto& o : self->old_) {
      if (o.sock == sock) {
        to = &o.local;
      }
    }
    // A bounded batch (ICMP errors on a datagram socket end it: QUIC's timers decide).
    for (int round = 0; round < 2; ++round) {
      const int n = self->rx_.recv(sock->native_handle());
      const QuicTime now = quic_now();
      for (int i = 0; i < n; ++i) {
        const auto pkt = self->rx_.packet(i);
        if (!pkt.empty()) {
          self->qc_->on_datagram(pkt, self->rx_.from(i), now, to);
        }
      }
      if (n < 32) {
        break;
      }
    }
    self->service();
    if (self->finished_) {
      return;
    }
    if (current || std::any_of(self->old_.begin(), self->old_.end(),
                               [&](const OldSocket& o) { return o.sock == sock; })) {
      self->read_old(sock);
    }
  });
}

Status QuicLink::rebind(const std::string& local_addr) {
  if (!own_) {
    return make_error(std::errc::invalid_argument,
                      "quic rebind: only the dialing side of a path rebinds");
  }
  if (finished_ || closed_) {
    return make_error(std::errc::not_connected, "quic rebind: the carrier is closed");
  }
  auto ep = parse_udp_endpoint(local_addr);
  if (!ep) {
    return std::move(ep).take_error().with_context("quic rebind");
  }
  auto ns = std::make_shared<asio::ip::udp::socket>(io_);
  std::error_code ec;
  ns->open(ep->protocol(), ec);
  if (!ec) {
    ns->bind(*ep, ec);
  }
  if (ec) {
    return Error{ec, "quic rebind: bind " + local_addr};
  }
  const auto& r = qc_->remote();
  if (::connect(ns->native_handle(), reinterpret_cast<const sockaddr*>(&r.ss), r.len) != 0) {
    return errno_error("quic rebind: connect");
  }
  QuicAddr addr;
  addr.len = sizeof addr.ss;
  ::getsockname(ns->native_handle(), reinterpret_cast<sockaddr*>(&addr.ss), &addr.len);
  flush_tx();  // what was batched leaves from the old socket
  const QuicAddr old_local = qc_->local();
  RENDR_TRY(qc_->migrate(addr, quic_now()));
  old_.push_back(OldSocket{sock_, old_local, quic_now() + kOldSocketLinger});
  sock_ = std::move(ns);
  local = fd_local(sock_->native_handle());
  no_gso_ = false;
  ++rebinds_;
  read_own();
  post_service();  // never service() here: the engine calls rebind with its lock held
  return {};
}

void QuicLink::on_datagram(std::span<const std::byte> pkt, const QuicAddr& from) {
  if (finished_) {
    return;
  }
  qc_->on_datagram(pkt, from, quic_now());
  post_service();
}

void QuicLink::post_service() {
  if (service_posted_) {
    return;
  }
  service_posted_ = true;
  asio::post(io_, [self = shared_from_this()] {
    self->service_posted_ = false;
    self->service();
  });
}

namespace {
bool same_addr(const QuicAddr& a, const QuicAddr& b) {
  return a.len == b.len && std::memcmp(&a.ss, &b.ss, a.len) == 0;
}

std::string addr_string(const QuicAddr& a) {
  auto e = Endpoint::from_sockaddr(reinterpret_cast<const sockaddr*>(&a.ss), a.len);
  return e ? e->to_string() : std::string{};
}
}  // namespace

void QuicLink::note_remote() {
  const QuicAddr& r = qc_->remote();
  if (same_addr(r, remote_seen_)) {
    return;
  }
  remote_seen_ = r;
  std::string text = addr_string(r);
  std::lock_guard lk(remote_mu_);
  remote_text_ = std::move(text);
}

std::string QuicLink::remote_text() const {
  std::lock_guard lk(remote_mu_);
  return remote_text_;
}

std::size_t QuicLink::pending_input() const {
  std::error_code ec;
  const std::size_t n = sock_ && sock_->is_open() ? sock_->available(ec) : 0;
  return ec ? 0 : n;
}

void QuicLink::send_packet(std::span<const std::byte> pkt) {
  // The packet's path: a migrating connection still sends some packets on the old one (path
  // validation, ngtcp2's fallback), from the old socket (dialing side) or to the peer's old
  // address (listener side).
  std::shared_ptr<asio::ip::udp::socket> s = sock_;
  if (own_) {
    for (const auto& o : old_) {
      if (same_addr(o.local, qc_->tx_local())) {
        s = o.sock;
      }
    }
  }
  const QuicAddr& to = own_ ? qc_->remote() : qc_->tx_remote();
  if (nseg_ > 0 && (s != tx_sock_ || !same_addr(to, tx_to_))) {
    flush_tx();
  }
  tx_sock_ = s;
  tx_to_ = to;
  // Packets of one size in a row go out as one GSO send (UDP_SEGMENT): one syscall for up to
  // ~44 packets. A shorter packet ends a batch (only the last segment may be short).
  const bool fits = nseg_ > 0 && !last_short_ && pkt.size() <= seg_ &&
                    txbuf_.size() + pkt.size() <= kGsoBytes && nseg_ < kGsoSegments && !no_gso_;
  if (nseg_ > 0 && !fits) {
    flush_tx();
  }
  if (nseg_ == 0) {
    seg_ = pkt.size();
  }
  last_short_ = pkt.size() < seg_;
  txbuf_.insert(txbuf_.end(), pkt.begin(), pkt.end());
  ++nseg_;
}

void QuicLink::flush_tx() {
  if (nseg_ == 0) {
    return;
  }
  const auto& r = tx_to_;
  const int fd = (tx_sock_ ? tx_sock_ : sock_)->native_handle();
  iovec iov{txbuf_.data(), txbuf_.size()};
  msghdr msg{};
  if (!own_) {
    msg.msg_name = const_cast<sockaddr_storage*>(&r.ss);
    msg.msg_namelen = r.len;
  }
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(std::uint16_t))] = {};
  if (nseg_ > 1) {
    msg.msg_control = ctrl;
    msg.msg_controllen = sizeof ctrl;
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = IPPROTO_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(std::uint16_t));
    const auto seg = static_cast<std::uint16_t>(seg_);
    std::memcpy(CMSG_DATA(cm), &seg, sizeof seg);
  }
  // Never blocks: a full socket buffer loses the packets, and QUIC's recovery resends them.
  if (::sendmsg(fd, &msg, MSG_DONTWAIT) < 0 && nseg_ > 1 &&
      (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT)) {
    no_gso_ = true;  // no GSO on this route: one packet per send from now on
    for (std::size_t off = 0; off < txbuf_.size(); off += seg_) {
      iov.iov_base = txbuf_.data() + off;
      iov.iov_len = std::min(seg_, txbuf_.size() - off);
      msg.msg_control = nullptr;
      msg.msg_controllen = 0;
      (void)::sendmsg(fd, &msg, MSG_DONTWAIT);
    }
  }
  txbuf_.clear();
  nseg_ = 0;
  last_short_ = false;
}

void QuicLink::service() {
  if (finished_) {
    complete_ops();
    return;
  }
  std::size_t sent = 0;
  const QuicTime now = quic_now();
  if (!old_.empty()) {
    std::erase_if(old_, [now](OldSocket& o) {
      if (now < o.until) {
        return false;
      }
      std::error_code ec;
      o.sock->close(ec);
      return true;
    });
  }
  qc_->produce(now, kBurstPackets, [&](std::span<const std::byte> pkt) {
    send_packet(pkt);
    ++sent;
  });
  flush_tx();
  note_remote();
  complete_ops();
  if (qc_->failed()) {
    finish("failed");  // watchers hear of it from there
    return;
  }
  if (closed_ && ((qc_->unacked() == 0 && qc_->datagrams_queued() == 0) ||
                  now >= linger_until_)) {
    finish("closed by rendr");  // what was written before close() got through (or timed out)
    return;
  }
  arm_timer();
  if (sent >= kBurstPackets) {
    post_service();  // more to send: let other connections run in between
  }
  notify();
}

void QuicLink::notify() {
  if (on_change) {
    auto cb = on_change;  // may reset on_change
    cb();
  }
}

void QuicLink::complete_ops() {
  const std::error_code err = error();
  if (read_h_ && (qc_->readable() > 0 || err)) {
    auto h = std::move(read_h_);
    read_h_ = nullptr;
    if (qc_->readable() > 0 && !closed_) {
      const std::size_t n = qc_->read(read_buf_);
      h({}, n);
      if (!closed_) {
        post_service();  // the credit read() gave may be worth a MAX_STREAM_DATA
      }
    } else {
      h(err, 0);
    }
  }
  if (write_h_ && (qc_->unacked() <= kSendLimit || err)) {
    auto h = std::move(write_h_);
    write_h_ = nullptr;
    h(err, err ? 0 : write_n_);
  }
  if (on_packet_) {
    auto& in = qc_->datagrams_in();
    while (!in.empty() && !closed_) {
      auto d = std::move(in.front());
      in.pop_front();
      on_packet_(d);
      qc_->recycle_datagram(std::move(d));
    }
  }
  if (on_error_ && err && !error_told_ && !closed_) {
    error_told_ = true;
    auto h = on_error_;
    h(err);
  }
  if (writable_h_ && (qc_->datagrams_queued() < qc_->datagram_queue_limit() / 2 || err)) {
    auto h = std::move(writable_h_);
    writable_h_ = nullptr;
    h(err);
  }
}

void QuicLink::start_packets(std::function<void(std::span<const std::byte>)> on_packet,
                             std::function<void(std::error_code)> on_error) {
  on_packet_ = std::move(on_packet);
  on_error_ = std::move(on_error);
  post_service();  // datagrams that came before start (never from inside this call)
}

std::error_code QuicLink::send_datagram(std::span<const std::byte> frame) {
  if (const auto err = error(); err) {
    return err;
  }
  if (qc_->datagrams_queued() >= qc_->datagram_queue_limit()) {
    return std::make_error_code(std::errc::operation_would_block);
  }
  if (!qc_->send_datagram(frame)) {
    return std::make_error_code(std::errc::message_size);
  }
  post_service();
  return {};
}

void QuicLink::async_wait_writable(std::function<void(std::error_code)> h) {
  writable_h_ = std::move(h);
  post_service();
}

std::string QuicLink::failure() const {
  return qc_->failed() ? qc_->failed()->message() : std::string{};
}

void QuicLink::arm_timer() {
  QuicTime exp = qc_->expiry();
  if (closed_) {
    exp = std::min(exp, linger_until_);
  }
  if (exp == UINT64_MAX) {
    return;
  }
  // Re-arming costs a timerfd_settime (~10 us on this kind of VM): only when the expiry moved
  // earlier (a later one is met by an early wake-up that finds nothing due and re-arms then),
  // and on a 1 ms grid: ngtcp2's expiry (pacing, ACK and loss timers) moves by microseconds
  // per packet, and at 100 000 datagrams a second re-arming for each move was 15 % of the CPU.
  // The grid is the engine's too (FlowDriver::arm_timer_locked): a side's timers due in one
  // tick fire in one reactor wake-up. QUIC's timers tolerate 1 ms (its clock granularity).
  exp = (exp + kTimerTick - 1) / kTimerTick * kTimerTick;
  if (armed_ != 0 && exp >= armed_) {
    return;
  }
  armed_ = exp;
  const auto at = std::chrono::steady_clock::time_point(std::chrono::nanoseconds(exp));
  timer_.expires_at(at);
  timer_.async_wait([weak = weak_from_this(), exp](std::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->finished_ || self->armed_ != exp) {
      return;
    }
    self->armed_ = 0;
    const QuicTime now = quic_now();
    if (self->qc_->expiry() <= now) {
      self->qc_->on_expiry(now);
    }
    self->service();
  });
}

void QuicLink::close(const std::string& why) {
  // The engine closes carriers from any thread, with its own lock held: the link closes on its
  // io thread, and pending operations fail from there, never from inside close().
  asio::post(io_, [self = shared_from_this(), why] { self->close_now(why); });
}

void QuicLink::close_now(const std::string& why) {
  if (closed_) {
    return;
  }
  closed_ = true;
  // Like a TCP close: what was written still goes out (the engine's last BYE_ACK, a refusal)
  // before CONNECTION_CLOSE, for at most kLinger.
  linger_until_ = quic_now() + kLinger;
  complete_ops();
  if (qc_->failed() || (qc_->unacked() == 0 && qc_->datagrams_queued() == 0)) {
    finish(why);
  } else {
    service();  // finishes once the stream is acknowledged; queued datagrams leave first
  }
}

void QuicLink::finish(const std::string& why) {
  if (finished_) {
    return;
  }
  closed_ = true;
  finished_ = true;
  const auto bye = qc_->close(quic_now(), why);
  if (!bye.empty()) {
    send_packet(bye);
  }
  flush_tx();
  timer_.cancel();
  if (own_) {
    std::error_code ec;
    sock_->close(ec);
    for (auto& o : old_) {
      o.sock->close(ec);
    }
    old_.clear();
  }
  asio::post(io_, [self = shared_from_this()] {
    self->complete_ops();
    self->notify();
  });
}

void QuicLink::async_read_some(std::span<std::byte> buf, IoHandler h) {
  read_buf_ = buf;
  read_h_ = std::move(h);
  post_service();
}

void QuicLink::async_write(std::span<const std::byte> buf, IoHandler h) {
  if (!closed_) {
    qc_->write(buf);
  }
  write_n_ = buf.size();
  write_h_ = std::move(h);
  post_service();
}

void QuicLink::async_write_gather(std::span<const std::span<const std::byte>> pieces,
                                  IoHandler h) {
  std::size_t total = 0;
  for (const auto& p : pieces) {
    total += p.size();
  }
  if (!closed_) {
    qc_->write_gather(pieces);
  }
  write_n_ = total;
  write_h_ = std::move(h);
  post_service();
}

namespace {

class QuicStreamCarrier final : public StreamCarrier {
 public:
  explicit QuicStreamCarrier(std::shared_ptr<QuicLink> link) : link_(std::move(link)) {}
  ~QuicStreamCarrier() override { close(); }
  void async_read_some(std::span<std::byte> buf, IoHandler handler) override {
    link_->async_read_some(buf, std::move(handler));
  }
  void async_write(std::span<const std::byte> buf, IoHandler handler) override {
    link_->async_write(buf, std::move(handler));
  }
  void async_write_gather(std::span<const std::span<const std::byte>> pieces,
                          IoHandler handler) override {
    link_->async_write_gather(pieces, std::move(handler));
  }
  void close() override { link_->close("closed by rendr"); }
  [[nodiscard]] std::string local() const override { return link_->local; }
  [[nodiscard]] std::string remote() const override { return link_->remote_text(); }
  [[nodiscard]] std::string failure() const override { return link_->failure(); }
  [[nodiscard]] std::size_t pending_input() const override { return link_->pending_input(); }
  [[nodiscard]] Status rebind(const std::string& local) override { return link_->rebind(local); }

 private:
  std::shared_ptr<QuicLink> link_;
};

class QuicPacketCarrier final : public PacketCarrier {
 public:
  explicit QuicPacketCarrier(std::shared_ptr<QuicLink> link) : link_(std::move(link)) {}
  ~QuicPacketCarrier() override { close(); }
  void start(std::function<void(std::span<const std::byte>)> on_packet,
             std::function<void(std::error_code)> on_error) override {
    link_->start_packets(std::move(on_packet), std::move(on_error));
  }
  std::error_code send(std::span<const std::byte> frame) override {
    return link_->send_datagram(frame);
  }
  void async_wait_writable(std::function<void(std::error_code)> handler) override {
    link_->async_wait_writable(std::move(handler));
  }
  [[nodiscard]] std::size_t max_frame() const override { return kQuicDgramMaxFrame; }
  void close() override { link_->close("closed by rendr"); }
  [[nodiscard]] std::string local() const override { return link_->local; }
  [[nodiscard]] std::string remote() const override { return link_->remote_text(); }
  [[nodiscard]] std::string failure() const override { return link_->failure(); }
  [[nodiscard]] std::size_t pending_input() const override { return link_->pending_input(); }
  [[nodiscard]] Status rebind(const std::string& local) override { return link_->rebind(local); }

 private:
  std::shared_ptr<QuicLink> link_;
};

std::string opt(const PathSpec& spec, const char* key, std::string dflt = {}) {
  auto it = spec.opts.find(key);
  return it == spec.opts.end() ? dflt : it->second;
}

}  // namespace

StreamCarrierPtr make_quic_carrier(std::shared_ptr<QuicLink> link) {
  return std::make_unique<QuicStreamCarrier>(std::move(link));
}

PacketCarrierPtr make_quic_packet_carrier(std::shared_ptr<QuicLink> link) {
  return std::make_unique<QuicPacketCarrier>(std::move(link));
}

}  // namespace detail

Result<QuicPathTls> quic_path_tls(const PathSpec& spec) {
  QuicPathTls t;
  t.mode = detail::opt(spec, "mode", "stream");
  t.ca = detail::opt(spec, "ca");
  t.cert = detail::opt(spec, "cert");
  t.key = detail::opt(spec, "key");
  t.alpn = detail::opt(spec, "alpn", "rendr");
  t.server_name = detail::opt(spec, "server_name");
  const std::string idle = detail::opt(spec, "idle_timeout_ms");
  if (!idle.empty()) {
    char* end = nullptr;
    const unsigned long v = std::strtoul(idle.c_str(), &end, 10);
    if (end == idle.c_str() || *end != '\0' || v == 0) {
      return make_error(std::errc::invalid_argument, "quic idle_timeout_ms: a number > 0");
    }
    t.idle_timeout = std::chrono::milliseconds(v);
  }
  const std::string rtt = detail::opt(spec, "initial_rtt_ms");
  if (!rtt.empty()) {
    char* end = nullptr;
    const double v = std::strtod(rtt.c_str(), &end);
    if (end == rtt.c_str() || *end != '\0' || !(v > 0) || v > 10000) {
      return make_error(std::errc::invalid_argument, "quic initial_rtt_ms: a number in (0, 10000]");
    }
    t.initial_rtt = std::chrono::microseconds(static_cast<std::int64_t>(v * 1000));
  }
  if (t.mode != "stream" && t.mode != "datagram") {
    return make_error(std::errc::invalid_argument,
                      "quic mode \"" + t.mode + "\": stream or datagram");
  }
  if (t.ca.empty() || t.cert.empty() || t.key.empty()) {
    return make_error(std::errc::invalid_argument,
                      "quic path: opts ca, cert and key are required (mutual TLS; rendrctl cert)");
  }
  if (t.alpn.empty() || t.alpn.size() > 255) {
    return make_error(std::errc::invalid_argument, "quic alpn: 1 to 255 bytes");
  }
  return t;
}

namespace {

Result<std::shared_ptr<detail::QuicLink>> dial_quic_link(asio::io_context& io,
                                                         const PathSpec& spec, Deadline deadline,
                                                         bool datagram) {
  auto tls = quic_path_tls(spec);
  if (!tls) {
    return std::move(tls).take_error().with_context("dial quic " + spec.address);
  }
  if ((tls->mode == "datagram") != datagram) {
    return make_error(std::errc::invalid_argument,
                      "dial quic " + spec.address + ": mode " + tls->mode + " is a " +
                          (datagram ? "stream" : "packet") + " carrier (dial_quic" +
                          (datagram ? "" : "_datagram") + ")");
  }
  auto creds = detail::QuicCreds::load(tls->ca, tls->cert, tls->key);
  if (!creds) {
    return std::move(creds).take_error().with_context("dial quic " + spec.address);
  }
  auto fd = detail::connect_fd(spec, SOCK_DGRAM, deadline);
  if (!fd) {
    return std::move(fd).take_error().with_context("dial quic");
  }
  detail::QuicAddr local;
  detail::QuicAddr remote;
  local.len = sizeof local.ss;
  remote.len = sizeof remote.ss;
  ::getsockname(fd->get(), reinterpret_cast<sockaddr*>(&local.ss), &local.len);
  ::getpeername(fd->get(), reinterpret_cast<sockaddr*>(&remote.ss), &remote.len);
  detail::QuicSettings qs;
  qs.alpn = tls->alpn;
  qs.server_name = tls->server_name;
  qs.datagram = datagram;
  qs.idle_timeout = static_cast<detail::QuicTime>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(tls->idle_timeout).count());
  qs.initial_rtt = static_cast<detail::QuicTime>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(tls->initial_rtt).count());
  auto qc = detail::QuicConn::client(std::move(*creds), qs, local, remote, detail::quic_now());
  if (!qc) {
    return std::move(qc).take_error().with_context("dial quic " + spec.address);
  }
  const int family = local.ss.ss_family;
  const std::string local_text = detail::fd_local(fd->get());
  auto sock = std::make_shared<asio::ip::udp::socket>(io);
  std::error_code ec;
  sock->assign(family == AF_INET6 ? asio::ip::udp::v6() : asio::ip::udp::v4(), fd->release(), ec);
  if (ec) {
    return Error{ec, "dial quic: assign"};
  }
  auto link = std::make_shared<detail::QuicLink>(io, std::move(sock), true, std::move(*qc));
  link->local = local_text;
  struct Wait {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::optional<Error> err;
  };
  auto w = std::make_shared<Wait>();
  link->on_change = [w, raw = link.get()] {
    auto& q = raw->conn();
    if (!q.ready() && !q.failed()) {
      return;
    }
    raw->on_change = nullptr;
    std::lock_guard lk(w->mu);
    w->done = true;
    if (q.failed()) {
      w->err = *q.failed();
    }
    w->cv.notify_all();
  };
  asio::post(io, [link] { link->start(); });
  std::unique_lock lk(w->mu);
  while (!w->done) {
    if (deadline == kNoDeadline) {
      w->cv.wait(lk);
    } else if (w->cv.wait_until(lk, deadline) == std::cv_status::timeout && !w->done) {
      lk.unlock();
      asio::post(io, [link] { link->close("dial deadline"); });
      return make_error(std::errc::timed_out,
                        "dial quic " + spec.address + ": no QUIC handshake by the deadline");
    }
  }
  if (w->err) {
    asio::post(io, [link] { link->close("handshake failed"); });
    return w->err->with_context("dial quic " + spec.address);
  }
  if (datagram) {
    // The DATAGRAM frame (type and length included) must take our largest rendr frame.
    const std::uint64_t peer = link->conn().peer_max_datagram();
    if (peer < detail::kQuicDgramMaxFrame + 8) {
      asio::post(io, [link] { link->close("no datagrams"); });
      return make_error(std::errc::not_supported,
                        "dial quic " + spec.address + ": mode datagram: the peer takes " +
                            (peer == 0 ? std::string("no DATAGRAM frames")
                                       : "DATAGRAM frames of at most " + std::to_string(peer) +
                                             " bytes, rendr needs " +
                                             std::to_string(detail::kQuicDgramMaxFrame + 8)));
    }
  }
  return link;
}

}  // namespace

Result<StreamCarrierPtr> dial_quic(asio::io_context& io, const PathSpec& spec, Deadline deadline) {
  auto link = dial_quic_link(io, spec, deadline, false);
  if (!link) {
    return std::move(link).take_error();
  }
  return detail::make_quic_carrier(std::move(*link));
}

Result<PacketCarrierPtr> dial_quic_datagram(asio::io_context& io, const PathSpec& spec,
                                            Deadline deadline) {
  auto link = dial_quic_link(io, spec, deadline, true);
  if (!link) {
    return std::move(link).take_error();
  }
  return detail::make_quic_packet_carrier(std::move(*link));
}

}  // namespace rendr
