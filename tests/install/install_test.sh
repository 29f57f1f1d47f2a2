#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# The installed package works for a project outside the tree: `cmake --install --component dev`
# into a scratch prefix, then (1) the examples/ project configured on its own with
# find_package(rendr) and (2) packet_echo.cpp compiled by hand with `pkg-config --cflags --libs
# rendr`; both results run and must pass. Nothing from the source tree is on their include path.
set -euo pipefail
build=$1
src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

cmake --install "$build" --prefix "$prefix" --component dev >"$work/install.log"
test -f "$prefix"/lib*/cmake/rendr/rendrConfig.cmake || { echo "FAIL: no rendrConfig.cmake"; exit 1; }
pc=$(dirname "$(find "$prefix" -name rendr.pc | head -1)")
[[ -n $pc ]] || { echo "FAIL: no rendr.pc installed"; exit 1; }
# The public headers only: the installed tree must not need the sources.
if grep -rl '"\.\./' "$prefix/include" >/dev/null 2>&1; then
  echo "FAIL: installed headers include files by relative path"; exit 1
fi

# (1) find_package(rendr) from a copy of examples/ (so the source tree is not next to it). No
# optimisation here or in (2): they check that the package is found, compiles and links; the
# consumer's own code generation is not under test, and -O0 compiles in about half the time.
cp -r "$src/examples" "$work/consumer"
cmake -S "$work/consumer" -B "$work/consumer-build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE= >"$work/configure.log" ||
  { cat "$work/configure.log"; echo "FAIL: find_package(rendr) project did not configure"; exit 1; }
cmake --build "$work/consumer-build" -j2 >"$work/build.log" 2>&1 ||
  { tail -30 "$work/build.log"; echo "FAIL: find_package(rendr) project did not build"; exit 1; }
"$work/consumer-build/rendr-example-packet-echo" --packets 2000 --transport tcp
bash "$src/tests/examples/echo_test.sh" "$work/consumer-build/rendr-example-echo-server" \
  "$work/consumer-build/rendr-example-echo-client"

# (2) pkg-config.
export PKG_CONFIG_PATH=$pc
flags=$(pkg-config --cflags --libs rendr)
echo "pkg-config rendr: $flags (version $(pkg-config --modversion rendr))"
# shellcheck disable=SC2086
g++ -std=c++20 -O0 -o "$work/packet-echo-pc" "$work/consumer/packet_echo.cpp" $flags
"$work/packet-echo-pc" --packets 2000 --transport tcp
echo "PASS"
