// SPDX-License-Identifier: Apache-2.0
// rendr-demo (the README's main job) in its userstack and mixed modes, small: stock curl
// downloads 128 MiB through 3 migrations; the demo's exit code, its report and its JSON line
// say whether every byte arrived (SHA-256), no RST reached curl, every migration committed and
// the userstack host agents ran with no capability. Its own lab prefix: never the user's demo.
#include "support/netns.hpp"

#include <rendr/common/json.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

using namespace rendr;

namespace {

struct DemoRun {
  int status = -1;
  std::string out;  // stdout: progress, report, JSON line
  std::string err;  // stderr: steps and, on failure, the agents' logs
};

DemoRun run_demo(const std::string& method) {
  char tmpo[] = "/tmp/rendr-demo-outXXXXXX";
  char tmpe[] = "/tmp/rendr-demo-errXXXXXX";
  const int fo = ::mkstemp(tmpo);
  const int fe = ::mkstemp(tmpe);
  const std::string prefix = test::unique_prefix("dm");
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fo, 1);
    ::dup2(fe, 2);
    // 24 MiB/s: 5.3 s for the file, 1.3 s between migrations. At 48 a CI run's download ended
    // before the third one: curl's --limit-rate is an average, and after a 0.5 s stall (a
    // userstack migration on a loaded machine) it caught up at full speed.
    ::execl(RENDR_DEMO_BIN, RENDR_DEMO_BIN, "--method", method.c_str(), "--size-mib", "128",
            "--rate-mib", "24", "--json", "--lab-prefix", prefix.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fo);
  ::close(fe);
  DemoRun r;
  r.status = test::wait_exit(pid, 240000);
  r.out = test::read_file(tmpo);
  r.err = test::read_file(tmpe);
  ::unlink(tmpo);
  ::unlink(tmpe);
  return r;
}

// check_report: the demo's verdict, in words and in its JSON line.
void check_report(const DemoRun& r, const std::vector<std::string>& userstack_hosts) {
  INFO("stdout:\n" << r.out << "\nstderr:\n" << r.err);
  CHECK(r.status == 0);
  CHECK(r.out.find("verdict        OK: nothing lost, nothing duplicated, no reset") !=
        std::string::npos);
  CHECK(r.out.find("migrations     3 of 3 committed") != std::string::npos);
  const auto nl = r.out.rfind('{');
  REQUIRE(nl != std::string::npos);
  const std::string j = r.out.substr(nl == 0 ? 0 : r.out.rfind('\n', nl) + 1);
  CHECK(json_scalar(j, "ok") == "true");
  CHECK(json_scalar(j, "peer_rsts") == "0");
  CHECK(json_scalar(j, "curl_exit") == "0");
  CHECK(json_scalar(j, "received_bytes") == std::to_string(128ULL << 20));
  CHECK(json_scalar(j, "sha256_received") == json_scalar(j, "sha256_source"));
  CHECK(json_scalar(j, "sha256_source").size() == 64);
  for (const std::string h : {"a", "b"}) {
    const bool us = std::find(userstack_hosts.begin(), userstack_hosts.end(), h) !=
                    userstack_hosts.end();
    const auto p = j.find("{\"host\":\"" + h + "\"");
    REQUIRE(p != std::string::npos);
    const std::string hj = j.substr(p);
    INFO("host " << h << ": " << hj.substr(0, hj.find('}')));
    CHECK(json_scalar(hj, "method") == (us ? "userstack" : "native"));
    if (us) {
      CHECK(json_scalar(hj, "uid") == "4242");
      CHECK(json_scalar(hj, "cap_eff") == "0000000000000000");
    } else {
      CHECK(json_scalar(hj, "uid") == "0");
    }
  }
  // Three migration lines, each committed, and three reports in the JSON.
  std::size_t committed = 0;
  for (auto p = r.out.find("  committed: frozen"); p != std::string::npos;
       p = r.out.find("  committed: frozen", p + 1)) {
    ++committed;
  }
  CHECK(committed == 3);
  CHECK(j.find("\"migrations\":[{") != std::string::npos);
}

}  // namespace

TEST_CASE("rendr-demo --method userstack: curl's download moves between unprivileged agents",
          "[.userstack_agent][userstack_agent][netns]") {
  check_report(run_demo("userstack"), {"a", "b"});
}

TEST_CASE("rendr-demo --method mixed: curl's download moves between native and userstack",
          "[.userstack_agent][userstack_agent][netns]") {
  check_report(run_demo("mixed"), {"b"});
}
