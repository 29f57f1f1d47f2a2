// SPDX-License-Identifier: Apache-2.0
// bench.*_smoke (ctest, label priv): run `rendr-bench repair|migrate|hostile|userstack|engine|
// ingress --json` with tiny counts and check that it exits 0 and that the last stdout line is a
// JSON object carrying the documented keys (migrate: also zero RST, zero bytes lost, and a PNG
// from --plot). They never assert on timing (the bench reports against its targets). Like
// tests/support/priv_main.cpp it first probes what it needs (a network namespace, TCP_REPAIR)
// with the capability probe and prints one "SKIP ..." line and exits 77 when that fails - or
// "FAIL ..." and 1 under CI=true / RENDR_REQUIRE_PRIV=1, where a skip would hide bugs.
#include <rendr/agents/capabilities.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

// probe tries what the benches need with the one capability probe
// (rendr/agents/capabilities.hpp): a network namespace and TCP_REPAIR, nothing else.
std::string probe(const std::string& which) {
  rendr::agents::ProbeOptions o;
  // userstack: its own namespace and TUN, then agent labs with a native host (TCP_REPAIR).
  // ingress: the ingress lab's namespaces and TUN only.
  o.only = which == "userstack" ? std::vector<std::string>{"netns", "tun", "tcp_repair"}
           : which == "ingress" ? std::vector<std::string>{"netns", "tun"}
                                : std::vector<std::string>{"netns", "tcp_repair"};
  const auto report = rendr::agents::probe_capabilities(o);
  std::string why;
  for (const auto& cap : o.only) {
    if (!report.ok(cap)) {
      why += (why.empty() ? "" : ", ") + cap + " (" + report.detail(cap) + ")";
    }
  }
  return why;
}

bool required() {
  const char* ci = std::getenv("CI");
  const char* req = std::getenv("RENDR_REQUIRE_PRIV");
  return (ci != nullptr && std::string(ci) == "true") ||
         (req != nullptr && std::string(req) == "1");
}

struct Spec {
  std::string args;                      // after "rendr-bench"
  std::vector<std::string> keys;         // must appear as "key":
  std::vector<std::string> exact;        // must appear verbatim
  std::vector<std::string> numbers;      // must appear as "key":<number> (not null)
};

bool file_is_png(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return false;
  }
  unsigned char magic[8] = {};
  std::size_t n = std::fread(magic, 1, sizeof magic, f);
  std::fclose(f);
  static const unsigned char kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  return n == 8 && std::memcmp(magic, kPng, 8) == 0;
}

}  // namespace

