// SPDX-License-Identifier: Apache-2.0
// rendr-demo --tun (tools/demo --tun), small: stock curl downloads 48 MiB through rendr-tun in
// the ingress lab while the path the egress sends on is silently dropped at a third and
// re-added at two thirds. The demo's exit code, its report and its JSON line say whether every
// byte arrived (SHA-256), no reset crossed the TUN, the drop hit the path the egress was sending
// on and the flow moved to the other one. Its own lab prefix: never the user's demo.
#include "support/netns.hpp"

#include <rendr/common/json.hpp>

#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

using namespace rendr;

TEST_CASE("rendr-demo --tun: curl downloads through rendr-tun across a dropped and re-added path",
          "[.netns][tun_demo][netns]") {
  char tmpo[] = "/tmp/rendr-demo-outXXXXXX";
  char tmpe[] = "/tmp/rendr-demo-errXXXXXX";
  const int fo = ::mkstemp(tmpo);
  const int fe = ::mkstemp(tmpe);
  REQUIRE((fo >= 0 && fe >= 0));
  const std::string prefix = test::unique_prefix("dt");
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fo, 1);
    ::dup2(fe, 2);
    ::execl(RENDR_DEMO_BIN, RENDR_DEMO_BIN, "--tun", "--size-mib", "48", "--rate-mib", "16",
            "--json", "--lab-prefix", prefix.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(fo);
  ::close(fe);
  const int status = test::wait_exit(pid, 120000);
  const std::string out = test::read_file(tmpo);
  const std::string err = test::read_file(tmpe);
  ::unlink(tmpo);
  ::unlink(tmpe);
  INFO("stdout:\n" << out << "\nstderr:\n" << err);
  CHECK(status == 0);
  CHECK(out.find("verdict        OK: nothing lost, nothing duplicated, no reset") !=
        std::string::npos);
  const auto brace = out.rfind("\n{");
  REQUIRE(brace != std::string::npos);
  const std::string j = out.substr(brace + 1);
  CHECK(json_scalar(j, "ok") == "true");
  CHECK(json_scalar(j, "curl_exit") == "0");
  CHECK(json_scalar(j, "app_rsts") == "0");
  CHECK(json_scalar(j, "received_bytes") == std::to_string(48ULL << 20));
  CHECK(json_scalar(j, "sha256_source").size() == 64);
  CHECK(json_scalar(j, "sha256_received") == json_scalar(j, "sha256_source"));
  CHECK(std::atoll(json_scalar(j, "dropped_packets").c_str()) > 0);
  // The egress sent on the dropped path before the drop and on the other one after it.
  const std::string path = json_scalar(j, "dropped_path");
  REQUIRE((path == "1" || path == "2"));
  const std::string p1 = "10.88.0.2:7000", p2 = "10.89.0.2:7000";
  CHECK(json_scalar(j, "active_path_before_drop") == (path == "1" ? p1 : p2));
  CHECK(json_scalar(j, "active_path_before_readd") == (path == "1" ? p2 : p1));
  CHECK(!json_scalar(j, "stall_ms").empty());
  CHECK(j.find("\"redial_ms\":") != std::string::npos);
  // The demo removed its lab.
  for (const char* role : {"app", "egress", "origin"}) {
    CHECK(::access(("/run/netns/" + prefix + "-" + role).c_str(), F_OK) != 0);
  }
}
