# SPDX-License-Identifier: Apache-2.0
# Role "router" (sourced by /init): forwards between its NICs (IPv4 and IPv6) and stays up; the
# harness stops it once the scenario's other guests are done (scenario entry "infra": True).
rendr_id=$((rendr_id + 1))
sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 >/tmp/router.log 2>&1
rc=$?
ip -br addr >>/tmp/router.log 2>&1
rendr_emit_log "$rendr_id" /tmp/router.log
if [ "$rc" = 0 ]; then st=PASS; else st=FAIL; fi
rendr_result "$rendr_id" net "$st" "$rc" 0.0 "router forwards between $(ls /sys/class/net | grep -c eth) NICs"
while :; do sleep 3600; done
