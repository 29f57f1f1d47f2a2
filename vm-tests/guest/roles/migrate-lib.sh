# SPDX-License-Identifier: Apache-2.0
# Helpers of the migration scenario's roles (sourced by migrate-gw.sh / migrate-host.sh, which
# /init sources). The agents' certificates come in the run's overlay: /rendr/pki/ca.pem and this
# guest's own NAME.pem + NAME.key, issued on the host by `rendrctl cert` for this run.
mig=/tmp/rendr-mig
mkdir -p "$mig"
chmod 700 "$mig"

mig_secs() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.1f", b - a }'; }

# mig_wait_line FILE TEXT PID SECONDS: waits until FILE contains TEXT; fails early when PID died.
mig_wait_line() {
  n=0
  while [ "$n" -lt $(($4 * 10)) ]; do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { grep -q "$2" "$1" 2>/dev/null; return $?; }
    sleep 0.1
    n=$((n + 1))
  done
  return 1
}

# mig_start_agent: rendr-agent NAME in the background ($agent_pid); 0 once it printed ready.
mig_start_agent() {
  # shellcheck disable=SC2086  # RENDR_AGENT_ARGS is a word list by design
  "$RENDR_AGENT" --name "$RENDR_AGENT_NAME" --cert "/rendr/pki/$RENDR_AGENT_NAME.pem" \
    --key "/rendr/pki/$RENDR_AGENT_NAME.key" --ca /rendr/pki/ca.pem --control "$mig/agent.sock" \
    $RENDR_AGENT_ARGS >"$mig/agent.log" 2>&1 </dev/null &
  agent_pid=$!
  mig_wait_line "$mig/agent.log" "rendr-agent $RENDR_AGENT_NAME ready" "$agent_pid" 60
}

# mig_stop PID...: SIGTERM, then SIGKILL after 5 s.
mig_stop() {
  for p in "$@"; do kill "$p" 2>/dev/null; done
  for p in "$@"; do
    n=0
    while kill -0 "$p" 2>/dev/null && [ "$n" -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
    kill -9 "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
}

# mig_section TITLE FILE >>LOG: a file's content under a title, for the logs sent to the host.
mig_section() {
  echo "---- $1"
  cat "$2" 2>/dev/null
}

# mig_report NAME OK LOG T0: one result of suite `migrate`.
mig_report() {
  rendr_id=$((rendr_id + 1))
  rendr_emit_log "$rendr_id" "$3"
  if [ "$2" = 0 ]; then st=PASS; else st=FAIL; fi
  rendr_result "$rendr_id" migrate "$st" "$2" "$(mig_secs "$4")" "$1"
}
