# SPDX-License-Identifier: Apache-2.0
# Role "pair-server" (sourced by /init): the first guest of the two-guest network check. Answers
# ping, accepts one TCP connection from the other guest on RENDR_PAIR_PORT, reads until EOF and
# answers with the SHA-256 of what it received (vm-tests/guest/pair_tcp.py).
rendr_id=$((rendr_id + 1))
t0=$(uptime_s)
python3 /rendr/pair_tcp.py serve "$RENDR_PAIR_PORT" --timeout 120 >/tmp/pair.log 2>&1
rc=$?
t1=$(uptime_s)
rendr_emit_log "$rendr_id" /tmp/pair.log
if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
rendr_result "$rendr_id" net "$st" "$rc" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" \
  "tcp server receives the other guest's stream"
