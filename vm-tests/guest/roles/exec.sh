# SPDX-License-Identifier: Apache-2.0
# Role "exec" (sourced by /init; `rendr-vm exec -- CMD`): runs one shell command in the guest
# and reports its output and exit status, for poking at a kernel without an interactive shell.
rendr_id=$((rendr_id + 1))
t0=$(uptime_s)
sh -c "$RENDR_EXEC" >/tmp/exec.log 2>&1
rc=$?
t1=$(uptime_s)
cat /tmp/exec.log
rendr_emit_log "$rendr_id" /tmp/exec.log
if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
rendr_result "$rendr_id" exec "$st" "$rc" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" \
  "$RENDR_EXEC"
