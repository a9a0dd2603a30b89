#!/usr/bin/env bash
# Instructions per decision beside governor (benches/core.rs's lines), counted
# by valgrind's callgrind: unlike times, the counts do not move with the
# machine's load. Each line sets up its case, then makes N calls inside one
# function, `measured_calls`, and only that function is counted
# (--toggle-collect): the total over N is the cost of one call, clock read
# included. `ours` reads the default clock of a normal build (the TSC).
# Usage: bash tools/core_instructions.sh [N]   (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
command -v valgrind >/dev/null || { echo "valgrind is needed (Debian: apt-get install valgrind)"; exit 1; }

BIN=$(cargo bench --bench core --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "core" and m.get("executable"):
        print(m["executable"])')

per_call() { # $1 = group:line
  local total
  total=$(CORE_COUNT="$1" CORE_COUNT_N="$N" valgrind --tool=callgrind \
    --callgrind-out-file=/dev/null --collect-atstart=no \
    --toggle-collect='*measured_calls*' "$BIN" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
  python3 -c "print(f'{$total / $N:.1f}')"
}

printf '%-44s | %8s | %8s | %8s\n' "instructions per call (callgrind)" ours governor ours/gov
for row in \
  "a hot key:a_hot_key:ours/reserve_trait_poll:governor/check_key" \
  "a hot key, governor on foldhash:a_hot_key:ours/reserve_trait_poll:governor/check_key_foldhash" \
  "b 100k keys:b_100k_keys:ours/reserve_trait_poll:governor/check_key" \
  "b 100k keys, governor on foldhash:b_100k_keys:ours/reserve_trait_poll:governor/check_key_foldhash" \
  "d global:d_global:ours/reserve_trait_poll_none:governor/direct_check" \
  "e clock read:e_clock:ours_default_clock_now:governor_quanta_now" \
  "f no clock, hot key:f_no_clock_diagnostic:ours/reserve_now_key:governor/check_key_fake_clock_foldhash" \
  "f no clock, global:f_no_clock_diagnostic:ours/reserve_now_none:governor/direct_check_fake_clock"; do
  IFS=: read -r label group ours_line gov_line <<<"$row"
  ours=$(per_call "$group:$ours_line")
  gov=$(per_call "$group:$gov_line")
  printf '%-44s | %8s | %8s | %8.2f\n' "$label" "$ours" "$gov" "$(python3 -c "print($ours / $gov)")"
done
