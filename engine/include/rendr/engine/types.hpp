// SPDX-License-Identifier: Apache-2.0
// The value types of the engine's embedder API: ids, modes, flow configuration and flow
// statistics. Conn / PacketConn / Admin, Dialer, Listener and the status JSON speak in these;
// they are plain values with no behaviour beyond validate_config and the names of the enums.
// The protocol core (rendr/engine/core/, not part of the API) uses the same types.
#pragma once

#include <rendr/common/result.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace rendr::engine {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = std::chrono::nanoseconds;

using Id128 = std::array<std::uint8_t, 16>;  // flow_id (= bridge_id), instance_id

// TransportAck: what a stream carrier's own transport knows of its peer's acknowledgements
// (tcp: TCP_INFO), for the transport-silence rule (FlowConfig::ack_silence_min).
struct TransportAck {
  std::uint32_t in_flight_packets = 0;  // sent, not acknowledged by the peer's transport
  Duration since_ack{0};                // since the transport last received an acknowledgement
  Duration srtt{0};                     // the transport's smoothed round trip and its variation
  Duration rttvar{0};
};
using PathId = std::uint32_t;                // per flow, from 1; 0 = none

// A frame is an 8-byte header plus its payload (docs/wire.md); FlowConfig and PathOptions bounds
// count whole frames.
inline constexpr std::size_t kHeaderSize = 8;
// Largest DATA payload (so header + payload fits the u16 stream prefix with room to spare).
inline constexpr std::size_t kMaxPayload = 32 * 1024;
// Listener key length bounds (FlowConfig::listener_key, ListenOptions::listener_key).
inline constexpr std::size_t kMinListenerKey = 16;
inline constexpr std::size_t kMaxListenerKey = 64;
// HELLO / HELLO_ACK capability bits (FlowConfig::caps); unknown bits are ignored.
inline constexpr std::uint32_t kCapsPacketMode = 1U << 0;
inline constexpr std::uint32_t kCapsL3Identity = 1U << 1;
// Set in a HELLO that carries a listener key block; a keyed listener echoes it in HELLO_ACK
// (docs/wire.md "Listener key"). The engine sets it itself: FlowConfig::listener_key.
inline constexpr std::uint32_t kCapsKeyed = 1U << 12;
// rendr C++ extension: this side sends / reads the 40-byte L3 identity record (control 0x40,
// docs/wire.md "L3 identity"). Asked together with kCapsL3Identity; the record travels only
// when the HELLO_ACK echoes both (a v0.3 peer echoes bit 1 without ever reading a record).
inline constexpr std::uint32_t kCapsL3Record = 1U << 14;
// rendr C++ extension: this side reads SHUTDOWN_WRITE (control 0x41, docs/wire.md "Half-close").
// Every FlowCore of this version asks for it in its HELLO and echoes it in its HELLO_ACK;
// shutdown_write needs the peer to have it.
inline constexpr std::uint32_t kCapsHalfClose = 1U << 13;
// rendr C++ extension: this side reads REFUSE (control 0x42, docs/wire.md "Refusal"). Every
// FlowCore of this version asks for it in its HELLO and echoes it in its HELLO_ACK; refuse()
// sends the reason only to a peer that has it (otherwise BYE app_request).
inline constexpr std::uint32_t kCapsRefuse = 1U << 15;

// RefusalCode: why the accepting side refused to carry a flow (Admin::refuse, docs/wire.md
// "Refusal"), machine-readable for the dialer (a TUN ingress resets the app's flow and counts
// the reason). The wire carries any u8: values not listed here are kept and shown as
// "code_<n>".
enum class RefusalCode : std::uint8_t {
  unspecified = 0,
  flow_denied = 1,        // a policy refused the destination / the flow
  missing_egress = 2,     // nothing listens there, connection refused, unreachable
  identity_mismatch = 3,  // the flow's L3 identity is missing, unusable or not acceptable
  egress_timeout = 4,     // the destination did not answer in time
  egress_error = 5,       // any other failure landing the flow
};
// to_string: "flow_denied", ... ("code_<n>" for an unlisted value).
[[nodiscard]] std::string to_string(RefusalCode c);
// refusal_code_from_string is the inverse of to_string for the listed names.
[[nodiscard]] std::optional<RefusalCode> refusal_code_from_string(std::string_view s);
struct Refusal {
  RefusalCode code = RefusalCode::unspecified;
  std::string detail;  // human-readable, at most 255 bytes on the wire
  bool operator==(const Refusal&) const = default;
};

