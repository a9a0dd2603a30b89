#!/usr/bin/env bash
# Instructions per request through the layer beside tower_governor, counted by
# valgrind's callgrind: unlike times, the counts do not move with the machine's
# load, so this settles "ours vs governor" on a busy or noisy machine.
#
# Each line sets up its group, then sends N requests inside one function,
# `measured_requests`, and only that function is counted (--toggle-collect):
# the total over N is the cost of one request, everything included (the
# service, its future, building the request and dropping it and the response).
# Usage: bash tools/layer_instructions.sh [N]   (default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
command -v valgrind >/dev/null || { echo "valgrind is needed (Debian: apt-get install valgrind)"; exit 1; }

cargo bench --bench layer --no-run 2>/dev/null
BIN=$(cargo bench --bench layer --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "layer" and m.get("executable"):
        print(m["executable"])')

per_request() { # $1 = group/line
  local total
  total=$(LAYER_COUNT="$1" LAYER_COUNT_N="$N" valgrind --tool=callgrind \
    --callgrind-out-file=/dev/null --collect-atstart=no \
    --toggle-collect='*measured_requests*' "$BIN" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
  echo $((total / N))
}

printf '%-48s | %8s | %8s | %8s | %8s\n' "instructions per request (callgrind)" none ours governor ours/gov
for row in \
  "a_noop_inner ready_call allowed:ours:governor" \
  "a_noop_inner oneshot_clone allowed:ours:governor" \
  "a_noop_inner ready_call rejected:ours_reject:governor_reject" \
  "a_noop_inner ready_call allowed, tokio clock:ours_tokio_clock:governor" \
  "a_noop_inner oneshot_clone allowed, tokio clock:ours_tokio_clock:governor" \
  "b_boxed_inner ready_call allowed:ours:governor" \
  "b_boxed_inner ready_call allowed, tokio clock:ours_tokio_clock:governor" \
  "b_boxed_inner oneshot_clone allowed:ours:governor" \
  "b_boxed_inner oneshot_clone allowed, tokio clock:ours_tokio_clock:governor" \
  "c_axum_router oneshot_clone allowed:ours:governor" \
  "c_axum_router oneshot_clone allowed, tokio clock:ours_tokio_clock:governor"; do
  label=${row%%:*}
  rest=${row#*:}
  ours_line=${rest%%:*}
  gov_line=${rest#*:}
  read -r group drive _ <<<"$label"
  if [ "$group" = c_axum_router ]; then suffix=""; else suffix="/$drive"; fi
  none=$(per_request "$group/none$suffix")
  ours=$(per_request "$group/$ours_line$suffix")
  gov=$(per_request "$group/$gov_line$suffix")
  printf '%-48s | %8d | %8d | %8d | %8.2f\n' "$label" "$none" "$ours" "$gov" \
    "$(python3 -c "print($ours / $gov)")"
done
