// SPDX-License-Identifier: Apache-2.0
// QuicConn (private): one QUIC connection as the quic carrier uses it - ngtcp2 + GnuTLS, no
// sockets and no clock of its own. The caller feeds received UDP payloads (on_datagram), asks
// for what to send (produce), calls on_expiry at expiry(), and moves stream bytes in and out
// (read / write). One bidirectional stream carries the rendr frames: the client opens it once
// the handshake is confirmed, the server takes the first one the client opens. Receive flow
// control is extended by what read() consumed, never by what arrived. Timestamps are
// nanoseconds on any monotonic clock (tests use a fake one).
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/engine/carrier.hpp>

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

struct ngtcp2_conn;
struct ngtcp2_pkt_hd;
struct ngtcp2_path;

namespace rendr::detail {

using QuicTime = std::uint64_t;  // ns

// QuicCreds: a GnuTLS certificate store (trusted CA + own certificate and key), shared by every
// connection of a dialer path or a listener. ca may be empty only when verification is off.
class QuicCreds {
 public:
  ~QuicCreds();
  QuicCreds(const QuicCreds&) = delete;
  QuicCreds& operator=(const QuicCreds&) = delete;
  // load reads PEM files (rendrctl cert: ca.pem, NAME.pem, NAME.key). Errors name the file.
  [[nodiscard]] static Result<std::shared_ptr<QuicCreds>> load(const std::string& ca,
                                                               const std::string& cert,
                                                               const std::string& key);
  [[nodiscard]] void* native() const { return cred_; }

 private:
  QuicCreds() = default;
  void* cred_ = nullptr;  // gnutls_certificate_credentials_t
};

struct QuicSettings {
  std::string alpn = "rendr";
  std::string server_name;        // client: the name the server certificate must carry ("" = any)
  bool verify_peer = true;        // false only in tests of the refusal paths
  std::uint64_t window = 8 << 20;  // receive window per stream and per connection (bytes)
  QuicTime idle_timeout = 30'000'000'000ULL;
  QuicTime handshake_timeout = 10'000'000'000ULL;
  // Client: datagram mode (no stream; frames travel as QUIC DATAGRAM frames). Both ends always
  // advertise max_datagram_frame_size, so a listener takes either mode per connection.
  bool datagram = false;
  // QUIC's RTT before the first sample and after each migration (0: ngtcp2's 333 ms).
  QuicTime initial_rtt = 0;
};

// The largest rendr frame one QUIC DATAGRAM carries: the payload must fit a 1 200-byte packet
// (QUIC's minimum, what ngtcp2 sends before path MTU discovery) with a short header, the AEAD tag
// and the frame's own type and length (a larger one is never sent: writev_datagram returns 0).
inline constexpr std::size_t kQuicDgramMaxFrame = kQuicMaxDatagramFrame;
// Datagrams queued for sending at most (the carrier reports would_block above it), and the
// least of QuicConn::datagram_queue_limit.
inline constexpr std::size_t kQuicDgramQueue = 256;
inline constexpr std::size_t kQuicDgramQueueMin = 16;

struct QuicAddr {
  sockaddr_storage ss{};
  socklen_t len = 0;
};

class QuicConn {
 public:
  // Hooks (called from inside on_datagram / produce; must not call back into this object).
  struct Hooks {
    std::function<void(std::span<const std::uint8_t>)> cid_added;    // server demux
    std::function<void(std::span<const std::uint8_t>)> cid_removed;
  };

  ~QuicConn();
  QuicConn(const QuicConn&) = delete;
  QuicConn& operator=(const QuicConn&) = delete;

  [[nodiscard]] static Result<std::unique_ptr<QuicConn>> client(
      std::shared_ptr<QuicCreds> creds, const QuicSettings& s, const QuicAddr& local,
      const QuicAddr& remote, QuicTime now);
  // server: |pkt| is a client Initial ngtcp2_accept took (|hd| decoded from it); feed |pkt|
  // with on_datagram afterwards.
  [[nodiscard]] static Result<std::unique_ptr<QuicConn>> server(
      std::shared_ptr<QuicCreds> creds, const QuicSettings& s, const ngtcp2_pkt_hd& hd,
      const QuicAddr& local, const QuicAddr& remote, Hooks hooks, QuicTime now);

