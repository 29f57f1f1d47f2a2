// SPDX-License-Identifier: Apache-2.0
#include <rendr/common/endpoint.hpp>
#include <rendr/common/json.hpp>

#include <catch2/catch.hpp>

using namespace rendr;

TEST_CASE("json_scalar reads what JsonWriter wrote", "[common]") {
  JsonWriter j;
  j.begin_object();
  j.kv("result", "committed");
  j.kv("flows", std::uint64_t{3});
  j.kv("ok", true);
  j.kv("error", "a \"quoted\" word");
  j.begin_object("steps_ms");
  j.kv("commit", 1.5);
  j.end_object();
  j.end_object();
  const std::string s = j.str();
  CHECK(json_scalar(s, "result") == "committed");
  CHECK(json_scalar(s, "flows") == "3");
  CHECK(json_scalar(s, "ok") == "true");
  CHECK(json_scalar(s, "error") == "a \"quoted\" word");
  CHECK(json_scalar(s, "commit") == "1.5");
  CHECK(json_scalar(s, "absent").empty());
}

TEST_CASE("FourTuple::parse reads to_string's form and refuses the rest", "[common]") {
  auto t = FourTuple::parse("10.99.0.1:80->10.0.1.2:41000");
  REQUIRE(t.ok());
  CHECK(t->to_string() == "10.99.0.1:80->10.0.1.2:41000");
  CHECK(FourTuple::parse("[fd99::1]:80,[fd00:1::2]:5").ok());
  CHECK_FALSE(FourTuple::parse("10.99.0.1:80").ok());
  auto mixed = FourTuple::parse("10.99.0.1:80->[fd00:1::2]:5");
  REQUIRE_FALSE(mixed.ok());
  CHECK_THAT(mixed.error().message(), Catch::Contains("mixes IPv4 and IPv6"));
}

TEST_CASE("FourTuple::of_socket names the errno for a socket that is not connected", "[common]") {
  CHECK(FourTuple::of_socket(-1).error().code == std::errc::bad_file_descriptor);
}
