// SPDX-License-Identifier: Apache-2.0
// QuicLink (private): the thin Asio shell around one QuicConn - a UDP socket to send through
// (the dialer's own, or the listener's shared one), a timer at the connection's expiry, and
// the StreamCarrier operations on its stream. io thread only. The quic carrier
// (carrier_quic.cpp) and listen_quic (listener_quic.cpp) use it.
#pragma once

#include "carriers.hpp"
#include "quic_conn.hpp"

#include <asio/io_context.hpp>
#include <asio/ip/udp.hpp>
#include <asio/steady_timer.hpp>

#include <sys/socket.h>
#include <sys/uio.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>

namespace rendr::detail {

[[nodiscard]] QuicTime quic_now();

// QuicRecvBatch: up to 32 datagrams per recvmmsg call (one syscall instead of 32).
class QuicRecvBatch {
 public:
  QuicRecvBatch();
  // recv reads what is queued on |fd| without blocking: the count (0 when nothing or an error).
  int recv(int fd);
  // packet |i| of the last recv; empty when it was truncated (larger than a slot).
  [[nodiscard]] std::span<const std::byte> packet(int i) const;
  [[nodiscard]] const QuicAddr& from(int i) const { return from_[static_cast<std::size_t>(i)]; }

 private:
  static constexpr int kCount = 32;
  static constexpr std::size_t kSlot = 2048;  // QUIC packets here are <= 1 500 bytes
  std::vector<std::byte> buf_;
  std::vector<mmsghdr> msgs_;
  std::vector<iovec> iov_;
  std::vector<QuicAddr> from_;
};

class QuicLink : public std::enable_shared_from_this<QuicLink> {
 public:
  QuicLink(asio::io_context& io, std::shared_ptr<asio::ip::udp::socket> sock, bool own_socket,
           std::unique_ptr<QuicConn> qc);
  ~QuicLink();

  // start: a dialing link begins reading its own socket; both send what is due.
  void start();
  // on_datagram: one UDP payload for this connection (the listener's demux calls it).
  void on_datagram(std::span<const std::byte> pkt, const QuicAddr& from);
  // service: send what is due, complete reads and writes, re-arm the timer, call on_change.
  void service();
  void post_service();
  // close ends the carrier (any thread; done on the io thread): pending operations fail; what
  // was written still goes out (at most 2 s), then CONNECTION_CLOSE (finish). Idempotent.
  void close(const std::string& why);
  // finish sends CONNECTION_CLOSE now (unless the connection failed) and stops the link.
  void finish(const std::string& why);

  [[nodiscard]] QuicConn& conn() { return *qc_; }
  [[nodiscard]] bool closed() const { return closed_; }      // no more carrier operations
  [[nodiscard]] bool finished() const { return finished_; }  // the connection is over
  [[nodiscard]] std::error_code error() const;
  std::string local;
  // Called after every service on the io thread (handshake waiter, listener first frame).
  std::function<void()> on_change;

  // StreamCarrier operations (quic stream mode).
  void async_read_some(std::span<std::byte> buf, IoHandler h);
  void async_write(std::span<const std::byte> buf, IoHandler h);
  void async_write_gather(std::span<const std::span<const std::byte>> pieces, IoHandler h);

  // PacketCarrier operations (quic datagram mode): every frame is one DATAGRAM frame.
  void start_packets(std::function<void(std::span<const std::byte>)> on_packet,
                     std::function<void(std::error_code)> on_error);
  [[nodiscard]] std::error_code send_datagram(std::span<const std::byte> frame);
  void async_wait_writable(std::function<void(std::error_code)> h);

  // rebind (client, io thread): move the connection to a new UDP socket bound to |local_addr|
  // ("ip:port", port 0 = any) with QUIC connection migration; the old socket is still read
  // for kOldSocketLinger. Errors: bind errors, not_connected, invalid_argument.
  [[nodiscard]] Status rebind(const std::string& local_addr);
  [[nodiscard]] std::uint64_t rebinds() const { return rebinds_; }

  // failure: the connection's error text ("quic: idle timeout"...), empty while it is alive.
  [[nodiscard]] std::string failure() const;
  // remote_text: the peer's current address ("ip:port"; the listener side follows the
  // client's rebinds), any thread.
  [[nodiscard]] std::string remote_text() const;
  // pending_input: bytes waiting unread on the link's UDP socket (FIONREAD; on a listener's
  // shared socket they may be another connection's), io thread.
  [[nodiscard]] std::size_t pending_input() const;

 private:
  void read_own();
  void arm_timer();
  void send_packet(std::span<const std::byte> pkt);  // batched until flush_tx
  void flush_tx();
  void complete_ops();
  void notify();
  void close_now(const std::string& why);

  asio::io_context& io_;
  std::shared_ptr<asio::ip::udp::socket> sock_;
  bool own_;
  std::unique_ptr<QuicConn> qc_;
  asio::steady_timer timer_;
  QuicTime armed_ = 0;
  bool closed_ = false;
  bool finished_ = false;
  QuicTime linger_until_ = 0;
  bool service_posted_ = false;
  QuicRecvBatch rx_;
  std::vector<std::byte> txbuf_;  // GSO batch: nseg_ packets of seg_ bytes (the last may be short)
  std::size_t seg_ = 0;
  int nseg_ = 0;
  bool last_short_ = false;
  bool no_gso_ = false;
  std::span<std::byte> read_buf_;
  IoHandler read_h_;
  IoHandler write_h_;
  std::size_t write_n_ = 0;
  std::function<void(std::span<const std::byte>)> on_packet_;
  std::function<void(std::error_code)> on_error_;
  std::function<void(std::error_code)> writable_h_;
  bool error_told_ = false;
  std::uint64_t rebinds_ = 0;
  // Sockets given up by rebind, still read until their deadline (late packets on the old path).
  struct OldSocket {
    std::shared_ptr<asio::ip::udp::socket> sock;
    QuicAddr local;
    QuicTime until = 0;
  };
  // The batch's path: its socket (dialing side) or destination (listener side).
  std::shared_ptr<asio::ip::udp::socket> tx_sock_;
  QuicAddr tx_to_;
  std::vector<OldSocket> old_;
  void read_old(const std::shared_ptr<asio::ip::udp::socket>& s);
  void note_remote();  // io thread: refresh remote_text_ when the peer's address moved
  QuicAddr remote_seen_;
  mutable std::mutex remote_mu_;
  std::string remote_text_;  // guarded by remote_mu_
};

// make_quic_carrier: the StreamCarrier of a link whose handshake is done.
[[nodiscard]] StreamCarrierPtr make_quic_carrier(std::shared_ptr<QuicLink> link);
// make_quic_packet_carrier: the PacketCarrier of a datagram-mode link whose handshake is done.
[[nodiscard]] PacketCarrierPtr make_quic_packet_carrier(std::shared_ptr<QuicLink> link);

}  // namespace rendr::detail
