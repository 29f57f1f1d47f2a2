# SPDX-License-Identifier: Apache-2.0
# Role "pair-client" (sourced by /init): the second guest of the two-guest network check. Pings
# the first guest over the QEMU link, then streams RENDR_PAIR_MIB MiB to it over TCP and checks
# the SHA-256 the server answers with (vm-tests/guest/pair_tcp.py).
rendr_id=$((rendr_id + 1))
t0=$(uptime_s)
ok=1
for _ in $(seq 1 60); do
  ping -c 1 -W 1 "$RENDR_PEER_IP" >/tmp/ping.log 2>&1 && ok=0 && break
done
ping -c 3 -i 0.2 -W 2 "$RENDR_PEER_IP" >>/tmp/ping.log 2>&1 || ok=1
t1=$(uptime_s)
rendr_emit_log "$rendr_id" /tmp/ping.log
if [ "$ok" = 0 ]; then st=PASS; else st=FAIL; fi
rendr_result "$rendr_id" net "$st" "$ok" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" \
  "ping the other guest"

rendr_id=$((rendr_id + 1))
t0=$(uptime_s)
python3 /rendr/pair_tcp.py send "$RENDR_PEER_IP" "$RENDR_PAIR_PORT" --mib "$RENDR_PAIR_MIB" \
  --timeout 120 >/tmp/pair.log 2>&1
rc=$?
t1=$(uptime_s)
rendr_emit_log "$rendr_id" /tmp/pair.log
if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
rendr_result "$rendr_id" net "$st" "$rc" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" \
  "tcp stream to the other guest, SHA-256 checked"