// L3Identity: the original IP 5-tuple of a flow that entered rendr below the application (a TUN
// ingress), carried to the accepting side so that an egress can land it (docs/wire.md "L3
// identity"). Addresses are raw network-order bytes: IPv4 in the first 4 bytes of the array
// (the rest 0), IPv6 in all 16 (never an IPv4-mapped address: family 4 says IPv4).
struct L3Identity {
  std::uint8_t proto = 6;   // IP protocol: 1 ICMP, 6 TCP, 17 UDP, 58 ICMPv6
  std::uint8_t family = 4;  // 4 or 6
  std::array<std::uint8_t, 16> src{};
  std::uint16_t src_port = 0;
  std::array<std::uint8_t, 16> dst{};
  std::uint16_t dst_port = 0;
  bool operator==(const L3Identity&) const = default;
};
// make_l3_identity builds an identity from "ip:port" / "[ipv6]:port" strings (both of one
// family). Errors: invalid_argument (unparsable address or port, mixed families), and those of
// check_l3_identity.
[[nodiscard]] Result<L3Identity> make_l3_identity(std::uint8_t proto, std::string_view src,
                                                  std::string_view dst);
// check_l3_identity: is |id| a value the record can carry (family 4 or 6, a known protocol that
// fits the family, IPv4 padding zero, no IPv4-mapped IPv6)? Error: invalid_argument.
[[nodiscard]] Status check_l3_identity(const L3Identity& id);
// to_string: "tcp 10.0.0.1:40000 -> 10.0.0.2:80" ("[v6]:port" for IPv6).
[[nodiscard]] std::string to_string(const L3Identity& id);

// Scheduling mode (docs/modes.md): prime = one active path, bond = round robin, race = every
// frame on every path.
enum class Mode : std::uint8_t { prime = 1, bond = 2, race = 3 };
[[nodiscard]] std::string_view to_string(Mode m);

enum class FlowState : std::uint8_t { init, handshaking, active, migrating, closing, dead };
[[nodiscard]] std::string_view to_string(FlowState s);

enum class Side : std::uint8_t { client, server };

// Framing of one carrier: stream = ordered reliable bytes with the u16 length prefix (tcp, quic
// stream, custom stream factories); datagram = one frame per datagram, may lose/reorder
// (udpflow after its own 8-byte header is stripped, quic datagram).
enum class Framing : std::uint8_t { stream, datagram };

enum class PathState : std::uint8_t {
  pending,   // client: waiting for the handshake before its BRIDGE_TAG can be sent
  hello,     // client: HELLO sent, waiting for HELLO_ACK
  bridging,  // client: BRIDGE_TAG sent, waiting for BRIDGE_ACK
  ready,     // usable for data
};
[[nodiscard]] std::string_view to_string(PathState s);

