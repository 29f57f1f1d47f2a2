// SPDX-License-Identifier: Apache-2.0
#include <rendr/common/crc32c.hpp>
#include <vector>
#include <rendr/common/bytes.hpp>
#include <rendr/common/endpoint.hpp>

#include <catch2/catch.hpp>

using namespace rendr;

TEST_CASE("endpoint parses and prints IPv4 and IPv6", "[common][endpoint]") {
  auto a = Endpoint::parse("10.1.2.3:443");
  REQUIRE(a.ok());
  CHECK(a->family == IpFamily::v4);
  CHECK(a->port == 443);
  CHECK(a->to_string() == "10.1.2.3:443");
  auto b = Endpoint::parse("[fd00::1]:8080");
  REQUIRE(b.ok());
  CHECK(b->family == IpFamily::v6);
  CHECK(b->to_string() == "[fd00::1]:8080");
  auto c = Endpoint::parse("[fe80::1%3]:22");
  REQUIRE(c.ok());
  CHECK(c->scope_id == 3);
  CHECK(c->to_string() == "[fe80::1%3]:22");
}

TEST_CASE("endpoint rejects malformed input with a message", "[common][endpoint]") {
  for (const char* bad : {"", "10.0.0.1", "10.0.0.1:", "10.0.0.1:65536", "10.0.0.1:x",
                          "fd00::1:80", "[fd00::1]80", "[zz::1]:80", "300.1.1.1:1"}) {
    auto r = Endpoint::parse(bad);
    INFO(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == std::errc::invalid_argument);
    CHECK_FALSE(r.error().message().empty());
  }
}

TEST_CASE("endpoint round-trips through sockaddr", "[common][endpoint]") {
  for (const char* s : {"192.168.7.9:1", "[2001:db8::42]:65535"}) {
    auto e = Endpoint::parse(s);
    REQUIRE(e.ok());
    sockaddr_storage ss{};
    socklen_t len = e->to_sockaddr(ss);
    auto back = Endpoint::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    REQUIRE(back.ok());
    CHECK(*back == *e);
  }
}

TEST_CASE("crc32c: the hardware and the table paths agree at every length and alignment",
          "[common][crc32c]") {
  std::vector<std::byte> buf(4096 + 16);
  std::uint32_t x = 0x12345678U;
  for (auto& b : buf) {
    x = x * 1664525U + 1013904223U;
    b = static_cast<std::byte>(x >> 24);
  }
  // A bytewise reference straight from the polynomial.
  auto slow = [](std::span<const std::byte> d, std::uint32_t crc) {
    crc = ~crc;
    for (std::byte b : d) {
      crc ^= static_cast<std::uint32_t>(b);
      for (int k = 0; k < 8; ++k) {
        crc = (crc & 1U) != 0 ? (crc >> 1) ^ 0x82F63B78U : crc >> 1;
      }
    }
    return ~crc;
  };
  for (std::size_t start = 0; start < 9; ++start) {
    for (std::size_t len : {0UL, 1UL, 7UL, 8UL, 9UL, 63UL, 64UL, 65UL, 1000UL, 4096UL}) {
      auto d = std::span<const std::byte>(buf).subspan(start, len);
      INFO("start " << start << " len " << len);
      const auto want = slow(d, 0xDEADBEEFU);
      CHECK(crc32c(d, 0xDEADBEEFU) == want);
      CHECK(crc32c_portable_for_test(d, 0xDEADBEEFU) == want);
    }
  }
  CHECK(crc32c_portable_for_test(as_bytes_of("123456789")) == 0xE3069283U);
}

TEST_CASE("crc32c matches the standard check value", "[common][crc32c]") {
  // CRC-32C("123456789") = 0xE3069283 (RFC 3720 appendix / the usual check value).
  CHECK(crc32c(as_bytes_of("123456789")) == 0xE3069283U);
  CHECK(crc32c({}) == 0U);
  // Incremental computation equals one-shot.
  auto part = crc32c(as_bytes_of("12345"));
  CHECK(crc32c(as_bytes_of("6789"), part) == 0xE3069283U);
}
