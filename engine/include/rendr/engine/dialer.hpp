// SPDX-License-Identifier: Apache-2.0
// Dialer: opens rendr flows (Conn / PacketConn) over one or more paths. The options are the
// flow's knobs (engine::FlowConfig: mode, hysteresis, dwell, cooldown, migration_budget <= 90 s,
// probe_interval, zombie limits, bond_pin / bond_stuck_multiplier, windows...) plus the paths.
//
// A listener key (FlowConfig::listener_key, 16-64 bytes) seals every HELLO and BRIDGE_TAG for a
// keyed listener (ListenOptions::listener_key; docs/security.md "Listener key").
//
// Dial algorithm: a fresh random 16-byte flow_id; every path in order is dialled with its
// transport's factory; the first carrier carries HELLO, the others BRIDGE_TAG once HELLO_ACK is
// in. dial returns when the handshake is done and every dialled path is ready or gone (or the
// deadline passed with the handshake done); with DialOptions::later_paths_after only the first
// path that dials is, the others follow in the background. Paths that fail to dial are skipped (use
// Admin::add_path to bring one back, or DialOptions::retry to have it re-dialled in the
// background); no path at all is an error.
//
// A Dialer runs its flows on its own io thread, or on |io| when given (run it from exactly one
// thread). Flows outlive the Dialer. Thread-safe after construction except for add_*_factory.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/engine/carrier.hpp>
#include <rendr/engine/conn.hpp>
#include <rendr/engine/types.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace asio {
class io_context;
}

namespace rendr {

namespace detail {
class IoRuntime;
}

// RetryPolicy: background re-dial of the client's paths. A path that dies (carrier error,
// silence, a stalled write) or could not be dialled at all is dialled again with backoff
// (min_backoff, doubling to max_backoff; each attempt bounded by attempt_timeout) and attached
// with BRIDGE_TAG, until it is back, the flow ends, or the path was removed with remove_path.
// Off by default (as in the reference); rendr-bench and the gates call add_path themselves.
struct RetryPolicy {
  bool enabled = false;
  std::chrono::milliseconds min_backoff{500};
  std::chrono::milliseconds max_backoff{5000};
  std::chrono::milliseconds attempt_timeout{10000};
};

struct DialOptions : engine::FlowConfig {
  std::vector<PathSpec> paths;
  RetryPolicy retry;
  // Zero (the default): every path is dialled at once. Otherwise only the first path that can
  // be dialled is, and the flow's other paths are added (BRIDGE_TAG) this long after the
  // handshake - or as soon as the application moved later_paths_bytes through the flow (read
  // plus written; 0 = by time only) - from a background thread, unless the flow ended by then:
  // a short flow (a TUN ingress's request/response) then never pays a carrier connect and a
  // BRIDGE_TAG per extra path on both sides, a busy one gets them at once. Until they come the
  // flow has one path; if it dies the flow waits for them (within migration_budget). A deferred
  // path that fails to dial is re-dialled only with retry.enabled. Counted in
  // FlowStats::paths_later.
  std::chrono::milliseconds later_paths_after{0};
  std::uint64_t later_paths_bytes = 0;
  // Zero: a fresh random instance id per Dialer.
  engine::Id128 instance_id{};
  // Run flows on this io_context (owned by the caller, run by one thread) instead of an own
  // thread.
  asio::io_context* io = nullptr;
};

class Dialer {
 public:
  // Errors: invalid_config (FlowConfig out of range, no paths).
  [[nodiscard]] static Result<std::unique_ptr<Dialer>> create(DialOptions opts);
  ~Dialer();
  Dialer(const Dialer&) = delete;
  Dialer& operator=(const Dialer&) = delete;

  // add_stream_factory / add_packet_factory register a carrier kind under |name| for this
  // Dialer's paths. Errors: invalid_argument (empty name, a built-in name, already taken).
  [[nodiscard]] Status add_stream_factory(const std::string& name, StreamFactory f);
  [[nodiscard]] Status add_packet_factory(const std::string& name, PacketFactory f);

  // dial opens a stream flow. Errors: the first path's dial error when no path could be dialled,
  // not_supported (unknown transport), timed_out (handshake not done by |deadline|),
  // the flow's close error (e.g. peer_protocol when the peer is not rendr).
  [[nodiscard]] Result<ConnPtr> dial(Deadline deadline = deadline_in(std::chrono::seconds(10)));
  // dial_packet opens a packet flow (caps bit 0); the peer must accept packet flows.
  [[nodiscard]] Result<PacketConnPtr> dial_packet(
      Deadline deadline = deadline_in(std::chrono::seconds(10)));
  // The same with this flow's own L3 identity (instead of DialOptions::l3_identity): one Dialer
  // serves every flow of a TUN ingress. Errors: those of dial / dial_packet, invalid_config
  // (an identity the record cannot carry), peer_unsupported (the peer does not read it).
  [[nodiscard]] Result<ConnPtr> dial(const engine::L3Identity& identity,
                                     Deadline deadline = deadline_in(std::chrono::seconds(10)));
  [[nodiscard]] Result<PacketConnPtr> dial_packet(
      const engine::L3Identity& identity,
      Deadline deadline = deadline_in(std::chrono::seconds(10)));

  // async_dial: dial(identity, deadline) without blocking. |done| runs once, on this Dialer's
  // io thread (so a handler may start the Conn's async operations at once), with the Conn or
  // the error dial would return. Every path is dialled at once: tcp connects through the io
  // thread's reactor, other transports (blocking factories) on a thread of their own each.
  // Blocking calls on the Conn must not be made from |done| (it runs on the io thread).
  void async_dial(const engine::L3Identity& identity, Deadline deadline,
                  std::function<void(Result<ConnPtr>)> done);

  [[nodiscard]] const DialOptions& options() const { return opts_; }

 private:
  Dialer() = default;
  DialOptions opts_;
  std::shared_ptr<detail::IoRuntime> rt_;
  std::map<std::string, StreamFactory> stream_factories_;
  std::map<std::string, PacketFactory> packet_factories_;
};

}  // namespace rendr
