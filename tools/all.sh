#!/usr/bin/env bash
# Regenerates BENCHMARKS.md: every comparison table of the project, measured in
# one sitting on this machine, with the machine, the versions and the command
# behind each table.
#
#   bash tools/all.sh            # about 8 minutes on 2 cores; writes BENCHMARKS.md
#   OUT=/tmp/b.md bash tools/all.sh
#
# Each table comes from its own script or bench binary, which interleaves ours
# with the peer (lines take turns) and prints medians and ratios; this script
# only runs them in turn and collects their output. Run it on an idle machine:
# absolute figures move with load, ratios much less; the instruction counts
# (callgrind) do not move at all.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-BENCHMARKS.md}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

version_of() { # the locked version of a crate
  cargo metadata --format-version 1 --all-features --locked 2>/dev/null |
    python3 -c "import json,sys; m=json.load(sys.stdin); print(' '.join(sorted({p['version'] for p in m['packages'] if p['name']=='$1'})))"
}

section() { # $1 = title, $2 = command (run through bash), $3 = what it measures
  local title=$1 command=$2 about=$3
  echo "=== $title: $command" >&2
  local start end
  start=$(date +%s)
  if ! (bash -c "$command" >"$TMP/out" 2>"$TMP/err"); then
    echo "FAILED: $title" >&2
    tail -20 "$TMP/err" >&2
    printf '## %s\n\n**This run failed**; see `%s`.\n\n' "$title" "$command" >>"$TMP/doc"
    return
  fi
  end=$(date +%s)
  {
    printf '## %s\n\n%s\n\n' "$title" "$about"
    printf 'Command: `%s` (%d s here)\n\n```text\n' "$command" "$((end - start))"
    cat "$TMP/out"
    printf '```\n\n'
  } >>"$TMP/doc"
}

# Figures measured by hand (fuzzing, floods, extractor timings) live in the
# page's last section; keep it across regenerations.
KEPT=$(sed -n '/^## Measured outside `tools\/all.sh`/,$p' "$OUT" 2>/dev/null || true)

: >"$TMP/doc"
section "Core: one decision, ours vs governor" \
  "cargo bench --bench core -- summary_only_no_such_bench 2>/dev/null | sed -n '/^Summary/,\$p'" \
  "Nanoseconds per call (clock read included) of \`InMemoryBackend\` beside \`governor\`'s keyed \`RateLimiter\`, a quota nothing exceeds; medians of interleaved samples. Ours reads the default clock of a normal build (the time-stamp counter); the \`Clock::tokio\` lines show the default of a test build (\`test-util\`)."
section "Core: instructions per decision (callgrind)" \
  "bash tools/core_instructions.sh 200000" \
  "Instructions per call (clock read included) counted by valgrind, which do not move with the machine's load: ours with the default clock of a normal build (the time-stamp counter) beside governor, the same lines as the table above."
section "Compound limits: one decision over three limits" \
  "cargo bench --bench compound -- summary_only_no_such_bench 2>/dev/null | sed -n '/^Summary/,\$p'" \
  "Nanoseconds per decision (one clock read included) on the in-memory backend, a hot set of 15 chats in 3 groups: one limit (\`reserve_now\`), a compound of three (\`reserve_compound_now\`: the chat, its group, the global bucket; what \`CompoundLimit\` runs) and the same three limits as three \`reserve_now\` calls in a row; then the same as Tower layers (one \`FreqLimitLayer\`, one \`CompoundLimitLayer\`, three \`FreqLimitLayer\`s stacked). A quota nothing exceeds, medians of interleaved samples. Issue 14's goals: a compound within 2.5 times one limit, and faster than three stacked layers."
section "Compound limits: instructions per decision (callgrind)" \
  "bash tools/compound_instructions.sh 200000" \
  "Instructions per decision (and per request through the layers) counted by valgrind, the same lines as the table above."
section "Memory per key" \
  "cargo bench --bench bytes_per_key 2>/dev/null" \
  "Live heap bytes per key after inserting distinct \`u64\` keys (a counting allocator), ours vs governor."
section "Tower layer: time per request, ours vs tower_governor" \
  "cargo bench --bench layer -- summary_only_no_such_bench 2>/dev/null | sed -n '/^Summary/,\$p'" \
  "Nanoseconds per request through each stack (inner service and request/response drops included), medians of interleaved samples; tower_governor with its \`PeerIpKeyExtractor\`, ours keyed by the same peer IP."
section "Tower layer: instructions per request (callgrind)" \
  "bash tools/layer_instructions.sh 20000" \
  "Instructions per request counted by valgrind, which do not move with the machine's load: the tie-breaker when times are within the noise. Rejection rows count instructions only: governor's 429 path spends its time in \`cpuid\` traps, which valgrind does not count."
section "HTTP load: axum hello-world under wrk" \
  "bash tools/http_load.sh 2>/dev/null | sed -n '/^mode /,\$p'" \
  "Requests per second over loopback, medians of 5 rounds of 5 s, a fresh server per run, modes rotated. The server runs on CPU 0 with one Tokio worker and wrk (1 thread, 50 connections) on CPU 1, so the server's core is the bottleneck and the figures measure its CPU cost per request."
if cargo metadata --format-version 1 --no-deps 2>/dev/null | grep -q '"redis"'; then
  section "Redis backend: ours vs the raw script" \
    "bash tools/redis_load.sh 2>/dev/null" \
    "Reservations per second through \`RedisBackend\` beside \`redis-benchmark\` running the same Lua script at the same concurrency, and Redis calls per 1 000 rejected requests with and without the negative cache."
  section "Redis faults" \
    "cargo test --release --features redis --test backends -- redis::faults redis::sentinel --nocapture --test-threads 1 2>/dev/null | grep -E 'FIGURE|admitted;'" \
    "Real servers killed, restarted and failed over by the tests: how long a call takes to fail once the server is known down (at two timeouts), how long after the server is back the circuit closes with no call to help, and how long calls through Sentinel fail after the primary is killed (Sentinel \`down-after-milliseconds\` 1 s), with the highest share of \`burst + w/T\` any window of that run reached."
fi

{
  cat <<EOF
# Benchmarks

Every table below was measured in one sitting by \`bash tools/all.sh\`, which
regenerates this page. Ours and the peer are always measured in the same run,
taking turns, and compared as ratios of medians. To rerun one table, run its
command.

- Date: $(date -u '+%Y-%m-%d %H:%M UTC')
- Machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(free -g | awk '/^Mem:/ {print $2}') GiB; $(uname -sr)
- Load average when it started: $(cut -d' ' -f1-3 /proc/loadavg)
- Toolchain: $(rustc --version)
- Peers: governor $(version_of governor), tower_governor $(version_of tower_governor), tower $(version_of tower), axum $(version_of axum)
- Tools: $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(redis-server --version 2>/dev/null | cut -d' ' -f1-3 || echo 'no redis-server'), $(valgrind --version 2>/dev/null || echo 'no valgrind')
- Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)

EOF
  cat "$TMP/doc"
  if [ -n "$KEPT" ]; then printf '%s\n' "$KEPT"; fi
} >"$OUT"
echo "wrote $OUT" >&2
