# SPDX-License-Identifier: Apache-2.0
# Role "migrate-peer" (sourced by /init): the unmodified client of the migration scenario. No
# rendr here: python3 downloads http://VIP:8080/file through the gateway while it asks the hosts'
# control ports for the planned migrations (RENDR_MIG_PLAN, e.g. a>b,b>a), then checks the
# reports, the body's SHA-256 and this kernel's RST/abort counters (vm-tests/guest/migrate_ctl.py).
# One result per check; each carries the client's whole log.
t0=$(uptime_s)
timeout -s KILL "$RENDR_MIG_TIMEOUT" python3 /rendr/migrate_ctl.py client --vip "$RENDR_VIP" \
  --port 8080 --mib "$RENDR_MIG_MIB" --ctl "$RENDR_MIG_CTL" --plan "$RENDR_MIG_PLAN" \
  --timeout "$((RENDR_MIG_TIMEOUT - 30))" --checks /tmp/mig-checks.txt >/tmp/mig-client.log 2>&1
rc=$?
echo "client exit $rc" >>/tmp/mig-client.log
n=0
if [ -f /tmp/mig-checks.txt ]; then
  while read -r st secs name; do
    rendr_id=$((rendr_id + 1))
    rendr_emit_log "$rendr_id" /tmp/mig-client.log
    rendr_result "$rendr_id" migrate "$st" "$rc" "$secs" "$name"
    n=$((n + 1))
  done </tmp/mig-checks.txt
fi
if [ "$n" = 0 ] || [ "$rc" != 0 ] && ! grep -q '^FAIL' /tmp/mig-checks.txt 2>/dev/null; then
  rendr_id=$((rendr_id + 1))
  rendr_emit_log "$rendr_id" /tmp/mig-client.log
  rendr_result "$rendr_id" migrate FAIL "$rc" "$(awk -v a="$t0" -v b="$(uptime_s)" \
    'BEGIN { printf "%.1f", b - a }')" "client exited $rc"
fi
