#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# The echo example end to end on loopback: one flow over two paths (the second from 127.0.0.2),
# 32 MiB echoed while the client switches paths every 4 MiB and kills the active carrier at
# 10 MiB. Passes when the client saw every byte back exactly once (its exit status and JSON)
# and the server served the flow to its clean end.
set -euo pipefail
server_bin=$1
client_bin=$2
work=$(mktemp -d)
server_pid=
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$server_bin" --listen 127.0.0.1:0 --once >"$work/server.out" 2>"$work/server.err" &
server_pid=$!
addr=
for _ in $(seq 1 100); do
  addr=$(awk '/^listening on /{print $3; exit}' "$work/server.out")
  [[ -n $addr ]] && break
  sleep 0.05
done
[[ -n $addr ]] || { echo "FAIL: the server printed no address"; cat "$work/server.err"; exit 1; }

json=$("$client_bin" --path "tcp:$addr" --path "tcp:$addr@127.0.0.2" --bytes 32M \
  --migrate-every 4M --kill-at 10M --json)
echo "$json"
python3 - "$json" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
assert r["ok"] and r["mismatches"] == 0, r
assert r["bytes_echoed"] == r["bytes_sent"] == 32 << 20, r
assert r["explicit_migrations"] >= 1 and r["paths_lost"] == 1, r
PY
wait "$server_pid"
server_pid=
grep -q "flow done: 33554432 bytes echoed" "$work/server.out" ||
  { echo "FAIL: server did not report the whole flow"; cat "$work/server.out" "$work/server.err"; exit 1; }
echo "PASS"
