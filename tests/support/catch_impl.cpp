// SPDX-License-Identifier: Apache-2.0
// Catch2's implementation (its single header with CATCH_CONFIG_RUNNER), compiled once into
// rendr_test_support for every test executable. Defining CATCH_CONFIG_MAIN in each test
// binary's main file compiled all of it again per executable: 35-65 s of compile time each,
// about half of a clean build. The mains (catch_main.cpp, priv_main.cpp) only call
// Catch::Session.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "support/catch_run.hpp"

int rendr::test::run_catch(int argc, char** argv) { return Catch::Session().run(argc, argv); }
