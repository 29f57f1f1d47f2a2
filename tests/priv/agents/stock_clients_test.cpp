// SPDX-License-Identifier: Apache-2.0
// Stock clients through native migrations: wget, curl, aria2c, python3 and socat download a
// file from rendr-fileserver behind the gateway lab's VIP while the agents move their
// connection between the hosts; ab and wrk hammer it with short connections while every flow of
// the service is moved back and forth in batches. Each must see every byte (SHA-256) and no
// failed request. The lab is tools/lab's AgentStack (the demo's and the benches' lab).
#include "lab/agent_stack.hpp"
#include "lab/gateway_lab.hpp"
#include "lab/lab_util.hpp"
#include "support/netns.hpp"  // unique_prefix

#include <rendr/common/json.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

using namespace rendr;

namespace {

constexpr std::uint64_t kBigMiB = 96;

struct Lab {
  std::unique_ptr<lab::GatewayLab> gw;
  std::unique_ptr<lab::AgentStack> stack;
  std::string sha_big;
};

std::string sh_out(const std::string& ns, const std::string& cmd) {
  auto r = lab::output_in(ns, cmd + "; echo \"EXIT=$?\"");
  return r ? *r : "EXIT=-1 " + r.error().message();
}

off_t file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : 0;
}

int exit_of(const std::string& out) {
  auto p = out.rfind("EXIT=");
  return p == std::string::npos ? -1 : std::atoi(out.c_str() + p + 5);
}

Lab make_lab(const std::string& prefix) {
  Lab l;
  auto g = lab::GatewayLab::create(prefix);
  REQUIRE(g.ok());
  l.gw = std::move(*g);
  lab::AgentStackOptions so;
  so.agent_bin = RENDR_AGENT_BIN;
  so.rendrctl_bin = RENDRCTL_BIN;
  so.freeze_grace_ms = 500;
  auto s = lab::AgentStack::start(*l.gw, so);
  INFO((s ? "" : s.error().message()));
  REQUIRE(s.ok());
  l.stack = std::move(*s);
  const std::string dir = l.stack->dir();
  REQUIRE(lab::run_in(l.gw->ns("a"), "head -c " + std::to_string(kBigMiB << 20) +
                                         " /dev/urandom > " + dir + "/big && head -c 2097152 "
                                         "/dev/urandom > " + dir + "/medium").ok());
  auto sha = lab::output_in(l.gw->ns("a"), "sha256sum " + dir + "/big | cut -c1-64");
  REQUIRE(sha.ok());
  l.sha_big = sha->substr(0, 64);
  for (const char* h : {"a", "b"}) {
    const std::string lg = std::string("fs-") + h;
    REQUIRE(l.stack->spawn(h, {RENDR_FILESERVER_BIN, "--agent", l.stack->sock(h), "--service",
                               "http", "--root", dir, "--listen", "10.99.0.1:8080"},
                           lg).ok());
    REQUIRE(l.stack->wait_log(lg, "ready", 10000));
  }
  return l;
}

// migrate_all moves every flow of the service from |from| to |to|; returns the result
// ("committed", "partial", "empty", "aborted", ...).
// migrate_service returns the batch's result; an aborted one also says why (the report's
// "error"), so a failed check names the step that gave up.
std::string migrate_service(const Lab& l, const std::string& from, const std::string& to) {
  auto rep = l.stack->migrate(from, {}, to, false, "http");
  if (!rep) {
    return "error: " + rep.error().message();
  }
  std::string r = json_scalar(*rep, "result");
  if (r == "aborted") {
    r += ": " + json_scalar(*rep, "error");
  }
  return r;
}

}  // namespace