// usage: rendr_bench_smoke <rendr-bench> [repair|migrate|hostile|userstack|g3quic|ingress]
int main(int argc, char** argv) {
  const bool help = argc >= 2 && (std::strcmp(argv[1], "-h") == 0 ||
                                  std::strcmp(argv[1], "--help") == 0);
  if (help || argc < 2 || argc > 3) {
    std::fprintf(help ? stdout : stderr,
                 "usage: %s <path to rendr-bench> [repair|migrate|hostile|userstack|g3quic|"
                 "ingress]\n"
                 "Runs that rendr-bench subcommand with tiny counts (--json) and checks its exit\n"
                 "status and the documented keys of its last line (ctest bench.*_smoke).\n",
                 argv[0]);
    return help ? 0 : 2;
  }
  const std::string which = argc == 3 ? argv[2] : "repair";
  if (std::string why = probe(which); !why.empty()) {
    std::printf("%s %s: needs %s; run as root or via vm-tests\n", required() ? "FAIL" : "SKIP",
                argv[0], why.c_str());
    return required() ? 1 : 77;
  }
  Spec spec;
  std::string plot;
  if (which == "repair") {
    spec.args = "repair --json --quiet --idle-iters 20 --warmup 5 --queued-iters 3 "
                "--queue-bytes 64Ki --batch 50 --batch-verify 50 --variants";
    spec.keys = {"kernel", "idle_iterations", "queued_iterations", "idle_p50_us", "idle_p99_us",
                 "queued_p50_us", "queued_p99_us", "checkpoint_p50_us", "restore_p50_us",
                 "batch_10000_s", "batch_s", "batch_per_socket_us", "batch_sockets",
                 "batch_verified", "variants", "kick_off_probe_off", "idle_vs_minimal_ratio",
                 "minimal_p50_us"};
    // Tiny runs must still have measured what they were asked to.
    spec.exact = {"\"idle_iterations\":20", "\"minimal_iterations\":20", "\"queued_iterations\":3", "\"batch_sockets\":50",
                  "\"batch_verified\":50"};
  } else if (which == "migrate") {
    char tmpl[] = "/tmp/rendr-bench-smoke-XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) {
      std::printf("FAIL: mkdtemp: %s\n", std::strerror(errno));
      return 1;
    }
    plot = std::string(tmpl) + "/bulk.png";
    spec.args = "migrate --json --migrations 3 --batch 50 --bulk-mib 64 --stall-migrations 2 "
                "--busy-flows 5 --plot " + plot;
    spec.keys = {"downtime_p50_ms", "downtime_p99_ms", "bulk_throughput_ratio", "batch_1000_s",
                 "rst_seen", "bytes_lost", "echo_baseline_p99_ms", "frozen_p99_ms",
                 "bulk_timeline_mib_s_migrated", "bulk_timeline_t_s_migrated",
                 "bulk_migration_marks_s", "bulk_plot", "bulk_migrations_committed",
                 "bulk_migrations_after_end", "bulk_stall_p50_ms", "bulk_stall_max_ms",
                 "halfclose_stall_max_ms", "busy_batch50_frozen_ms", "bulk_stall_ms"};
    // Correctness is asserted even in a smoke run: nothing lost, no reset, every sample taken.
    spec.exact = {"\"migrations\":3", "\"batch_connections\":50", "\"rst_seen\":0",
                  "\"bytes_lost\":0", "\"busy_batch_flows\":5"};
  } else if (which == "hostile") {
    spec.args = "hostile --json --hellos 600 --sources 10 --settle-s 0 --slowloris 60 "
                "--fault-mib 32";
    spec.keys = {"legit_dial_ok_during_flood", "legit_dial_ok_after_flood",
                 "listener_rss_growth_mb", "agent_rss_after_flood_mb",
                 "unauthorized_actions_accepted", "faults_tried", "connections_lost"};
    // Correctness even in a smoke run: no action of a stranger carried out, no connection
    // lost to an agent fault, the legitimate client served after the flood.
    spec.exact = {"\"unauthorized_actions_accepted\":0", "\"connections_lost\":0",
                  "\"faults_tried\":3", "\"legit_dial_ok_after_flood\":1",
                  "\"agent_crashes\":0", "\"hostile_hellos\":600"};
  } else if (which == "userstack") {
    spec.args = "userstack --json --quiet --mib 8 --restore-iters 50 --moves 2";
    spec.keys = {"rx_gbps", "tx_gbps", "raw_kernel_gbps", "snapshot_restore_p50_us",
                 "snapshot_restore_p99_us", "rx_vs_raw_ratio", "tx_vs_raw_ratio"};
    // Every cycle rebuilt the connection (and the ping-pongs through it answered).
    spec.exact = {"\"snapshot_restore_cycles\":50", "\"mib\":8", "\"rx_hold_dropped\":0",
                  "\"moves\":2", "\"moves_bytes_lost\":0", "\"moves_failures\":\"\""};
    // Two moves per lab: one n2u and one u2n in the mixed lab, two u->u.
    spec.numbers = {"u2n_stall_ms", "n2u_stall_ms", "migrate_downtime_p50_ms"};
  } else if (which == "ingress") {
    spec.args = "ingress --json --quiet --mib 16 --runs 2 --pre-mib 4 --post-ms 500 "
                "--flow-clients 4 --flows-ms 500";
    spec.keys = {"e2e_gbps", "raw_gbps", "failover_stall_ms_p50", "failover_stall_ms_max",
                 "flows_per_s", "raw_flows_per_s", "flows_vs_raw_ratio", "e2e_cpu_s",
                 "flows_cpu_s", "failover_runs_failed"};
    // Every byte checked against the origin's pattern (the bench exits 1 otherwise), each
    // download whole, both failover runs completed at the app (no reset, no 20 s silence).
    spec.exact = {"\"bytes_intact\":true", "\"e2e_bytes\":16777216", "\"raw_bytes\":16777216",
                  "\"failover_runs\":2", "\"failover_runs_failed\":0", "\"flows_failed\":0",
                  "\"raw_flows_failed\":0"};
    spec.numbers = {"e2e_gbps", "raw_gbps", "failover_stall_ms_p50", "flows_per_s",
                    "raw_flows_per_s"};
  } else if (which == "g3quic") {
    // G3 on one quic datagram path at a low rate: 2 s baseline, 2 s with 10 rebinds. And the
    // dgramcap section (one 1 s run each of quic datagram and udpflow at 5 000 pps offered),
    // and G1 over two quic stream paths with 16 MiB.
    spec.args =
        "engine --json --only g3quic,dgramcap,g1quic --g3-seconds 2 --g3-pps 2000 "
        "--dgramcap-seconds 1 --dgramcap-runs 1 --dgramcap-pps 5000 --g1-quic-mib 16";
    spec.keys = {"g3_quic_pps",
                 "g3_quic_sent",
                 "g3_quic_missing",
                 "g3_quic_dups",
                 "g3_quic_rebinds",
                 "g3_quic_rtt_p95_ms",
                 "g3_quic_rtt_p95_baseline_ms",
                 "g3_quic_rtt_p95_ratio",
                 "udpflow_pps",
                 "quic_dgram_pps",
                 "quic_dgram_vs_udpflow_ratio",
                 "dgramcap_missing",
                 "dgramcap_dups"};
    // Every packet arrived exactly once, every rebind was done in place (no migration).
    spec.exact = {"\"g3_quic_sent\":8000",  "\"g3_quic_missing\":0",    "\"g3_quic_dups\":0",
                  "\"g3_quic_rebinds\":10", "\"g3_quic_migrations\":0", "\"dgramcap_missing\":0",
                  "\"dgramcap_dups\":0"};
    spec.numbers = {"g3_quic_pps",   "g3_quic_rtt_p95_ms", "g3_quic_rtt_p95_baseline_ms",
                    "udpflow_pps",   "quic_dgram_pps",     "quic_dgram_vs_udpflow_ratio",
                    "g1_quic_ratio", "g1_quic_base_s",     "g1_quic_migrate_s"};
  } else {
    std::fprintf(stderr, "%s: unknown bench %s\n", argv[0], which.c_str());
    return 2;
  }
  const std::string cmd = std::string("'") + argv[1] + "' " + spec.args;
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) {
    std::printf("FAIL: popen: %s\n", std::strerror(errno));
    return 1;
  }
  std::string out;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
    out.append(buf, n);
  }
  int status = ::pclose(p);
  std::fputs(out.c_str(), stdout);
  int bad = 0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::printf("FAIL: rendr-bench %s exited with status %d\n", which.c_str(),
                WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    ++bad;
  }
  while (!out.empty() && out.back() == '\n') {
    out.pop_back();
  }
  const std::string last = out.substr(out.rfind('\n') == std::string::npos ? 0 : out.rfind('\n') + 1);
  if (last.size() < 2 || last.front() != '{' || last.back() != '}') {
    std::printf("FAIL: the last stdout line is not a JSON object: %s\n", last.c_str());
    return 1;
  }
  spec.keys.insert(spec.keys.end(), spec.numbers.begin(), spec.numbers.end());
  for (const auto& k : spec.keys) {
    if (last.find("\"" + k + "\":") == std::string::npos) {
      std::printf("FAIL: key \"%s\" missing from the JSON line\n", k.c_str());
      ++bad;
    }
  }
  for (const auto& k : spec.numbers) {
    const std::string key = "\"" + k + "\":";
    const auto at = last.find(key);
    const char c = at == std::string::npos || at + key.size() >= last.size()
                       ? 'x'
                       : last[at + key.size()];
    if (at != std::string::npos && !(c == '-' || (c >= '0' && c <= '9'))) {
      std::printf("FAIL: key \"%s\" is not a number in the JSON line\n", k.c_str());
      ++bad;
    }
  }
  // The first bulk migration is asked at 1/6 of the body: it must have committed (later ones
  // may come after the server finished a fast 64 MiB download, which is not a failure).
  if (which == "migrate" && last.find("\"bulk_migrations_committed\":0") != std::string::npos) {
    std::printf("FAIL: no bulk migration committed\n");
    ++bad;
  }
  for (const auto& k : spec.exact) {
    if (last.find(k) == std::string::npos) {
      std::printf("FAIL: expected %s in the JSON line\n", k.c_str());
      ++bad;
    }
  }
  if (!plot.empty()) {
    if (!file_is_png(plot)) {
      std::printf("FAIL: --plot did not write a PNG to %s\n", plot.c_str());
      ++bad;
    }
    std::remove(plot.c_str());
    ::rmdir(plot.substr(0, plot.rfind('/')).c_str());
  }
  if (bad != 0) {
    return 1;
  }
  std::printf("PASS: rendr-bench %s --json produced all %zu keys\n", which.c_str(),
              spec.keys.size());
  return 0;
}
