// SPDX-License-Identifier: Apache-2.0
// Catch2 main for hermetic unit test executables.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
