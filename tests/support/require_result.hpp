// SPDX-License-Identifier: Apache-2.0
// Catch2 assertions for rendr::Result (STYLE T8): REQUIRE_OK(r) prints the error's message when
// |r| failed; REQUIRE_ERROR(r, errc, "substring") checks the exact code (any error enum with a
// make_error_code: std::errc, rendr::engine::errc, ...) and that the message contains the
// substring. Header-only; include after <catch2/catch.hpp>.
#pragma once

#include <rendr/common/result.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <system_error>

namespace rendr::test {

// error_code_of: the std::error_code of an error enum value, through its make_error_code (ADL).
template <typename E>
std::error_code error_code_of(E e) {
  using std::make_error_code;
  return make_error_code(e);
}

}  // namespace rendr::test

#define REQUIRE_OK(r)                                                 \
  do {                                                                \
    const auto& rendr_req_r_ = (r);                                   \
    INFO("error: " << (rendr_req_r_.ok() ? std::string("-")           \
                                         : rendr_req_r_.error().message())); \
    REQUIRE(rendr_req_r_.ok());                                       \
  } while (0)

#define REQUIRE_ERROR(r, errc, substring)                                  \
  do {                                                                     \
    const auto& rendr_req_r_ = (r);                                        \
    REQUIRE_FALSE(rendr_req_r_.ok());                                      \
    INFO("error: " << rendr_req_r_.error().message());                     \
    REQUIRE(rendr_req_r_.error().code == rendr::test::error_code_of(errc)); \
    REQUIRE_THAT(rendr_req_r_.error().message(), Catch::Contains(substring)); \
  } while (0)
