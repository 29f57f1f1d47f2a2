# SPDX-License-Identifier: Apache-2.0
# Role "migrate-host" (sourced by /init): hostA or hostB of the migration scenario. Carries the
# VIP on lo, writes the scenario's file (the same bytes on every host), runs rendr-agent (host
# role: eBPF freeze, TCP_REPAIR) and rendr-fileserver on VIP:8080 registered with it, then serves
# the control port: the peer asks it to migrate the download's connection away
# (`rendrctl migrate --service http --to OTHER`) and says when it is done.
. /rendr/roles/migrate-lib.sh
t0=$(uptime_s)
ok=0
{
  ip addr add "$RENDR_VIP/32" dev lo &&
    sha=$(timeout -s KILL 120 python3 /rendr/migrate_ctl.py mkfile "$mig/file" \
      --mib "$RENDR_MIG_MIB") && echo "file $mig/file: $RENDR_MIG_MIB MiB, sha256 $sha"
} >"$mig/start.log" 2>&1 || ok=1
mkdir -p "$mig/www" && mv "$mig/file" "$mig/www/file" 2>>"$mig/start.log"
fs_pid=
if [ "$ok" = 0 ] && mig_start_agent; then
  "$RENDR_FILESERVER" --agent "$mig/agent.sock" --service http --root "$mig/www" \
    --listen "$RENDR_VIP:8080" >"$mig/fileserver.log" 2>&1 </dev/null &
  fs_pid=$!
  mig_wait_line "$mig/fileserver.log" "rendr-fileserver ready" "$fs_pid" 30 || ok=1
else
  ok=1
fi
{
  mig_section "agent (so far)" "$mig/agent.log"
  mig_section "fileserver (so far)" "$mig/fileserver.log"
} >>"$mig/start.log"
mig_report "agent $RENDR_AGENT_NAME + rendr-fileserver on $RENDR_VIP:8080 ready" "$ok" \
  "$mig/start.log" "$t0"

# The control port: answers `ready` only if the start-up above worked (else the peer gives up
# after its ready timeout and every guest reports).
t0=$(uptime_s)
if [ "$ok" = 0 ]; then
  timeout -s KILL "$RENDR_MIG_TIMEOUT" python3 /rendr/migrate_ctl.py serve --name "$RENDR_AGENT_NAME" \
    --agent "$mig/agent.sock" --rendrctl "$RENDR_RENDRCTL" --info "$sha" \
    --timeout "$((RENDR_MIG_TIMEOUT - 10))" >"$mig/ctl.log" 2>&1
  ok=$?
  kill -0 "$agent_pid" 2>/dev/null || { echo "rendr-agent died" >>"$mig/ctl.log"; ok=1; }
  "$RENDR_RENDRCTL" status --agent "$mig/agent.sock" --json >"$mig/status.json" 2>&1
  echo "(rendrctl exit $?)" >>"$mig/status.json"
  "$RENDR_RENDRCTL" flows --agent "$mig/agent.sock" >"$mig/flows.txt" 2>&1
  echo "(rendrctl exit $?)" >>"$mig/flows.txt"
  "$RENDR_RENDRCTL" metrics --agent "$mig/agent.sock" >"$mig/metrics.txt" 2>&1
  echo "(rendrctl exit $?)" >>"$mig/metrics.txt"
fi
mig_stop $fs_pid $agent_pid
# Most telling last: the harness prints the tail of a failed result's log.
{
  mig_section "/proc/net/snmp (this host)" /proc/net/snmp
  mig_section "rendrctl metrics --agent (at the end)" "$mig/metrics.txt"
  mig_section "rendrctl status --agent (at the end)" "$mig/status.json"
  mig_section "rendrctl flows --agent (at the end)" "$mig/flows.txt"
  mig_section "rendr-fileserver" "$mig/fileserver.log"
  mig_section "rendr-agent $RENDR_AGENT_NAME" "$mig/agent.log"
  mig_section "control port (migrations asked of $RENDR_AGENT_NAME)" "$mig/ctl.log"
} >"$mig/end.log" 2>&1
mig_report "host $RENDR_AGENT_NAME: migrations it was asked for committed, agent alive to the end" \
  "$ok" "$mig/end.log" "$t0"
