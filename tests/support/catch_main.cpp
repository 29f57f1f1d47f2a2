// SPDX-License-Identifier: Apache-2.0
// main() for hermetic unit test executables; Catch2's implementation is compiled once in
// catch_impl.cpp (rendr_test_support).
#include "support/catch_run.hpp"

int main(int argc, char** argv) { return rendr::test::run_catch(argc, argv); }
