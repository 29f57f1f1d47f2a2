// SPDX-License-Identifier: Apache-2.0
// Valid TcpSnapshot values covering the codec's shapes: every supported state, IPv4 / IPv6
// (scoped, v4-mapped), empty and non-empty queues, with and without TCP_REPAIR_WINDOW, sequence
// numbers that wrap inside a queue. They seed the snapshot decoder fuzzer's corpus
// (rendr_fuzz_seedgen writes them out; replayed by rendr_unit_snapshot_corpus, so the corpus is
// generated, never checked in as binaries) and drive repair's fake-syscall unit tests.
// Deterministic; no I/O. Compiled into the executables that use it (header + one .cpp).
#pragma once

#include <rendr/common/tcp_snapshot.hpp>

#include <string>
#include <vector>

namespace rendr::test {

struct SampleSnapshot {
  std::string name;  // file-name friendly: "established-v4-queues"
  TcpSnapshot snapshot;
};

[[nodiscard]] std::vector<SampleSnapshot> sample_snapshots();

}  // namespace rendr::test