TEST_CASE("stock downloaders see every byte across native migrations",
          "[.agents][agents][netns][stock]") {
  Lab l = make_lab(test::unique_prefix("stk"));
  const std::string url = std::string("http://") + lab::GatewayLab::kVip4 + ":8080/big";
  const std::string out = l.stack->dir() + "/got";
  // Each client limited to ~48 MB/s, so the download lasts ~2 s and the migrations land in it.
  const std::vector<std::pair<std::string, std::string>> clients = {
      {"wget", "wget -q --limit-rate=48m -O " + out + " " + url},
      {"curl", "curl -sS --fail --limit-rate 48M -o " + out + " " + url},
      {"aria2c", "aria2c -q --max-download-limit=48M --allow-overwrite=true "
                 "--max-connection-per-server=1 --split=1 --file-allocation=none -d " +
                     l.stack->dir() + " -o got " + url},
      {"python3", "python3 -c \"import time,urllib.request as u\n"
                  "r=u.urlopen('" + url + "')\nf=open('" + out + "','wb')\n"
                  "while True:\n b=r.read(1<<20)\n if not b: break\n f.write(b)\n"
                  " time.sleep(0.02)\""},
      // socat sends the request and half-closes (stdin ends): the server's socket is in
      // CLOSE_WAIT while it moves; python reads slowly behind the pipe and drops the header.
      {"socat", "printf 'GET /big HTTP/1.0\\r\\n\\r\\n' | socat -t 60 - TCP:" +
                    std::string(lab::GatewayLab::kVip4) + ":8080 | python3 -c \"import sys,time\n"
                    "b=sys.stdin.buffer\nh=b''\n"
                    "while not h.endswith(b'\\r\\n\\r\\n'):\n c=b.read(1)\n if not c: break\n h+=c\n"
                    "f=open('" + out + "','wb')\n"
                    "while True:\n d=b.read(1<<20)\n if not d: break\n f.write(d)\n"
                    " time.sleep(0.02)\""},
  };
  for (const auto& [name, cmd] : clients) {
    INFO(name);
    ::unlink(out.c_str());
    std::string result;
    std::thread t([&] { result = sh_out(l.gw->ns("peer"), cmd); });
    // Migrate once the body flows (a client may take a while to start on a loaded machine).
    for (int i = 0; i < 200 && file_size(out) < (1 << 20); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    int committed = 0;
    std::string on = "a";
    for (int k = 0; k < 4; ++k) {
      const std::string to = on == "a" ? "b" : "a";
      const std::string r = migrate_service(l, on, to);
      INFO("migration " << k << " " << on << "->" << to << ": " << r);
      // A download that finished before this migration (it lasts ~2 s, longer than the four
      // moves on a quiet host) leaves the service no tracked flow: nothing to move is no loss.
      const bool nothing_left = k > 0 && r == "error: migrate: no flows selected";
      CHECK((r == "committed" || r == "empty" || nothing_left));
      if (r == "committed") {
        ++committed;
        on = to;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    t.join();
    INFO(result);
    CHECK(exit_of(result) == 0);
    CHECK(committed >= 1);
    auto sha = lab::output_in(l.gw->ns("peer"), "sha256sum " + out + " | cut -c1-64");
    REQUIRE(sha.ok());
    CHECK(sha->substr(0, 64) == l.sha_big);
  }
}

TEST_CASE("ab and wrk see no failed request while every flow is moved back and forth",
          "[.agents][agents][netns][stock]") {
  Lab l = make_lab(test::unique_prefix("stl"));
  // 2 MiB responses: each connection lives long enough for batches to find some.
  const std::string url = std::string("http://") + lab::GatewayLab::kVip4 + ":8080/medium";
  const std::vector<std::pair<std::string, std::string>> loads = {
      {"ab", "ab -q -n 1500 -c 50 -s 10 " + url},
      {"wrk", "wrk -t2 -c50 -d4s --timeout 5s " + url},
  };
  for (const auto& [name, cmd] : loads) {
    INFO(name);
    std::string result;
    std::atomic<bool> done{false};
    std::thread t([&] {
      result = sh_out(l.gw->ns("peer"), cmd);
      done = true;
    });
    int batches = 0;
    int moved = 0;
    std::string on = "a";
    while (!done && batches < 40) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      const std::string to = on == "a" ? "b" : "a";
      const std::string r = migrate_service(l, on, to);
      INFO("batch " << batches << ": " << r);
      // Under churn a batch commits whole or in part, finds every flow it chose ended, or
      // finds none at that instant.
      CHECK((r == "committed" || r == "partial" || r == "empty" ||
             r.find("no flows selected") != std::string::npos));
      moved += r == "committed" || r == "partial" ? 1 : 0;
      on = to;
      ++batches;
    }
    t.join();
    INFO(result);
    CHECK(exit_of(result) == 0);
    CHECK(moved >= 1);
    if (name == "ab") {
      CHECK(result.find("Complete requests:      1500") != std::string::npos);
      CHECK(result.find("Failed requests:        0") != std::string::npos);
      CHECK(result.find("Non-2xx") == std::string::npos);
    } else {
      CHECK(result.find("Socket errors") == std::string::npos);
      CHECK(result.find("Non-2xx") == std::string::npos);
      CHECK(result.find("requests in") != std::string::npos);
    }
  }
}