struct FlowConfig {
  Mode mode = Mode::prime;
  // HELLO caps. kCapsPacketMode makes this a packet flow: one write_packet = one DATA frame,
  // read_packet returns one packet; delivery is reliable but unordered (first arrival wins).
  std::uint32_t caps = 0;
  std::size_t max_payload = kMaxPayload;   // DATA chunk size (<= kMaxPayload)
  // Send window (replay ledger) and receive side bounds.
  std::size_t ledger_max_frames = 8192;
  std::size_t ledger_max_bytes = 16U << 20;
  // Of the ledger, bytes not yet handed to any carrier (a user-space send queue): writes block
  // beyond it, like TCP_NOTSENT_LOWAT. In-flight bytes may still use the whole ledger (long fat
  // paths); a small unsent backlog keeps the working set in cache and memory per flow low.
  std::size_t unsent_max_bytes = 4U << 20;
  std::size_t reorder_max_frames = 16384;  // must be >= the peer's ledger_max_frames
  std::size_t reorder_max_bytes = 96U << 20;
  std::size_t recv_window_bytes = 8U << 20;  // delivered-but-unread bytes before ACKs stop
  // Probing and path death.
  Duration probe_interval = std::chrono::seconds(1);
  Duration fresh_min = std::chrono::milliseconds(500);
  Duration fresh_max = std::chrono::seconds(4);
  // A write stall shorter than this never kills a path: a TCP carrier legitimately waits one
  // retransmission timeout (>= 200 ms on Linux) after a tail loss.
  Duration stall_min = std::chrono::milliseconds(300);
  Duration stall_max = std::chrono::seconds(2);
  // Transport silence (stream carriers that know their transport's acknowledgements: tcp): a
  // path with our frames in flight whose transport heard no acknowledgement for
  // max(ack_silence_min, 2 srtt + 4 rttvar) - the transport's own view of its round trip - is
  // failed at once when another path is ready (docs/engine.md "Paths: probes and death"). This
  // is what catches a silent drop of a busy path within tens of ms. Fewer than 3 packets in
  // flight wait at least 200 ms + ack_silence_min (the peer may delay its ACK). 0 = off, the
  // default: on a loaded host a healthy rate-limited path can go 100 ms without a transport
  // ACK (gates G4 and bond failed in CI with 30 and 100 ms). rendr-tun turns it on (30 ms).
  Duration ack_silence_min = std::chrono::milliseconds(0);
  Duration rto_min = std::chrono::milliseconds(20);  // datagram carriers only
  Duration rto_max = std::chrono::seconds(1);
  // prime
  double hysteresis = 0.25;
  Duration dwell = std::chrono::seconds(5);
  Duration cooldown = std::chrono::seconds(30);
  Duration sched_tick = std::chrono::milliseconds(200);
  // Self-load guard: a probe sent while at least this many of our bytes are committed to the
  // path and unacknowledged queues behind them; its RTT feeds the timing windows, not the score.
  std::size_t self_load_bytes = 16 * 1024;
  // bond
  std::size_t bond_pin = 8;
  double bond_stuck_multiplier = 3.0;
  // Lifetime.
  Duration migration_budget = std::chrono::seconds(90);  // default and maximum
  // Server flows only: a flow that received no frame after its HELLO (nothing beyond the
  // HELLO / BRIDGE_TAG that attached its carriers) and lost every carrier ends after this
  // instead of the migration budget - a HELLO whose carrier closed at once is not a client
  // coming back. Zero = off (such flows keep the migration budget). Listeners set it from
  // ListenOptions::silent_flow_timeout.
  Duration silent_budget{0};
  int zombie_max_migrations = 2;
  Duration zombie_cooldown = std::chrono::seconds(30);
  Duration graceful_close_timeout = std::chrono::seconds(2);
  // A client carrier still waiting for HELLO_ACK / BRIDGE_ACK after this is dropped.
  Duration handshake_timeout = std::chrono::seconds(10);
  // Dialing side: the pre-shared key of a keyed listener (ListenOptions::listener_key), 16 to
  // 64 bytes; empty = none. Every HELLO and BRIDGE_TAG then carries a key block (an HMAC over
  // the frame, a time and a nonce; docs/security.md). Server flows ignore it.
  std::vector<std::uint8_t> listener_key;
  // Dialing side: the flow's L3 identity (docs/wire.md "L3 identity"). When set, the HELLO asks
  // for caps bits 1 and 14, the record is the first sequenced frame of the flow (SEQ 1, kept
  // in the replay ledger like data: it survives path deaths and re-dials and is delivered once)
  // and a peer whose HELLO_ACK does not echo both bits ends the flow with peer_unsupported.
  // Server flows ignore it (they learn the peer's: FlowCore::l3_identity()).
  std::optional<L3Identity> l3_identity;
};
// validate_config refuses out-of-range values with invalid_config (budget > 90 s, zero
// intervals, max_payload > kMaxPayload, empty windows, hysteresis <= 0...).
[[nodiscard]] Status validate_config(const FlowConfig& c);

enum class MigrateCause : std::uint8_t { explicit_request, death, quality };
[[nodiscard]] std::string_view to_string(MigrateCause c);

// DeadlineKind: which of a flow's timers is due next (FlowCore::next_deadline_why): migration
// or silent budget, graceful close, coalesced ACK, handshake timeout, HELLO / BRIDGE_TAG
// repeat, next probe, an outstanding probe's expiry, the silence verdict, a write stall, the
// prime scheduler's tick, the ledger head's retransmission timeout.
enum class DeadlineKind : std::uint8_t {
  budget,
  close,
  ack,
  handshake,
  handshake_repeat,
  probe,
  probe_expiry,
  silence,
  stall,
  sched_tick,
  rto,
  transport,
};
inline constexpr std::size_t kDeadlineKinds = 12;
[[nodiscard]] std::string_view to_string(DeadlineKind k);

struct PathInfo {
  PathId id = 0;
  std::string name;
  Framing framing = Framing::stream;
  PathState state = PathState::pending;
  bool active = false;
  bool has_rtt = false;
  Duration srtt{0};
  Duration jitter{0};
  // Latest round trip of a probe sent with nothing of ours unacknowledged on the path (what
  // bond's stuck rule compares); empty before the first.
  std::optional<Duration> clean_rtt;
  std::uint16_t loss_ppt = 0;
  std::uint64_t frames_rx = 0;
  std::uint64_t frames_tx = 0;
  std::uint64_t bytes_rx = 0;
  std::uint64_t bytes_tx = 0;
  std::uint64_t recv_dups = 0;
  std::size_t queued_frames = 0;
  // Filled in by the Asio shell (empty from FlowCore::stats()): carrier kind and addresses.
  std::string transport;
  std::string local;
  std::string remote;
};

