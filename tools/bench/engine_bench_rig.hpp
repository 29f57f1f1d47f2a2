// SPDX-License-Identifier: Apache-2.0
// The engine's multipath rig, shared by `rendr-bench engine` and the priv acceptance tests
// (tests/priv/engine): a MultipathLab (client/server namespaces, N veth paths), a rendr listener
// in the server namespace and dialers in the client namespace, plus the two workloads the gates
// measure - a bulk transfer (SHA-256 both ends, largest gap between receiver reads) and an echo
// loop (per-message RTT, losses). Needs root; everything stays inside the lab's namespaces and is
// torn down by the rig's destructor.
#pragma once

#include "bench/stats.hpp"
#include "bench/thread_cpu.hpp"

#include "lab/multipath_lab.hpp"

#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>
#include <rendr/engine/conn.hpp>
#include <rendr/engine/dialer.hpp>
#include <rendr/engine/listener.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace rendr::bench {

class EngineRig {
 public:
  // create builds the lab |prefix| (removing leftovers first).
  [[nodiscard]] static Result<std::unique_ptr<EngineRig>> create(const std::string& prefix,
                                                                 lab::MultipathOptions opt);
  ~EngineRig();
  EngineRig(const EngineRig&) = delete;
  EngineRig& operator=(const EngineRig&) = delete;

  lab::MultipathLab& lab() { return *lab_; }
  // in_client / in_server run |f| on this thread inside that namespace (sockets created by |f|
  // stay there).
  Status in_client(const std::function<Status()>& f);
  Status in_server(const std::function<Status()>& f);

  // listen_tcp / listen_udpflow: a listener on 0.0.0.0:0 in the server namespace.
  [[nodiscard]] Result<ListenerPtr> listen_tcp(ListenOptions o);
  [[nodiscard]] Result<ListenerPtr> listen_udpflow(ListenOptions o);
  // path: path |i|'s server address with |port| (tcp or udpflow), named "p<i>".
  [[nodiscard]] static PathSpec path(int i, std::uint16_t port, const std::string& transport = "tcp");
  // dial / add_path from the client namespace.
  [[nodiscard]] Result<ConnPtr> dial(Dialer& d);
  [[nodiscard]] Result<PathId> add_path(Conn& c, const PathSpec& spec);

 private:
  EngineRig() = default;
  std::unique_ptr<lab::MultipathLab> lab_;
  UniqueFd client_fd_;
  UniqueFd server_fd_;
};

struct TransferResult {
  double seconds = 0;       // first write to the receiver's EOF
  double max_gap_ms = 0;    // longest time between two receiver reads (after the first byte)
  std::uint64_t bytes = 0;  // received
  std::string sha_sent;
  std::string sha_received;
  std::string error;        // empty on success
  CpuTime writer_cpu;       // the writer thread's own CPU time (application side of sending)
  CpuTime reader_cpu;       // the reading (calling) thread's
};
// transfer writes |total| deterministic bytes client -> server, closes the client, and reads
// to EOF on the server. |on_progress(written)| runs on the writer thread after every chunk.
// With |digest| false no SHA-256 is computed (throughput comparisons).
[[nodiscard]] TransferResult transfer(Conn& client, Conn& server, std::uint64_t total,
                                      const std::function<void(std::uint64_t)>& on_progress = {},
                                      bool digest = true);

struct EchoResult {
  std::vector<double> rtt_ms;  // per message, in order
  int lost = 0;                // messages without a correct reply within the timeout
  std::string error;
};
// echo sends a 16-byte message every |interval| for |count| messages (or until |stop|), the
// server echoes it, and measures each round trip; |each(i)| runs before message i.
[[nodiscard]] EchoResult echo(Conn& client, Conn& server, std::chrono::milliseconds interval,
                              int count, const std::function<void(int)>& each = {},
                              std::chrono::milliseconds timeout = std::chrono::seconds(10));

struct G1Result {
  double base_s = 0;      // the transfer without migrations
  double migrate_s = 0;   // the same with migrations at 30/50/70 %
  double max_gap_ms = 0;  // longest pause between receiver reads, with migrations
  std::string error;      // empty on success
  [[nodiscard]] double ratio() const { return base_s > 0 ? migrate_s / base_s : 0; }
};
// g1: G1's time ratio. |bytes| over a flow dialed with |paths| (two or more) and accepted
// from |from|, once without migrations and once migrating to the other path at 30, 50 and
// 70 % written; SHA-256 checked both times.
[[nodiscard]] G1Result g1(EngineRig& rig, Listener& from, const std::vector<PathSpec>& paths,
                          std::uint64_t bytes,
                          const std::function<void(const std::string&)>& progress);

// lab_failover_config: probing for quick failover in labs (probe 50 ms, freshness 150 ms..1 s).
[[nodiscard]] engine::FlowConfig lab_failover_config();

}  // namespace rendr::bench
