// SPDX-License-Identifier: Apache-2.0
// Steerer: the gateway's tc steering family (progs/steer_tc.bpf.c). Attached at clsact ingress
// of the device facing the peers, it forwards every TCP packet addressed to a VIP to the backend
// host that owns its flow (bpf_redirect_neigh out of the backend's device, kernel >= 5.10).
// Flows with no entry go to the default backend and are pinned there on their first packet, so
// changing the default or adding a backend never moves a live flow; moving a flow is an
// explicit steer(). Non-TCP packets and packets to other addresses pass to the gateway's stack.
//
// Owns the loaded program, its maps and its tc filters (detached on destruction). Not
// synchronised: one thread at a time; map updates are atomic per entry.
#pragma once

#include <rendr/common/endpoint.hpp>
#include <rendr/common/result.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace rendr::ebpf {

// Backend: where a backend host is reached from the gateway: the egress device and, if the
// host is not the packet's destination's FIB neighbour, the nexthop address (port ignored).
struct Backend {
  int ifindex = 0;
  std::optional<Endpoint> nexthop;
};

// SteeredFlow: one flow table entry. flow.local is the VIP side, flow.remote the peer.
struct SteeredFlow {
  FourTuple flow;
  std::uint32_t backend = 0;
  bool pinned = false;  // inserted by the datapath (default backend), not by steer()
  // End-of-flow evidence the datapath saw (the server's side needs attach_return).
  bool peer_fin = false;
  bool peer_rst = false;
  bool server_fin = false;
  bool server_rst = false;
  // CLOCK_MONOTONIC ns of the flow's last packet seen (1 s granularity); 0: none since steer().
  std::uint64_t last_seen_ns = 0;
};

// CollectOptions: when collect() removes the entry of a flow that ended. Entries without a FIN
// from both sides or an RST are never removed: a live flow, however idle, keeps its entry.
struct CollectOptions {
  std::uint64_t now_ns = 0;                  // CLOCK_MONOTONIC; 0: read the clock
  std::uint64_t fin_linger_ns = 60'000'000'000;  // both FINs seen, then quiet this long
  std::uint64_t rst_linger_ns = 10'000'000'000;  // an RST seen, then quiet this long
};
struct CollectResult {
  std::size_t examined = 0;
  std::size_t removed = 0;
};

struct SteerCounters {
  std::uint64_t table = 0;       // steered by an existing entry
  std::uint64_t pinned = 0;      // new flows pinned to the default backend
  std::uint64_t unpinned = 0;    // sent to the default without pinning (RST, table full)
  std::uint64_t not_vip = 0;     // TCP to a non-VIP address: passed
  std::uint64_t no_backend = 0;  // dropped: no default backend or empty backend slot
  std::uint64_t table_full = 0;  // pinning failed
};

struct BackendCounters {
  std::uint64_t packets = 0;
  std::uint64_t bytes = 0;
};

struct SteererOptions {
  std::uint32_t max_flows = 65536;
  // tc_handle: nonzero = every steering filter takes this handle at a fixed priority and
  // replaces the one there, and attach()/attach_return() first copy the flow table of the
  // program they replace (a gateway agent restarted after a crash keeps steering the flows that
  // live on non-default backends; backend indices are translated by device and next hop, so set
  // the backends first). 0: the kernel picks a handle, nothing is adopted.
  std::uint32_t tc_handle = 0;
};

// AdoptCounts: flow entries attach() took over from a replaced steering program.
struct AdoptCounts {
  std::size_t adopted = 0;
  std::size_t dropped = 0;  // their backend is not configured any more
};

class Steerer {
 public:
  // kMaxBackends bounds backend indices: [0, kMaxBackends).
  static constexpr std::uint32_t kMaxBackends = 256;

  // create opens and loads steer_tc; attaches nothing. Errors as Freezer::create.
  [[nodiscard]] static Result<Steerer> create(const SteererOptions& options = {});

  Steerer(Steerer&&) noexcept;
  Steerer& operator=(Steerer&&) noexcept;
  ~Steerer();

  // attach adds the program at clsact ingress of |ifindex| (calling thread's netns).
  [[nodiscard]] Status attach(int ifindex);
  // attach_return adds steer_return at clsact ingress of a backend-facing device |ifindex|:
  // it records the servers' FIN / RST of steered flows (for collect) and changes nothing.
  [[nodiscard]] Status attach_return(int ifindex);
  // adopted: what attach()/attach_return() took over so far (SteererOptions::tc_handle).
  [[nodiscard]] AdoptCounts adopted() const;

  // add_vip / remove_vip list the addresses (port ignored) whose traffic is steered.
  [[nodiscard]] Status add_vip(const Endpoint& vip);
  [[nodiscard]] Status remove_vip(const Endpoint& vip);

  // set_backend fills slot |index|; clear_backend empties it (its flows are then dropped until
  // steered elsewhere). EINVAL: index out of range, ifindex <= 0, nexthop family mismatch.
  [[nodiscard]] Status set_backend(std::uint32_t index, const Backend& backend);
  [[nodiscard]] Status clear_backend(std::uint32_t index);
  // set_default_backend chooses where new flows go; clear_default_backend drops them instead.
  [[nodiscard]] Status set_default_backend(std::uint32_t index);
  [[nodiscard]] Status clear_default_backend();

  // steer sends |flow| (local = VIP:port, remote = peer) to |backend| from its next packet on,
  // replacing any entry. remove forgets it (ENOENT if absent): its next packet re-pins it.
  [[nodiscard]] Status steer(const FourTuple& flow, std::uint32_t backend);
  [[nodiscard]] Status remove(const FourTuple& flow);
  [[nodiscard]] Result<std::optional<SteeredFlow>> lookup(const FourTuple& flow) const;
  // flows lists the flow table (explicit and pinned entries).
  [[nodiscard]] Result<std::vector<SteeredFlow>> flows() const;

  // collect removes the entries of flows that ended (CollectOptions); the agent runs it
  // periodically. A flow that sends again after its entry went is pinned afresh to the default.
  [[nodiscard]] Result<CollectResult> collect(const CollectOptions& options = {});

  [[nodiscard]] Result<SteerCounters> counters() const;
  [[nodiscard]] Result<BackendCounters> backend_counters(std::uint32_t index) const;

  // program_fd_for_test exposes the loaded program for BPF_PROG_TEST_RUN.
  [[nodiscard]] int program_fd_for_test() const;
  // return_program_fd_for_test: steer_return, likewise.
  [[nodiscard]] int return_program_fd_for_test() const;

 private:
  struct Impl;
  explicit Steerer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace rendr::ebpf
