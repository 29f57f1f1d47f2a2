// SPDX-License-Identifier: Apache-2.0
// rendr-agent: the per-flow operations of a migration that depend on how a connection is
// terminated on this host - its method. The batch executor (migrate_steps.cpp,
// migrate_undo.cpp, migrate_target.cpp, driven by the I/O-free SourceMigration /
// StagedMigration cores) calls only these and never branches on the method:
//   native     a kernel socket: eBPF freeze + TCP_REPAIR checkpoint/restore (native_flow.cpp)
//   userstack  an lwIP connection behind a pump: the Stack's shim freeze + lwIP snapshot /
//              restore (userstack_flow.cpp)
// A snapshot is the same TcpSnapshot value for both, so any source method pairs with any
// target method. Private to rendr-agent.
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>
#include <rendr/common/tcp_snapshot.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/repair/repair.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

namespace rendr::agents {

using Packets = std::vector<std::vector<std::byte>>;

// SourceFlow: one exported flow on the source, from its freeze to release (committed) or to
// thaw + unfreeze (aborted). |exported_fd| (the server's descriptor, held by the batch) stays
// the connection's handle for the server throughout: it is returned to the server on abort.
class SourceFlow {
 public:
  virtual ~SourceFlow() = default;
  // checkpoint freezes the flow (nothing reaches or leaves it any more) and captures it.
  [[nodiscard]] virtual Result<TcpSnapshot> checkpoint() = 0;
  // freeze_hints: (peer_ack hint, packets the freeze dropped from the server) for the offer
  // (Tag::peer_ack, Tag::server_dropped); zeros when the method has none.
  [[nodiscard]] virtual std::pair<std::uint64_t, std::uint64_t> freeze_hints() const = 0;
  // peer_ack_hint: what the peer acknowledged while frozen (Tag::peer_ack at commit), 0 if none.
  [[nodiscard]] virtual std::uint64_t peer_ack_hint() const = 0;
  // take_held: what the peer sent into the freeze (IP packets), for the target to replay. The
  // flow stays frozen here (stray packets are not answered) until release() ends that.
  [[nodiscard]] virtual Packets take_held() = 0;
  // unrecorded: packets the peer sent into the freeze that could not be kept for replay (too
  // large to record, or the ring was full); the peer retransmits those. 0 when the method
  // holds everything it counts elsewhere.
  [[nodiscard]] virtual std::uint64_t unrecorded() const { return 0; }
  // release: the flow lives on the target now: drop it here silently (no FIN, no RST); its
  // freeze lifts after the agent's freeze grace.
  virtual void release() = 0;
  // thaw (abort, after a checkpoint): the connection is whole here again, still frozen.
  [[nodiscard]] virtual Status thaw() = 0;
  // unfreeze (abort): lift the freeze; the connection serves again (a no-op when not frozen).
  virtual void unfreeze() = 0;
  // captured: checkpoint() succeeded (thaw() has something to undo).
  [[nodiscard]] virtual bool captured() const = 0;
};

// StagedFlow: one connection restored on the target while its migration is staged; it stays
// frozen (silent) until activate() or release().
class StagedFlow {
 public:
  virtual ~StagedFlow() = default;
  [[nodiscard]] virtual const FourTuple& tuple() const = 0;
  [[nodiscard]] virtual const TcpSnapshot& snapshot() const = 0;
  // activate (COMMIT): the connection goes live; |replay| (from the source, oldest first) and
  // what reached this host while staged are fed to it; returns the fd for the server.
  [[nodiscard]] virtual Result<UniqueFd> activate(std::optional<repair::PeerAck> peer_ack,
                                                  Packets replay) = 0;
  // release (an offer rejected): drop it silently and lift its freeze here.
  virtual void release() = 0;
  // release_staged (abort or expiry of a staged move): drop it silently; its freeze here stays
  // for the agent's freeze grace, since the gateway may already send the peer here (the source
  // died after STEER and steers back only once restarted): a packet that found no connection
  // would be answered with a RST.
  virtual void release_staged() = 0;
};

}  // namespace rendr::agents