struct FlowStats {
  Id128 flow_id{};
  Side side = Side::client;
  FlowState state = FlowState::init;
  Mode mode = Mode::prime;
  PathId active_path = 0;
  std::vector<PathInfo> paths;
  std::uint32_t peer_caps = 0;
  Id128 peer_instance_id{};
  // The flow's L3 identity: the configured one (client), the peer's record (server).
  std::optional<L3Identity> l3_identity;
  std::optional<Refusal> peer_refusal;  // the peer refused the flow (REFUSE received)
  // Half-close: this side called shutdown_write / the peer's SHUTDOWN_WRITE was admitted.
  bool write_shut = false;
  bool peer_write_shut = false;
  std::size_t recv_queue_hwm = 0;
  std::uint64_t recv_dups = 0;
  std::uint64_t bond_stuck_skips = 0;
  std::uint64_t migration_count = 0;
  std::uint64_t malformed_frames = 0;
  std::uint64_t ignored_acks = 0;
  std::uint64_t retransmits = 0;        // RTO re-sends on datagram carriers
  std::uint64_t replayed_frames = 0;    // death and planned-switch replays
  std::uint64_t backpressure_events = 0;
  std::size_t ledger_frames = 0;
  std::size_t ledger_bytes = 0;
  std::size_t ledger_frames_high_water = 0;
  std::size_t ledger_bytes_high_water = 0;
  std::uint64_t published_next = 1;  // next SEQ this side will publish
  std::uint64_t ack_next = 1;        // first SEQ the peer has not acknowledged
  std::uint64_t recv_next = 1;       // first SEQ not yet admitted (what we ACK)
  std::size_t reorder_frames = 0;
  std::size_t delivered_unread = 0;
  std::size_t pooled_buffers = 0;  // recycled frame buffers kept (trimmed when idle >= 2 s)
  std::size_t recv_chunk_bytes = 0;  // receive chunks alive (held by paths and unread payloads)
  std::uint64_t paths_lost = 0;  // paths that went down (any reason)
  std::uint64_t path_redials = 0;  // paths re-dialled by DialOptions::retry (shell-filled)
  std::uint64_t paths_later = 0;   // paths DialOptions::later_paths_after deferred, added since
  // Direct receive (shell-filled, docs/engine.md "Direct receive"): bytes the application's
  // reader received from a carrier itself, how often a carrier's input went to the reader,
  // and how often the io thread took it back (the reader stayed away, a writer waited).
  std::uint64_t direct_rx_bytes = 0;
  std::uint64_t direct_handovers = 0;
  std::uint64_t direct_reclaims = 0;
  std::string last_path_down;    // why the most recent one went down ("" = none yet)
  // Silence reprieves (docs/engine.md "How silence is decided"): a path's freshness window ran
  // out while its socket held unread input (pending) or while our own thread ran the check
  // late (starved); the path was judged again instead of failed.
  std::uint64_t silence_pending_reprieves = 0;
  std::uint64_t silence_starved_reprieves = 0;
  // Paths failed by the transport-silence rule (FlowConfig::ack_silence_min).
  std::uint64_t transport_silence_deaths = 0;
  // Timer lateness (shell-filled): the flow's timer handlers run, how late they ran against
  // their deadline (max; histogram < 1, < 5, < 20, < 100, < 500, >= 500 ms) and the longest
  // io-thread handler of the flow (timer, service, carrier input; time under the flow's lock)
  // and the longest wait of such a handler for that lock (held by an application thread).
  std::uint64_t timer_fired = 0;
  Duration timer_late_max{0};
  std::array<std::uint64_t, 6> timer_late_hist{};
  Duration handler_max{0};
  Duration io_lock_wait_max{0};
  // Timers armed for a deadline already past (the core's deadline was overdue when the shell
  // armed it: work the core asked for that no timer could have run in time), and by how much.
  std::uint64_t timer_armed_late = 0;
  Duration timer_armed_late_max{0};
  // The same by the kind of the overdue deadline (index: DeadlineKind).
  std::array<std::uint64_t, kDeadlineKinds> timer_armed_late_by_kind{};
  std::array<Duration, kDeadlineKinds> timer_armed_late_max_by_kind{};
};

}  // namespace rendr::engine
