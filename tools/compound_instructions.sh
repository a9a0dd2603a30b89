#!/usr/bin/env bash
# Instructions per decision of benches/compound.rs's lines (one limit, a
# compound of three, three stacked; then the same as Tower layers), counted by valgrind's callgrind: unlike
# times, the counts do not move with the machine's load. Each line sets up its
# backend, then makes N decisions inside one function, `measured_calls`, and
# only that function is counted (--toggle-collect): the total over N is the
# cost of one decision, clock read included.
# Usage: bash tools/compound_instructions.sh [N]   (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
command -v valgrind >/dev/null || { echo "valgrind is needed (Debian: apt-get install valgrind)"; exit 1; }

BIN=$(cargo bench --bench compound --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "compound" and m.get("executable"):
        print(m["executable"])')

per_call() { # $1 = line
  local total
  total=$(COMPOUND_COUNT="$1" COMPOUND_COUNT_N="$N" valgrind --tool=callgrind \
    --callgrind-out-file=/dev/null --collect-atstart=no \
    --toggle-collect='*measured_calls*' "$BIN" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
  python3 -c "print(f'{$total / $N:.1f}')"
}

table() { # $1 = title; then label:line rows, the first the "one limit" row
  local title=$1 one="" label line n
  shift
  printf '%-58s | %8s | %12s\n' "$title" ours "x one limit"
  for row in "$@"; do
    label=${row%:*}
    line=${row##*:}
    n=$(per_call "$line")
    [ -n "$one" ] || one=$n
    printf '%-58s | %8s | %12.2f\n' "$label" "$n" "$(python3 -c "print($n / $one)")"
  done
}

table "instructions per decision (callgrind)" \
  "one limit: reserve_now(chat):one_limit" \
  "compound of 3: reserve_compound_now(chat, group, global):compound_3" \
  "3 stacked: reserve_now(chat), (group), (None):stacked_3"
echo
table "instructions per request, Tower layers (callgrind)" \
  "layer, one limit: FreqLimitLayer (chat):layer_one" \
  "layer, compound of 3: CompoundLimitLayer:layer_compound_3" \
  "layer, 3 stacked: FreqLimitLayer x 3:layer_stacked_3"
