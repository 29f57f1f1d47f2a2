// SPDX-License-Identifier: Apache-2.0
// NetnsEnter without privileges: entering the namespace the thread is in moves nothing (no
// setns, so no CAP_SYS_ADMIN needed) and a bad fd is an error, not a silent no-op. Moving
// between namespaces is exercised by every priv test that uses a lab.
#include <rendr/common/netns.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>

using namespace rendr;

TEST_CASE("NetnsEnter into the current namespace moves nothing and leaves cleanly", "[common][netns]") {
  auto here = current_netns();
  REQUIRE(here);
  auto again = current_netns();
  REQUIRE(again);
  CHECK(same_netns(here->get(), again->get()));
  auto in = NetnsEnter::enter(here->get());
  REQUIRE(in);
  CHECK(in->leave());
  CHECK(in->leave());  // idempotent
}

TEST_CASE("NetnsEnter refuses a descriptor that names no namespace", "[common][netns]") {
  auto in = NetnsEnter::enter(-1);
  REQUIRE_FALSE(in);
  CHECK(in.error().message().find("setns") != std::string::npos);
  auto f = UniqueFd::open("/proc/self/status", O_RDONLY);
  REQUIRE(f);
  auto here = current_netns();
  REQUIRE(here);
  CHECK_FALSE(same_netns(f->get(), here->get()));
  CHECK_FALSE(NetnsEnter::enter(f->get()));
}
