// SPDX-License-Identifier: Apache-2.0
// rendr-tun in `rendrctl status` (docs/tun-ingress.md "Status", docs/rendrctl.md), with the
// real rendrctl binary, in the tun lab (tun_lab.hpp): both rendr-tun processes publish their
// status in the lab's dir (tun-<pid>.sock) and rendrctl reads it with --engine-dir. While a
// rate-limited curl download relays, the ingress and the egress each list the app flow with
// its identity, the same engine flow id, ready paths and bytes; afterwards the flow is gone.
// A killed rendr-tun (stale socket) and a stopped one do not hang rendrctl.
#include "tun_lab.hpp"

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

using namespace rendr::test;

namespace {

// rendrctl runs `rendrctl status <args>`; returns its exit status, |out| its stdout.
int rendrctl(const std::string& args, std::string& out) {
  out.clear();
  FILE* p = ::popen((std::string(RENDRCTL_BIN) + " status " + args + " 2>/dev/null").c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) {
    out.append(buf, n);
  }
  const int st = ::pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// TunFlow: one flow entry of one rendr-tun in rendrctl's "tun" array.
struct TunFlow {
  std::string role, proto, src, dst, state, flow_id, engine_state;
  std::uint64_t bytes_up = 0, bytes_down = 0;
  std::vector<std::string> path_states;
};

// tun_entries: the "tun" array of rendrctl's JSON, split per rendr-tun (each starts with
// {"socket":).
std::vector<std::string> tun_entries(const std::string& js) {
  std::vector<std::string> out;
  const auto tun = js.find("\"tun\":[");
  REQUIRE(tun != std::string::npos);
  std::size_t pos = js.find("{\"socket\":", tun);
  while (pos != std::string::npos) {
    const auto next = js.find("{\"socket\":", pos + 1);
    out.push_back(js.substr(pos, next == std::string::npos ? std::string::npos : next - pos));
    pos = next;
  }
  return out;
}

std::vector<TunFlow> flows_of(const std::string& entry) {
  std::vector<TunFlow> out;
  const std::string role = rendr::json_scalar(entry, "role");
  std::size_t pos = entry.find("{\"proto\":");
  while (pos != std::string::npos) {
    const auto next = entry.find("{\"proto\":", pos + 1);
    const std::string f =
        entry.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    TunFlow t;
    t.role = role;
    const auto eng = f.find("\"engine\":{");
    const std::string app = f.substr(0, eng);
    t.proto = rendr::json_scalar(app, "proto");
    t.src = rendr::json_scalar(app, "src");
    t.dst = rendr::json_scalar(app, "dst");
    t.state = rendr::json_scalar(app, "state");
    t.bytes_up = status_counter(app, "bytes_up");
    t.bytes_down = status_counter(app, "bytes_down");
    if (eng != std::string::npos) {
      const std::string e = f.substr(eng);
      t.flow_id = rendr::json_scalar(e, "flow_id");
      t.engine_state = rendr::json_scalar(e, "state");
      for (auto p = e.find("{\"id\":"); p != std::string::npos; p = e.find("{\"id\":", p + 1)) {
        t.path_states.push_back(rendr::json_scalar(e.substr(p), "state"));
      }
    }
    out.push_back(t);
    pos = next;
  }
  return out;
}

}  // namespace

TEST_CASE("tun status: rendrctl status lists the ingress and egress flow of a curl download",
          "[.netns][tun][netns]") {
  TunLab lab(6U << 20);
  // 6 MiB at 1 MiB/s: about 6 s of relaying to look at.
  Child curl;
  curl.pid = lab.app.spawn({"curl", "-sS", "--max-time", "60", "--limit-rate", "1M", "-o",
                            lab.dir.path + "/got", "http://198.18.0.10:8080/blob"});
  const std::string args = "--json --engine-dir " + lab.dir.path;
  std::string js;
  std::vector<TunFlow> in_flows, eg_flows;
  std::string in_entry, eg_entry;
  for (int i = 0; i < 100; ++i) {  // until both sides relay bytes (at most 10 s)
    REQUIRE(rendrctl(args, js) == 0);
    in_flows.clear();
    eg_flows.clear();
    for (const auto& e : tun_entries(js)) {
      const auto role = rendr::json_scalar(e, "role");
      (role == "ingress" ? in_entry : eg_entry) = e;
      for (const auto& f : flows_of(e)) {
        (role == "ingress" ? in_flows : eg_flows).push_back(f);
      }
    }
    if (in_flows.size() == 1 && eg_flows.size() == 1 && in_flows[0].bytes_down > 0 &&
        eg_flows[0].bytes_down > 0 && !in_flows[0].flow_id.empty() &&
        !eg_flows[0].flow_id.empty()) {
      break;
    }
    ::poll(nullptr, 0, 100);
  }
  INFO(js);
  // One entry per rendr-tun, each under its published socket and pid.
  CHECK(tun_entries(js).size() == 2);
  CHECK(rendr::json_scalar(in_entry, "socket") ==
        lab.dir.path + "/tun-" + std::to_string(lab.in.pid) + ".sock");
  CHECK(rendr::json_scalar(in_entry, "pid") == std::to_string(lab.in.pid));
  CHECK(rendr::json_scalar(eg_entry, "pid") == std::to_string(lab.eg.pid));
  REQUIRE(in_flows.size() == 1);
  REQUIRE(eg_flows.size() == 1);
  const auto& a = in_flows[0];
  const auto& b = eg_flows[0];
  // The app flow's identity on both sides: curl's address behind the TUN -> the origin.
  CHECK(a.proto == "tcp");
  CHECK(a.dst == "198.18.0.10:8080");
  CHECK(a.src.rfind("10.77.0.1:", 0) == 0);
  CHECK(b.proto == "tcp");
  CHECK(b.src == a.src);
  CHECK(b.dst == a.dst);
  // One engine flow: the same id at both ends, active, over ready paths.
  CHECK(a.flow_id.size() == 32);
  CHECK(a.flow_id == b.flow_id);
  CHECK(a.state == "relaying");
  CHECK(b.state == "relaying");
  CHECK(a.engine_state == "active");
  CHECK(b.engine_state == "active");
  CHECK(a.path_states.size() == 2);  // one path per --peer
  CHECK(std::count(a.path_states.begin(), a.path_states.end(), "ready") >= 1);
  CHECK(std::count(b.path_states.begin(), b.path_states.end(), "ready") >= 1);
  CHECK(a.bytes_down > 0);
  CHECK(b.bytes_down > 0);
  CHECK(a.bytes_up > 0);  // curl's request
  CHECK(status_counter(in_entry, "flows") == 1);
  // The text form names both roles, the identity and the flow id.
  std::string text;
  REQUIRE(rendrctl("--engine-dir " + lab.dir.path, text) == 0);
  INFO(text);
  CHECK(text.find("tun      pid " + std::to_string(lab.in.pid) + " ingress: ") !=
        std::string::npos);
  CHECK(text.find("tun      pid " + std::to_string(lab.eg.pid) + " egress: ") != std::string::npos);
  CHECK(text.find("  ingress tcp " + a.src + " -> 198.18.0.10:8080 ") != std::string::npos);
  CHECK(text.find("  egress tcp " + a.src + " -> 198.18.0.10:8080 ") != std::string::npos);
  CHECK(text.find("    flow " + a.flow_id + " ") != std::string::npos);
  // After the download the flow is gone from both, counted as done.
  CHECK(wait_exit(curl.pid, 60000) == 0);
  curl.pid = -1;
  std::size_t left = 1;
  for (int i = 0; i < 50 && left != 0; ++i) {
    REQUIRE(rendrctl(args, js) == 0);
    left = 0;
    for (const auto& e : tun_entries(js)) {
      left += flows_of(e).size();
    }
    if (left != 0) {
      ::poll(nullptr, 0, 100);
    }
  }
  INFO(js);
  CHECK(left == 0);
  for (const auto& e : tun_entries(js)) {
    CHECK(status_counter(e, "flows_done") == 1);
    CHECK(status_counter(e, "active_flows") == 0);
  }
}

TEST_CASE("tun status: a killed and a stopped rendr-tun do not hang rendrctl status",
          "[.netns][tun][netns]") {
  TunLab lab(1024);
  const pid_t in_pid = lab.in.pid;
  const std::string stale = lab.dir.path + "/tun-" + std::to_string(in_pid) + ".sock";
  // SIGKILL: the ingress cannot remove its socket files (a stale socket stays).
  REQUIRE(::kill(in_pid, SIGKILL) == 0);
  int st = 0;
  REQUIRE(::waitpid(in_pid, &st, 0) == in_pid);
  lab.in.pid = -1;
  struct stat sb {};
  REQUIRE(::stat(stale.c_str(), &sb) == 0);
  // SIGSTOP: the egress's socket still accepts connections into its backlog but never answers.
  REQUIRE(::kill(lab.eg.pid, SIGSTOP) == 0);
  const auto t0 = std::chrono::steady_clock::now();
  std::string js;
  REQUIRE(rendrctl("--json --tun-timeout-ms 500 --engine-dir " + lab.dir.path + " --tun-status " +
                       lab.egress_status(),
                   js) == 0);
  const auto took =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
  ::kill(lab.eg.pid, SIGCONT);
  INFO(js << "\ntook " << took.count() << " ms");
  // Both waits run at once: about 500 ms plus the capability probes, not 2 x 500 ms or a hang.
  CHECK(took < std::chrono::milliseconds(3000));
  const auto entries = tun_entries(js);
  REQUIRE(entries.size() == 3);  // the stale ingress, the stopped egress twice (dir, --tun-status)
  int refused = 0;
  int silent = 0;
  for (const auto& e : entries) {
    const std::string err = rendr::json_scalar(e, "error");
    CHECK_FALSE(err.empty());
    if (rendr::json_scalar(e, "socket") == stale) {
      CHECK(rendr::json_scalar(e, "pid") == std::to_string(in_pid));
      CHECK(err.rfind("connection refused", 0) == 0);
      ++refused;
    } else {
      CHECK(err == "no answer within 500 ms (the process may be stopped or hung)");
      ++silent;
    }
  }
  CHECK(refused == 1);
  CHECK(silent == 2);
  // The text form says which one did not answer.
  std::string text;
  REQUIRE(::kill(lab.eg.pid, SIGSTOP) == 0);
  REQUIRE(rendrctl("--tun-timeout-ms 200 --engine-dir " + lab.dir.path, text) == 0);
  ::kill(lab.eg.pid, SIGCONT);
  INFO(text);
  CHECK(text.find("tun      " + stale + ": did not answer: connection refused") !=
        std::string::npos);
  CHECK(text.find(": did not answer: no answer within 200 ms") != std::string::npos);
  // Running again, the egress answers and the stale socket is still reported (nothing removed
  // it: no rendr-tun started since).
  REQUIRE(rendrctl("--json --engine-dir " + lab.dir.path, js) == 0);
  INFO(js);
  const auto again = tun_entries(js);
  REQUIRE(again.size() == 2);
  CHECK(js.find("\"role\":\"egress\"") != std::string::npos);
  // SIGTERM (how the labs stop it): rendr-tun removes its sockets before it ends.
  const std::string published = lab.dir.path + "/tun-" + std::to_string(lab.eg.pid) + ".sock";
  REQUIRE(::stat(published.c_str(), &sb) == 0);
  REQUIRE(::kill(lab.eg.pid, SIGTERM) == 0);
  REQUIRE(::waitpid(lab.eg.pid, &st, 0) == lab.eg.pid);
  lab.eg.pid = -1;
  CHECK(WIFSIGNALED(st));
  CHECK(WTERMSIG(st) == SIGTERM);
  CHECK(::stat(published.c_str(), &sb) != 0);
  CHECK(::stat(lab.egress_status().c_str(), &sb) != 0);
}
