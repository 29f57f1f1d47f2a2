// SPDX-License-Identifier: Apache-2.0
#include <rendr/common/result.hpp>

#include <catch2/catch.hpp>

#include <cerrno>

using namespace rendr;

TEST_CASE("Error::message names the errno only where it is the cause", "[common][result]") {
  // A syscall failure: the errno text is part of the story.
  Error sys = errno_error("bind 10.0.0.1:80", EADDRINUSE);
  CHECK(sys.message() == "bind 10.0.0.1:80: Address already in use");
  CHECK(sys.with_context("listen").message() == "listen: bind 10.0.0.1:80: Address already in use");

  // A refusal rendr decided: the code classifies it, the text is the whole message.
  Error refusal = make_error(std::errc::protocol_error, "gateway gw has no backend 'b'");
  CHECK(refusal.code == std::errc::protocol_error);
  CHECK(refusal.message() == "gateway gw has no backend 'b'");
  CHECK(refusal.with_context("migrate").message() == "migrate: gateway gw has no backend 'b'");

  // With nothing else to say, the code's text is the message.
  Error bare = make_error(std::errc::timed_out, "");
  CHECK(bare.message() == std::make_error_code(std::errc::timed_out).message());
  CHECK(bare.with_context("accept").message() ==
        "accept: " + std::make_error_code(std::errc::timed_out).message());
}
