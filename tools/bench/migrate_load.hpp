// SPDX-License-Identifier: Apache-2.0
// Parts of `rendr-bench migrate` that move flows under load (the gateway lab with rendr-agent and
// rendr-fileserver on hosts a and b): per-migration stalls of a bulk download as its client sees
// them, and one batch of saturating downloads. Also the lab helpers the other parts share.
#pragma once

#include "lab/agent_stack.hpp"
#include "lab/gateway_lab.hpp"

#include <rendr/common/result.hpp>
#include <rendr/common/unique_fd.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace rendr::bench {

using Clock = std::chrono::steady_clock;

[[nodiscard]] double ms_between(Clock::time_point a, Clock::time_point b);
// file_byte: byte |i| of the bench's served file (so a client checks every byte it gets).
[[nodiscard]] std::uint8_t file_byte(std::uint64_t i);
// connect_vip: a TCP connection from the lab's peer namespace to VIP:|port|.
[[nodiscard]] Result<UniqueFd> connect_vip(const lab::GatewayLab& lab, std::uint16_t port);
// server_tuple: the client socket |fd|'s connection as the server sees it ("vip:p peer:q").
[[nodiscard]] std::string server_tuple(int fd);

// write_bench_file writes |size| bytes of file_byte() to |path|.
[[nodiscard]] Status write_bench_file(const std::string& path, std::uint64_t size);
// start_fileservers runs rendr-fileserver (service "http", VIP:8080, files from |root|) on hosts
// a and b, registered with their agents, and waits (bounded) until each is ready.
void start_fileservers(lab::AgentStack& stack, const std::string& root);

// request_file connects to VIP:8080 (rendr-fileserver) and asks for |file|; |half_close| shuts
// the client's sending side down after the request (the server's socket goes to CLOSE_WAIT).
[[nodiscard]] Result<UniqueFd> request_file(const lab::GatewayLab& lab, const std::string& file,
                                            bool half_close = false);
struct Download {
  std::uint64_t got = 0;  // body bytes received
  std::uint64_t bad = 0;  // of them, different from file_byte()
  std::string error;      // why it stopped short ("" when complete)
};
// read_body reads the response on |fd| until |size| body bytes arrived, the server closed, or
// nothing arrived for |idle_timeout_ms|; every byte is checked against file_byte().
[[nodiscard]] Download read_body(int fd, std::uint64_t size, int idle_timeout_ms = 20000);

struct StallOptions {
  std::string file;         // served by rendr-fileserver on 10.99.0.1:8080 at both hosts
  std::uint64_t size = 0;   // its size
  bool half_close = false;  // the client shuts down its sending side after the request
  int migrations = 10;      // stall samples wanted
  std::chrono::milliseconds interval{250};  // between the end of one migration and the next
  int max_downloads = 8;    // bound: downloads started to collect the samples
};
struct StallResult {
  std::vector<double> stall_ms;   // per committed migration: the longest gap in arriving data
  std::vector<double> frozen_ms;  // per committed migration: the agent's freeze-to-commit time
  std::uint64_t committed = 0;
  std::uint64_t after_end = 0;    // asked after the server had finished the flow
  std::uint64_t bytes_bad = 0;    // wrong or missing body bytes
  double baseline_gap_ms = 0;     // the longest gap of a download without migrations
  std::string failures;
};
// measure_stalls downloads |file| repeatedly (from host a first) while it migrates the flow
// between a and b every |interval|; a migration's stall is the longest gap between two receives
// of the client whose interval overlaps the migration request (from asking to the report).
[[nodiscard]] StallResult measure_stalls(const lab::GatewayLab& lab, const lab::AgentStack& stack,
                                         const StallOptions& o);

struct BusyBatchResult {
  std::uint64_t flows = 0;     // downloads in the batch
  std::string result;          // the agent's report: committed / aborted / ...
  double frozen_ms = 0;        // the batch's freeze-to-commit time
  double total_ms = 0;         // the migrate request, end to end
  std::uint64_t bytes_carried = 0;
  std::uint64_t bytes_bad = 0;
  std::string steps;  // the report's "steps_ms" object
  std::string failures;
};
// measure_busy_batch starts |flows| downloads of |file| from host a, reads them all as fast as
// it can, and moves every flow of the service "http" to b in one migrate request.
[[nodiscard]] BusyBatchResult measure_busy_batch(const lab::GatewayLab& lab,
                                                 const lab::AgentStack& stack,
                                                 const std::string& file, std::uint64_t size,
                                                 int flows);

}  // namespace rendr::bench
