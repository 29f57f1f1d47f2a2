# SPDX-License-Identifier: Apache-2.0
# Role "suites" (sourced by /init): the capability probe, then the privileged ctest tests the
# host selected (/rendr/tests.sh: one rendr_test line per ctest test, replayed as ctest runs it).

# status: `rendrctl status --json` into the log; the host checks it against the kernel profile.
rendr_id=$((rendr_id + 1))
t0=$(uptime_s)
"$RENDR_RENDRCTL" status --json >/tmp/status.log 2>&1
rc=$?
t1=$(uptime_s)
cat /tmp/status.log
rendr_emit_log "$rendr_id" /tmp/status.log
if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
rendr_result "$rendr_id" status "$st" "$rc" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" \
  "rendrctl status --json"

# Everything a skip would need must be here: a skip is a failure in the guest.
export RENDR_REQUIRE_PRIV=1
. /rendr/tests.sh
