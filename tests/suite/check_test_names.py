#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Every ctest entry of a Catch executable must select exactly one Catch test case.

catch_discover_tests registers each test case under its name and passes the name back as a
Catch test spec. A name that does not survive that round trip (ctest splits arguments at ';',
and Catch reads ',' '[' '*' '\\' as spec syntax unless escaped) selects nothing - and Catch
exits 0 when nothing matched, so such a test "passes" without running. This check lists what
each entry's command line selects.

usage: check_test_names.py BUILD_DIR
"""
import json
import os
import subprocess
import sys


def main() -> int:
    build = sys.argv[1] if len(sys.argv) > 1 else "."
    out = subprocess.run(["ctest", "--show-only=json-v1"], cwd=build, check=True,
                         capture_output=True, text=True).stdout
    bad = []
    checked = 0
    for t in json.loads(out)["tests"]:
        cmd = t.get("command") or []
        if not cmd or not any(p in cmd[0] for p in ("rendr_unit_", "rendr_priv_", "rendr_net_")):
            continue
        if not os.path.exists(cmd[0]):
            continue  # a build that left this executable out (e.g. the sanitizer stage)
        checked += 1
        r = subprocess.run(cmd + ["--list-test-names-only"], capture_output=True, text=True,
                           timeout=60)
        names = [line for line in r.stdout.splitlines() if line.strip()]
        if len(names) != 1:
            bad.append(f"{t['name']!r}: selects {len(names)} test cases")
    for b in bad:
        print("BAD", b)
    print(f"{checked} ctest entries checked, {len(bad)} select no test or several")
    return 1 if bad or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
