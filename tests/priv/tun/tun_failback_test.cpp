// SPDX-License-Identifier: Apache-2.0
// A path that died and comes back is used again (tun lab, tun_lab.hpp): rendr-tun ingress
// re-dials a dead path (the engine's RetryPolicy), so a download whose active path was dropped
// and later re-added survives its active path being dropped next (the other one, or the re-added
// one if the engine moved back to it). Before the re-dial the flow had no path left at that point
// and stalled until its migration budget.
#include "tun_lab.hpp"

#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

using namespace rendr::test;

namespace {

std::uint64_t size_of(const std::string& p) {
  struct stat sb {};
  return ::stat(p.c_str(), &sb) == 0 ? static_cast<std::uint64_t>(sb.st_size) : 0;
}

// wait_until polls |pred| every 20 ms for up to |ms|.
template <typename Pred>
bool wait_until(Pred pred, int ms) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) {
      return false;
    }
    ::poll(nullptr, 0, 20);
  }
  return true;
}

}  // namespace

TEST_CASE("tun: a download survives its active path dropped and re-added, then its active path "
          "dropped again",
          "[.netns][tun][netns]") {
  TunLab lab(64U << 20);
  const std::string got = lab.dir.path + "/got";
  Child curl;  // ~16 s at 4 MiB/s: long enough for the three steps below
  curl.pid = lab.app.spawn({"curl", "-sS", "--max-time", "60", "--limit-rate", "4M", "-o", got,
                            "http://198.18.0.10:8080/blob"});
  REQUIRE(wait_until([&] { return size_of(got) >= (2U << 20); }, 10000));
  // The path the egress sends on (the engine may run the flow on either).
  const std::string eg = read_status(lab.egress_status());
  const int first = rendr::lab::IngressLab::active_path(eg);
  INFO("egress status: " << eg);
  REQUIRE(first > 0);
  REQUIRE(lab.net->drop(first, true).ok());
  // The flow moved to the other path and goes on.
  const std::uint64_t at_drop = size_of(got);
  REQUIRE(wait_until([&] { return size_of(got) >= at_drop + (4U << 20); }, 10000));
  // The drop hit a path that carried the flow (read before the re-add flushes its rules).
  const auto c1 = lab.net->drop_counters(first);
  REQUIRE(c1.ok());
  CHECK(c1->in_packets > 0);
  // The dropped path returns; the ingress dials it again and attaches it to the flow.
  REQUIRE(lab.net->drop(first, false).ok());
  std::string st;
  const bool back = wait_until(
      [&] {
        st = read_status(lab.ingress_status());
        return status_counter(st, "path_redials") >= 1;
      },
      8000);
  INFO("ingress status: " << st);
  REQUIRE(back);
  REQUIRE(size_of(got) < lab.blob.size());  // still downloading
  // Again the path the egress sends on now: the engine may have moved the flow back to the
  // re-added path by its quality (a CI run dropped the other one, which then carried nothing).
  const std::string eg2 = read_status(lab.egress_status());
  INFO("egress status before the second drop: " << eg2);
  const int again = rendr::lab::IngressLab::active_path(eg2);
  REQUIRE(again > 0);
  REQUIRE(lab.net->drop(again, true).ok());
  CHECK(wait_exit(curl.pid, 40000) == 0);
  curl.pid = -1;
  std::ifstream g(got, std::ios::binary);
  const std::vector<char> data((std::istreambuf_iterator<char>(g)), std::istreambuf_iterator<char>());
  REQUIRE(data.size() == lab.blob.size());
  CHECK(std::equal(data.begin(), data.end(), reinterpret_cast<const char*>(lab.blob.data())));
  // The second drop hit a path that carried the flow too.
  const auto c2 = lab.net->drop_counters(again);
  REQUIRE(c2.ok());
  CHECK(c2->in_packets > 0);
}