  // on_datagram handles one received UDP payload from |from|. A fatal result (failed()) is kept.
  // |to|: the local address it arrived on when not the current one (an old socket after a
  // migration).
  void on_datagram(std::span<const std::byte> pkt, const QuicAddr& from, QuicTime now,
                   const QuicAddr* to = nullptr);
  // produce calls |emit| for each UDP payload to send now (at most |max_packets|).
  void produce(QuicTime now, std::size_t max_packets,
               const std::function<void(std::span<const std::byte>)>& emit);
  [[nodiscard]] QuicTime expiry() const;
  void on_expiry(QuicTime now);
  // close: the CONNECTION_CLOSE to send (empty when none is due); the connection is failed
  // afterwards with |why|.
  [[nodiscard]] std::vector<std::byte> close(QuicTime now, const std::string& why);

  // ready: handshake done (client: confirmed) and the stream usable.
  [[nodiscard]] bool ready() const { return ready_; }
  [[nodiscard]] const std::optional<Error>& failed() const { return failed_; }
  [[nodiscard]] std::string alpn() const;

  // Stream, receiving: bytes arrived in order and not read yet.
  [[nodiscard]] std::size_t readable() const { return recv_.size() - rpos_; }
  [[nodiscard]] std::span<const std::byte> peek() const {
    return {recv_.data() + rpos_, recv_.size() - rpos_};
  }
  // read moves up to buf.size() bytes out and extends flow control by as much.
  std::size_t read(std::span<std::byte> buf);
  void consume(std::size_t n);
  // Stream, sending: write appends (copied, kept until the peer acknowledged it).
  void write(std::span<const std::byte> data);
  void write_gather(std::span<const std::span<const std::byte>> pieces);
  // unacked: bytes written and not acknowledged yet (backpressure for the writer).
  [[nodiscard]] std::uint64_t unacked() const { return end_ - acked_; }
  [[nodiscard]] std::uint64_t written() const { return end_; }

  // DATAGRAM frames (datagram mode). send_datagram queues one (false: larger than
  // kQuicDgramMaxFrame, not queued); it leaves with the next produce(), packed with others
  // where they fit one packet. A datagram the network loses is gone: the engine's ledger
  // replays its frame.
  bool send_datagram(std::span<const std::byte> d);
  [[nodiscard]] std::size_t datagrams_queued() const { return dgram_out_.size(); }
  // datagram_queue_limit: how many datagrams may wait here for sending - one congestion window
  // of full ones (what leaves within about one round trip), clamped to [kQuicDgramQueueMin,
  // kQuicDgramQueue]. A frame waiting longer than that would still be queued when the engine's
  // retransmission timer (started when the carrier took it) runs out: after a migration QUIC's
  // window restarts at 12 000 bytes, and a full 256-datagram queue took ~20 ms to leave, so the
  // engine re-sent thousands of frames QUIC still held. Frames above the limit wait in the
  // engine, not yet sent, so their timers have not started.
  [[nodiscard]] std::size_t datagram_queue_limit() const;
  // received: DATAGRAM payloads in arrival order, not taken yet.
  [[nodiscard]] std::deque<std::vector<std::byte>>& datagrams_in() { return dgram_in_; }
  // recycle_datagram takes back a buffer taken from datagrams_in(): queued datagrams both ways
  // reuse buffers instead of one allocation each.
  void recycle_datagram(std::vector<std::byte>&& b);
  // peer_max_datagram: the peer's max_datagram_frame_size (0: it takes none; known once ready).
  [[nodiscard]] std::uint64_t peer_max_datagram() const;

