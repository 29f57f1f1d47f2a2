// SPDX-License-Identifier: Apache-2.0
// run_catch: Catch2's session (parse the command line, run the selected tests), compiled once in
// catch_impl.cpp; the test executables' main() calls it.
#pragma once

namespace rendr::test {

int run_catch(int argc, char** argv);

}  // namespace rendr::test
