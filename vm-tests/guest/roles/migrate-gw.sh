# SPDX-License-Identifier: Apache-2.0
# Role "migrate-gw" (sourced by /init): the gateway of the migration scenario. Forwards between
# its three NICs and runs rendr-agent in the gateway role (eBPF steering at ingress of the
# peer-facing NIC, RENDR_AGENT_ARGS); its control port answers `ready` and ends on `done`.
. /rendr/roles/migrate-lib.sh
t0=$(uptime_s)
ok=0
sysctl -qw net.ipv4.ip_forward=1 >"$mig/start.log" 2>&1 || ok=1
ip -br addr >>"$mig/start.log" 2>&1
ip route >>"$mig/start.log" 2>&1
if [ "$ok" = 0 ] && mig_start_agent; then :; else ok=1; fi
mig_section "agent (so far)" "$mig/agent.log" >>"$mig/start.log"
mig_report "gateway agent $RENDR_AGENT_NAME ready (steering: $RENDR_AGENT_ARGS)" "$ok" \
  "$mig/start.log" "$t0"

t0=$(uptime_s)
if [ "$ok" = 0 ]; then
  timeout -s KILL "$RENDR_MIG_TIMEOUT" python3 /rendr/migrate_ctl.py serve --name "$RENDR_AGENT_NAME" \
    --timeout "$((RENDR_MIG_TIMEOUT - 10))" >"$mig/ctl.log" 2>&1
  ok=$?
  kill -0 "$agent_pid" 2>/dev/null || { echo "rendr-agent died" >>"$mig/ctl.log"; ok=1; }
  "$RENDR_RENDRCTL" status --agent "$mig/agent.sock" --json >"$mig/status.json" 2>&1
  echo "(rendrctl exit $?)" >>"$mig/status.json"
  "$RENDR_RENDRCTL" metrics --agent "$mig/agent.sock" >"$mig/metrics.txt" 2>&1
  echo "(rendrctl exit $?)" >>"$mig/metrics.txt"
fi
mig_stop $agent_pid
{
  mig_section "rendrctl metrics --agent (at the end)" "$mig/metrics.txt"
  mig_section "rendrctl status --agent (at the end: steering table)" "$mig/status.json"
  mig_section "rendr-agent $RENDR_AGENT_NAME" "$mig/agent.log"
  mig_section "control port" "$mig/ctl.log"
} >"$mig/end.log" 2>&1
mig_report "gateway $RENDR_AGENT_NAME: steered until the peer was done, agent alive to the end" \
  "$ok" "$mig/end.log" "$t0"