  // migrate (client, after the handshake is confirmed): move the connection to |new_local|
  // (QUIC connection migration, RFC 9000 section 9) - the caller sends from the new socket from
  // now on and keeps reading the old one for a while. ngtcp2 0.12 resets QUIC's own RTT
  // estimate and congestion window on the new path (333 ms, 12 000 B) and has no call to seed
  // them; the engine's path RTT is unaffected (same path). Errors: not_connected, invalid_argument,
  // resource_unavailable_try_again (no spare connection id from the peer yet).
  [[nodiscard]] Status migrate(const QuicAddr& new_local, QuicTime now);
  [[nodiscard]] const QuicAddr& local() const { return local_; }
  // smoothed_rtt: ngtcp2's smoothed RTT (ns).
  [[nodiscard]] QuicTime smoothed_rtt() const;
  // pto_anchors: packets that carried a MAX_DATA frame only to arm QUIC's probe timeout
  // (datagram mode, see arm_probe_timeout in quic_conn.cpp).
  [[nodiscard]] std::uint64_t pto_anchors() const { return pto_anchors_; }

  // stateless_reset_for_test: a Stateless Reset (RFC 9000 section 10.3) for this server
  // connection's first connection id, as a peer that lost its state would send it.
  [[nodiscard]] std::vector<std::byte> stateless_reset_for_test() const;

  // Remote address of the current path (the server follows the client's migrations).
  [[nodiscard]] const QuicAddr& remote() const { return remote_; }
  // tx_local / tx_remote: the path of the packet produce() is emitting (inside |emit|): during a
  // migration ngtcp2 sends some packets on the old path (validation, its fallback).
  [[nodiscard]] const QuicAddr& tx_local() const { return tx_local_; }
  [[nodiscard]] const QuicAddr& tx_remote() const { return tx_remote_; }

  struct Cb;  // ngtcp2's callbacks (quic_conn.cpp)

 private:
  QuicConn() = default;
  void fail(Error e);
  void arm_probe_timeout();
  void note_tx_path(const ngtcp2_path& p);
  void fail_and_tell(int liberr, QuicTime now);
  [[nodiscard]] Error describe_failure(int liberr, const char* what) const;

  ngtcp2_conn* conn_ = nullptr;
  void* session_ = nullptr;  // gnutls_session_t
  std::shared_ptr<QuicCreds> creds_;
  std::string alpn_;
  bool server_ = false;
  bool ready_ = false;
  bool confirmed_ = false;
  bool handshake_done_ = false;
  std::optional<Error> failed_;
  Hooks hooks_;
  QuicAddr local_;
  QuicAddr remote_;
  QuicAddr tx_local_;
  QuicAddr tx_remote_;
  struct ConnRef;
  std::unique_ptr<ConnRef> ref_;

  std::int64_t stream_ = -1;
  std::vector<std::byte> recv_;
  std::size_t rpos_ = 0;
  // Send buffer: chunks [acked_base_, end_) of the stream, freed as ACKs arrive in order.
  std::deque<std::vector<std::byte>> chunks_;
  std::uint64_t base_ = 0;   // stream offset of chunks_.front()[0]
  std::uint64_t acked_ = 0;  // acknowledged prefix
  std::uint64_t sent_ = 0;   // handed to ngtcp2
  std::uint64_t end_ = 0;    // written
  std::vector<std::byte> pkt_;
  std::vector<std::byte> bye_;  // CONNECTION_CLOSE still to send after a local failure
  bool datagram_ = false;
  std::uint64_t window_ = 0;     // receive window (QuicSettings::window)
  std::uint64_t pto_anchors_ = 0;
  bool got_reset_ = false;  // a Stateless Reset ended the connection
  std::uint8_t reset_token_[16] = {};  // server: for its first connection id
  std::deque<std::vector<std::byte>> dgram_out_;
  std::deque<std::vector<std::byte>> dgram_in_;
  std::vector<std::vector<std::byte>> dgram_spare_;  // at most kQuicDgramQueue
  std::vector<std::byte> dgram_buffer(std::span<const std::byte> d);
};

}  // namespace rendr::detail
