// SPDX-License-Identifier: Apache-2.0
// Listener: the accepting side. listen_tcp takes u16-framed TCP carriers, listen_udpflow
// opaque UDP datagrams (8-byte udpflow header with a per-path 7-byte id) on one port, listen_quic
// QUIC connections (u16-framed on one stream, mutual TLS) on one UDP port; tcp and udpflow
// serve stream flows (accept) and packet flows (accept_packet), chosen by the HELLO's caps bit.
// The first frame of every fresh carrier decides: HELLO = a new flow (published on the accept
// queue), BRIDGE_TAG = one more path of a known flow, anything else is refused and closed
// (engine::BridgeTable, capacity 4 096 flows).
//
// Server mode: v0 carries no policy frames. With follow_client_mode (default) the server runs
// its own direction in the mode the dialer announced in the HELLO caps bits 8-9 (prime when
// absent); otherwise in flow.mode. docs/modes.md.
//
// The listener runs on its own io thread (or on |io|); accepted Conns keep the listener's
// state alive, so they outlive close() and the Listener object.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/engine/carrier.hpp>
#include <rendr/engine/conn.hpp>
#include <rendr/engine/types.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace asio {
class io_context;
}

namespace rendr {

namespace detail {
class ListenerCore;
}

// Limits (docs/engine.md "Listener limits"): a flow is live once the application accepted it
// and while it has a carrier; otherwise it is half-open. When a new HELLO would exceed a limit,
// half-open flows are evicted (their Conn reads errc::evicted), oldest first: never accepted
// and no carrier left, then accepted with no carrier left, then never accepted. Live flows are
// never evicted; a HELLO that only live flows keep out is refused (its carrier closed).
// Carriers waiting for their first frame past a limit push out the oldest waiting one.
// Every limit must be > 0 (invalid_config).
struct ListenOptions {
  engine::FlowConfig flow;  // server flows (max_payload is lowered for udpflow)
  bool follow_client_mode = true;
  bool accept_stream = true;
  bool accept_packet = true;
  std::size_t capacity = 4096;                // flows, live and half-open
  std::size_t backlog = 1024;                 // flows not accepted yet (both kinds together)
  std::size_t max_half_open_per_source = 256;  // per IPv4 address / IPv6 /64
  std::size_t max_pending_carriers = 1024;    // tcp carriers waiting for their first frame
  std::size_t max_pending_per_source = 128;
  std::chrono::milliseconds first_frame_timeout{5000};  // then such a carrier is closed
  // A flow that received no frame after its HELLO and has no carrier left ends after this
  // (errc::migration_budget_exceeded), accepted or not, instead of waiting out the migration
  // budget: a client whose carrier died after it spoke keeps flow.migration_budget. 0 = off.
  // Capped at flow.migration_budget; negative: invalid_config.
  std::chrono::milliseconds silent_flow_timeout{5000};
  // Listener key (docs/security.md): 16 to 64 bytes shared with the dialers
  // (DialOptions::listener_key); empty = none. A keyed listener takes a carrier only when its
  // HELLO / BRIDGE_TAG carries a key block with the right tag, a time within key_max_skew of
  // this host's clock and a tag not seen before; any other carrier is closed without a word
  // before a flow or a table entry is made for it (counted in ListenerStats::key_*). Keyed
  // dialers also reach unkeyed listeners of this version (the block is ignored there).
  std::vector<std::uint8_t> listener_key;
  std::chrono::seconds key_max_skew{60};
  std::size_t key_replay_capacity = 65536;  // tags remembered (about 100 bytes each)
  engine::Id128 instance_id{};  // zero: random
  asio::io_context* io = nullptr;
};

// ListenerStats: the listener's own counters (its flows report FlowStats).
struct ListenerStats {
  std::uint64_t accept_errors = 0;  // accept() calls that failed
  std::uint64_t accept_pauses = 0;  // pauses after EMFILE / ENFILE / ENOBUFS / ENOMEM
  // Admission (ListenOptions limits): now...
  std::size_t flows = 0;             // flows counted against capacity
  std::size_t unaccepted = 0;        // waiting for accept() / accept_packet()
  std::size_t half_open = 0;         // not accepted, or no carrier left
  std::size_t pending_carriers = 0;  // waiting for their first frame
  // ...and since the start.
  std::uint64_t flows_evicted = 0;
  std::uint64_t flows_refused = 0;         // HELLOs refused: only live flows left
  std::uint64_t carriers_dropped = 0;      // waiting carriers pushed out by newer ones
  std::uint64_t first_frame_timeouts = 0;
  // Carriers a keyed listener refused (first frame without a key block, with a wrong tag, a
  // time outside key_max_skew, a tag seen before): no flow was made for them.
  std::uint64_t key_missing = 0;
  std::uint64_t key_bad = 0;
  std::uint64_t key_stale = 0;
  std::uint64_t key_replayed = 0;
  // listen_quic: UDP datagrams dropped before any connection state was made for them (not
  // QUIC, no connection with that id, an Initial past max_pending_carriers).
  std::uint64_t quic_dropped = 0;
  std::uint64_t quic_handshake_failures = 0;  // connections that failed before their first frame
};

// QuicTls: a quic listener's certificates (PEM files as `rendrctl cert` writes them): its own
// certificate and key, and the CA every client certificate must chain to (mutual TLS, always).
struct QuicTls {
  std::string ca;
  std::string cert;
  std::string key;
  std::string alpn = "rendr";  // the one ALPN protocol accepted
  std::chrono::milliseconds idle_timeout{30000};
  std::chrono::milliseconds handshake_timeout{5000};
  // QUIC's RTT estimate before the first sample, and again after every migration of the
  // client (ngtcp2 resets it and has no call to seed it from the old path). 0 = QUIC's 333 ms.
  std::chrono::microseconds initial_rtt{0};
};

class Listener {
 public:
  explicit Listener(std::shared_ptr<detail::ListenerCore> c);
  ~Listener();  // close()
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // accept returns the next new stream flow. Errors: closed (listener closed), timed_out.
  [[nodiscard]] Result<ConnPtr> accept(Deadline deadline = kNoDeadline);
  [[nodiscard]] Result<PacketConnPtr> accept_packet(Deadline deadline = kNoDeadline);
  // set_accept_handler: from now on every new stream flow is passed to |h| on the listener's io
  // thread as soon as accept() would have returned it (flows already waiting first), instead of
  // queueing for accept() - for programs that run on that thread (no thread waits in accept,
  // none is woken per flow). |h| must not block; it may start the Conn's async operations.
  // An empty |h| goes back to accept(). set_packet_accept_handler: the same for packet flows
  // (accept_packet()).
  void set_accept_handler(std::function<void(ConnPtr)> h);
  void set_packet_accept_handler(std::function<void(PacketConnPtr)> h);
  // local_address: "ip:port" actually bound (port 0 resolved).
  [[nodiscard]] std::string local_address() const;
  [[nodiscard]] std::uint16_t port() const;
  // close stops accepting carriers (existing flows keep their paths). Idempotent.
  void close();
  [[nodiscard]] std::vector<engine::Id128> flow_ids() const;
  // stats: one snapshot per live flow.
  [[nodiscard]] std::vector<engine::FlowStats> stats() const;
  [[nodiscard]] ListenerStats listener_stats() const;
  // add_quic makes a tcp listener take QUIC carriers on |address| (UDP) as well, into the
  // same flows: one flow may then have tcp and quic paths at once. Returns the bound address.
  // Errors: invalid_argument (not a tcp listener, a second call, the address or PEM files),
  // bind errors, closed.
  [[nodiscard]] Result<std::string> add_quic(std::string_view address, QuicTls tls);

 private:
  std::shared_ptr<detail::ListenerCore> c_;
};
using ListenerPtr = std::unique_ptr<Listener>;

// listen_tcp / listen_udpflow bind |address| ("127.0.0.1:0", "[::]:7000"). Errors: bind/listen
// errno, invalid_argument (address), invalid_config (flow config).
[[nodiscard]] Result<ListenerPtr> listen_tcp(std::string_view address, ListenOptions opts = {});
[[nodiscard]] Result<ListenerPtr> listen_udpflow(std::string_view address,
                                                 ListenOptions opts = {});
// listen_quic: one UDP socket; each QUIC connection (TLS 1.3, client certificate required and
// checked against tls.ca, ALPN tls.alpn) is one carrier whose stream's first frame is the
// HELLO / BRIDGE_TAG, as on tcp. Stream flows only for now (accept). Errors as listen_tcp, and
// invalid_argument for unreadable PEM files (named).
[[nodiscard]] Result<ListenerPtr> listen_quic(std::string_view address, QuicTls tls,
                                              ListenOptions opts = {});

}  // namespace rendr
