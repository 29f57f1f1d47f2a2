// SPDX-License-Identifier: Apache-2.0
// Carriers: what one path of a flow runs over. The engine's Asio shell drives a flow's FlowCore
// over any number of carriers of two kinds (STYLE M1: one abstract async interface per kind):
//   StreamCarrier - an ordered reliable byte stream (tcp; custom stream factories; a quic stream
//                   later). Frames travel with the u16 length prefix.
//   PacketCarrier - datagrams that may be lost or reordered (udpflow; quic in datagram mode).
//                   One frame per datagram; any carrier header (udpflow's 8 bytes) is the
//                   carrier's business and never reaches the engine.
// A carrier belongs to the io_context it was created on; the shell calls it only from the thread
// that runs that io_context, and it invokes its callbacks there, never from inside the initiating
// call. Built-in transports are "tcp", "udpflow" and "quic" (stream mode: frames on one QUIC
// stream, mutual TLS); a Dialer takes custom factories by other names.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/engine/types.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>

namespace asio {
class io_context;
}

namespace rendr {

using Deadline = std::chrono::steady_clock::time_point;
inline constexpr Deadline kNoDeadline = Deadline::max();
// deadline_in returns now + |d| (saturating).
[[nodiscard]] inline Deadline deadline_in(std::chrono::steady_clock::duration d) {
  const auto now = std::chrono::steady_clock::now();
  return d >= kNoDeadline - now ? kNoDeadline : now + d;
}

// PathSpec names one path of a Dialer: which transport, where to, from where.
struct PathSpec {
  std::string transport = "tcp";  // "tcp", "udpflow", or a registered factory name
  std::string address;            // "10.10.1.2:7000", "[fd10:1::2]:7000"
  std::string local;              // optional source address ("10.10.1.1" or "10.10.1.1:0")
  std::string name;               // path name sent in HELLO / BRIDGE_TAG (default: transport/address)
  // Transport options. udpflow: "flow_id_hex" = 14 hex digits (the per-path 7-byte id; random
  // when absent). quic (docs/engine.md "quic paths"): "ca", "cert", "key" (PEM files as
  // `rendrctl cert` writes them; required: mutual TLS), "server_name" (the name the listener's
  // certificate must carry; empty = any name the CA signed), "alpn" (default "rendr"), "mode"
  // ("stream", or "datagram": frames as QUIC DATAGRAM frames, a packet carrier),
  // "idle_timeout_ms" (default 30000), "initial_rtt_ms" (QUIC's RTT before the first sample and
  // after each rebind; default 333).
  std::map<std::string, std::string> opts;
};

using IoHandler = std::function<void(std::error_code, std::size_t)>;

class StreamCarrier {
 public:
  virtual ~StreamCarrier() = default;
  // async_read_some reads at least one byte into |buf| (which stays valid until the handler
  // runs). EOF is reported as an error (asio::error::eof or any code): to the engine a carrier
  // that ends is a dead path, never the end of the flow.
  virtual void async_read_some(std::span<std::byte> buf, IoHandler handler) = 0;
  // async_write writes all of |buf| (valid until the handler runs), then calls |handler|.
  virtual void async_write(std::span<const std::byte> buf, IoHandler handler) = 0;
  // async_write_gather writes all |pieces| in order (each valid until the handler runs), then
  // calls |handler| with the total. The engine sends frames from its replay ledger this way,
  // without copying them. The default copies the pieces into one buffer for async_write;
  // override it when the carrier can gather (writev).
  virtual void async_write_gather(std::span<const std::span<const std::byte>> pieces,
                                  IoHandler handler);
  // close ends the carrier; pending operations complete with an error. Idempotent.
  virtual void close() = 0;
  // describe: local and remote address, for stats ("10.10.1.1:40000", "10.10.1.2:7000").
  [[nodiscard]] virtual std::string local() const = 0;
  [[nodiscard]] virtual std::string remote() const = 0;
  // failure: why the carrier failed, when it knows more than its error code says (the quic
  // carrier: "quic: idle timeout", "quic: stateless reset", "quic: peer closed (code N, ...)");
  // empty otherwise. The engine appends it to the path's down reason (FlowStats::last_path_down).
  [[nodiscard]] virtual std::string failure() const { return {}; }
  // pending_input: bytes waiting unread on the carrier's socket (FIONREAD; 0 when unknown or
  // closed). The engine asks it before failing a path for silence: unread input means the
  // path spoke and only our thread did not get to read it (docs/engine.md).
  [[nodiscard]] virtual std::size_t pending_input() const { return 0; }
  // transport_ack: what the carrier's transport knows of the peer's acknowledgements (the tcp
  // carrier: TCP_INFO); empty when it cannot tell (the default). The engine asks it while its
  // frames are in flight on the path, to fail a silently dropped path fast
  // (FlowConfig::ack_silence_min).
  [[nodiscard]] virtual std::optional<engine::TransportAck> transport_ack() const {
    return std::nullopt;
  }
  // rebind moves the carrier to a new local address ("ip:port", port 0 = any) in place, the
  // peer following (quic: QUIC connection migration); the engine sees the same path. Default:
  // not_supported.
  [[nodiscard]] virtual Status rebind(const std::string& local) {
    return make_error(std::errc::not_supported, "rebind " + local + ": not a quic carrier");
  }
  // Direct receive (docs/engine.md "Direct receive"): direct_read_fd is a connected stream
  // socket whose bytes are exactly the carrier's input, or -1 (the default: the engine reads
  // through async_read_some only). The engine may hand that input to the application's reader
  // thread, which recv(2)s and poll(2)s the fd itself; meanwhile it calls
  // set_input_watch(false) (never with a read or wait pending) and the carrier should stop
  // waking the io thread for input (it may finish a write in flight first); writes go on.
  // set_input_watch(true) when the engine reads again. The fd stays the carrier's.
  [[nodiscard]] virtual int direct_read_fd() const { return -1; }
  virtual void set_input_watch(bool on) { (void)on; }
};
using StreamCarrierPtr = std::unique_ptr<StreamCarrier>;

class PacketCarrier {
 public:
  virtual ~PacketCarrier() = default;
  // start delivers every received datagram (the frame only) to |on_packet| and the first fatal
  // error to |on_error|, until close(). Called once.
  virtual void start(std::function<void(std::span<const std::byte>)> on_packet,
                     std::function<void(std::error_code)> on_error) = 0;
  // send sends one frame now without blocking. Returns {} when sent (or silently dropped, as
  // datagrams may be), asio/std would_block when the socket is full (call async_wait_writable),
  // anything else when the carrier is dead.
  [[nodiscard]] virtual std::error_code send(std::span<const std::byte> frame) = 0;
  virtual void async_wait_writable(std::function<void(std::error_code)> handler) = 0;
  // max_frame: largest frame (8-byte header + payload) one datagram takes.
  [[nodiscard]] virtual std::size_t max_frame() const = 0;
  virtual void close() = 0;
  [[nodiscard]] virtual std::string local() const = 0;
  [[nodiscard]] virtual std::string remote() const = 0;
  // failure: why the carrier failed, when it knows more than its error code says (the quic
  // carrier: "quic: idle timeout", "quic: stateless reset", "quic: peer closed (code N, ...)");
  // empty otherwise. The engine appends it to the path's down reason (FlowStats::last_path_down).
  [[nodiscard]] virtual std::string failure() const { return {}; }
  // pending_input: bytes waiting unread on the carrier's socket (FIONREAD; 0 when unknown or
  // closed). The engine asks it before failing a path for silence: unread input means the
  // path spoke and only our thread did not get to read it (docs/engine.md).
  [[nodiscard]] virtual std::size_t pending_input() const { return 0; }
  // rebind moves the carrier to a new local address ("ip:port", port 0 = any) in place, the
  // peer following (quic: QUIC connection migration); the engine sees the same path. Default:
  // not_supported.
  [[nodiscard]] virtual Status rebind(const std::string& local) {
    return make_error(std::errc::not_supported, "rebind " + local + ": not a quic carrier");
  }
};
using PacketCarrierPtr = std::unique_ptr<PacketCarrier>;

// Factories dial one carrier for |spec| on |io| before |deadline| (blocking the calling thread,
// which is the application's: Dialer::dial, Admin::add_path). The result must only be used from
// |io|'s thread afterwards.
using StreamFactory =
    std::function<Result<StreamCarrierPtr>(asio::io_context& io, const PathSpec& spec, Deadline)>;
using PacketFactory =
    std::function<Result<PacketCarrierPtr>(asio::io_context& io, const PathSpec& spec, Deadline)>;

// Built-in carriers (engine/src/carrier_tcp.cpp, carrier_udpflow.cpp).
// dial_tcp: non-blocking connect bounded by |deadline|, TCP_NODELAY on, keepalive off, optional
// bind to spec.local. Errors: the connect errno, timed_out, invalid_argument (bad address).
[[nodiscard]] Result<StreamCarrierPtr> dial_tcp(asio::io_context& io, const PathSpec& spec,
                                                Deadline deadline);
// dial_udpflow: a connected UDP socket; every datagram is "0 | id[7] | frame". The id comes from
// spec.opts["flow_id_hex"] or is random. Errors: errno of socket/bind/connect, invalid_argument.
[[nodiscard]] Result<PacketCarrierPtr> dial_udpflow(asio::io_context& io, const PathSpec& spec,
                                                    Deadline deadline);

// QuicPathTls: a quic PathSpec's opts, checked (quic_path_tls). Errors: invalid_argument.
struct QuicPathTls {
  std::string mode = "stream";
  std::string ca;
  std::string cert;
  std::string key;
  std::string alpn = "rendr";
  std::string server_name;
  std::chrono::milliseconds idle_timeout{30000};
  std::chrono::microseconds initial_rtt{0};  // opts "initial_rtt_ms" (QuicTls::initial_rtt)
};
[[nodiscard]] Result<QuicPathTls> quic_path_tls(const PathSpec& spec);
// dial_quic: a UDP socket connected to spec.address, a QUIC handshake (TLS 1.3, ALPN, both
// certificates verified against spec.opts["ca"]) bounded by |deadline|, then one stream.
// Errors: invalid_argument (opts, unreadable PEM files, named), permission_denied (the peer's
// certificate failed verification, or the peer refused ours or our ALPN: the text says which),
// timed_out (no handshake by |deadline|), invalid_argument (mode datagram: dial_quic_datagram),
// connect errors.
[[nodiscard]] Result<StreamCarrierPtr> dial_quic(asio::io_context& io, const PathSpec& spec,
                                                 Deadline deadline);
// dial_quic_datagram: the same handshake for opts mode=datagram; every frame is one QUIC
// DATAGRAM frame (at most kQuicMaxDatagramFrame bytes). Errors as dial_quic, plus not_supported
// when the peer takes no DATAGRAM frames or smaller ones than that.
[[nodiscard]] Result<PacketCarrierPtr> dial_quic_datagram(asio::io_context& io,
                                                          const PathSpec& spec, Deadline deadline);
inline constexpr std::size_t kQuicMaxDatagramFrame = 1150;

inline constexpr std::size_t kUdpFlowHeader = 8;
inline constexpr std::size_t kUdpFlowMaxDatagram = 1400;
inline constexpr std::size_t kUdpFlowMaxFrame = kUdpFlowMaxDatagram - kUdpFlowHeader;  // 1 392

}  // namespace rendr
