// SPDX-License-Identifier: Apache-2.0
// Catch2 assertions for rendr::Result (STYLE T8): REQUIRE_OK(r) prints the error's message when
// |r| failed; REQUIRE_ERROR(r, errc, "substring") checks the exact code and that the message
// contains the substring. Header-only; include after <catch2/catch.hpp>.
#pragma once

#include <rendr/common/result.hpp>

#include <catch2/catch.hpp>

#include <string>
#include <system_error>

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
    REQUIRE(rendr_req_r_.error().code == std::make_error_code(errc));      \
    REQUIRE_THAT(rendr_req_r_.error().message(), Catch::Contains(substring)); \
  } while (0)
