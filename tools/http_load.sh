#!/usr/bin/env bash
# End-to-end HTTP load: axum hello-world with no limiter, with tower-freqlimit's
# layer and with tower_governor 0.8 (quota nothing exceeds), and the rejection
# path of both (one request per hour: every request after the first gets 429);
# also ours on Tokio's clock (`ours-tokio`, `Clock::tokio()`; `ours` reads the
# TSC, a normal build's default), for information.
#
# Usage (from anywhere in the repository):
#
#   bash tools/http_load.sh
#
# Settings, through the environment (defaults in brackets):
#   ROUNDS [5]       rounds; every round runs every mode once, in a rotated order
#   DURATION [5]     seconds of each measured wrk run
#   WARMUP [1]       seconds of an unmeasured wrk run before each measured one
#   PIN [1]          1: the server gets CPU 0 and one Tokio worker, wrk gets
#                    CPU 1 (taskset), so the load generator does not compete
#                    with the server for a core; 0: both float over all cores
#   THREADS [1 with PIN=1, else 2]  wrk threads
#   CONNECTIONS [50] wrk connections
#   PORT [3917]      loopback port of the server
#
# Everything runs on 127.0.0.1; each wrk run is bounded by -d (and by
# `timeout`), so the whole script takes about ROUNDS * 6 * (DURATION + WARMUP + 1)
# seconds after the build (about 4 minutes with the defaults).
#
# It builds tools/bench_server.rs in release mode, installs wrk from the
# Debian packages if it is missing (apt-get, as root or through sudo), starts a
# fresh server for every run, and prints every run, then the median requests per
# second of each mode and the ratios between them.

set -euo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
PIN=${PIN:-1}
if [ "$PIN" = 1 ] && ! { command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; }; then
    echo "PIN=1 needs taskset and 2 CPUs; running unpinned" >&2
    PIN=0
fi
if [ "$PIN" = 1 ]; then
    THREADS=${THREADS:-1}
    SERVER_CPU=(taskset -c 0 env TOKIO_WORKER_THREADS=1)
    WRK_CPU=(taskset -c 1)
else
    THREADS=${THREADS:-2}
    SERVER_CPU=()
    WRK_CPU=()
fi
CONNECTIONS=${CONNECTIONS:-50}
PORT=${PORT:-3917}
MODES=(none ours governor ours-reject governor-reject ours-tokio)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SERVER="$ROOT/target/release/examples/bench_server"
URL="http://127.0.0.1:$PORT/"

log() { printf '%s\n' "$*"; }

# --- build and tools ---------------------------------------------------------

cargo build --release --example bench_server >&2

if ! command -v wrk >/dev/null 2>&1; then
    SUDO=
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
    log "wrk not found: installing it with apt-get" >&2
    if ! $SUDO apt-get install -y wrk >&2; then
        $SUDO apt-get update >&2
        $SUDO apt-get install -y wrk >&2
    fi
fi

# --- what and where ----------------------------------------------------------

lock_version() {
    # The version of package $1 in Cargo.lock (first match).
    awk -v name="$1" '
        $1 == "name" && $3 == "\"" name "\"" { found = 1; next }
        found && $1 == "version" { gsub(/"/, "", $3); print $3; exit }
    ' Cargo.lock
}

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
log "# HTTP load: axum hello-world, no limiter vs tower-freqlimit vs tower_governor"
log "date:        $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
log "command:     ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP PIN=$PIN THREADS=$THREADS CONNECTIONS=$CONNECTIONS PORT=$PORT bash tools/http_load.sh"
log "wrk command: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s $URL   (after an unmeasured ${WARMUP}s run; a fresh server per run)"
log "machine:     $(nproc) CPUs, $cpu_model; $(uname -sr)"
log "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$PIN" = 1 ]; then
    log "NOTE:        the server runs on CPU 0 (one Tokio worker), wrk on CPU 1 ($THREADS thread): the server's core is the bottleneck,"
    log "             so requests/s measure its CPU cost per request, limiter included; figures are for comparing modes on this machine only."
else
    log "NOTE:        wrk and the server share these $(nproc) cores (server: multi-threaded Tokio, one worker per core; wrk: $THREADS threads),"
    log "             so a limiter's CPU cost also slows the load generator; figures are for comparing modes on this machine only."
fi
log "toolchain:   $(rustc --version)"
log "wrk:         $(wrk -v 2>&1 | head -n 1)"
log "crates:      tower-freqlimit $(lock_version tower-freqlimit), tower_governor $(lock_version tower_governor), governor $(lock_version governor), axum $(lock_version axum), hyper $(lock_version hyper), tokio $(lock_version tokio)"
log "modes:       none; ours / governor: 10^9 per s, burst 10^9, per peer IP; *-reject: 1 per hour per peer IP (all but the first request get 429);"
log "             ours-tokio: ours on Clock::tokio() (clock_gettime); ours: the TSC, a normal build's default; ours: .max_wait(0).http_responses(); governor: PeerIpKeyExtractor, NoOpMiddleware"
log ""

# --- runs --------------------------------------------------------------------

server_pid=
stop_server() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=
    fi
}
trap stop_server EXIT

start_server() {
    PORT=$PORT "${SERVER_CPU[@]}" "$SERVER" "$1" 2>/dev/null &
    server_pid=$!
    for _ in $(seq 100); do
        if curl -s -o /dev/null "$URL" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    log "server ($1) did not come up on $URL" >&2
    exit 1
}

declare -A rps_of
printf '%-5s | %-15s | %12s | %10s | %10s | %12s\n' "round" "mode" "requests/s" "requests" "non-2xx" "avg latency"
printf '%-5s-|-%-15s-|-%12s-|-%10s-|-%10s-|-%12s\n' "-----" "---------------" "------------" "----------" "----------" "------------"
for ((round = 0; round < ROUNDS; round++)); do
    for ((i = 0; i < ${#MODES[@]}; i++)); do
        mode=${MODES[$(((i + round) % ${#MODES[@]}))]}
        start_server "$mode"
        timeout $((WARMUP + 10)) "${WRK_CPU[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "$URL" >/dev/null
        out=$(timeout $((DURATION + 10)) "${WRK_CPU[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" "$URL")
        stop_server
        rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
        total=$(awk '/requests in/ { print $1 }' <<<"$out")
        non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $5 }' <<<"$out")
        latency=$(awk '$1 == "Latency" { print $2 }' <<<"$out")
        errors=$(awk '/Socket errors:/' <<<"$out")
        printf '%-5s | %-15s | %12s | %10s | %10s | %12s\n' "$((round + 1))" "$mode" "$rps" "$total" "${non2xx:-0}" "$latency"
        if [ -n "$errors" ]; then log "      $mode: $errors"; fi
        rps_of[$mode]="${rps_of[$mode]:-} $rps"
    done
done

# --- summary -----------------------------------------------------------------

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A med
log ""
printf '%-15s | %14s | %s\n' "mode" "median req/s" "all runs"
printf '%-15s-|-%14s-|-%s\n' "---------------" "--------------" "--------"
for mode in "${MODES[@]}"; do
    med[$mode]=$(median "${rps_of[$mode]}")
    printf '%-15s | %14.0f | %s\n' "$mode" "${med[$mode]}" "${rps_of[$mode]# }"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
verdict() { awk -v r="$1" -v g="$2" 'BEGIN { print (r >= g) ? "met" : "NOT met" }'; }
r_ours=$(ratio "${med[ours]}" "${med[none]}")
r_gov=$(ratio "${med[governor]}" "${med[none]}")
r_og=$(ratio "${med[ours]}" "${med[governor]}")
r_oreject=$(ratio "${med[ours-reject]}" "${med[none]}")
r_greject=$(ratio "${med[governor-reject]}" "${med[none]}")
r_rej=$(ratio "${med[ours-reject]}" "${med[governor-reject]}")
r_tokio=$(ratio "${med[ours-tokio]}" "${med[none]}")
r_tokio_gov=$(ratio "${med[ours-tokio]}" "${med[governor]}")
log ""
printf '%-34s | %6s | %-8s | %s\n' "ratio of median req/s" "value" "goal" "verdict"
printf '%-34s-|-%6s-|-%-8s-|-%s\n' "----------------------------------" "------" "--------" "-------"
printf '%-34s | %6s | %-8s | %s\n' "ours / none" "$r_ours" ">= 0.95" "$(verdict "$r_ours" 0.95)"
printf '%-34s | %6s | %-8s | %s\n' "governor / none" "$r_gov" "" ""
printf '%-34s | %6s | %-8s | %s\n' "ours / governor" "$r_og" ">= 1" "$(verdict "$r_og" 1)"
printf '%-34s | %6s | %-8s | %s\n' "ours-reject / none" "$r_oreject" ">= 0.8" "$(verdict "$r_oreject" 0.8)"
printf '%-34s | %6s | %-8s | %s\n' "governor-reject / none" "$r_greject" "" ""
printf '%-34s | %6s | %-8s | %s\n' "ours-reject / governor-reject" "$r_rej" "" ""
printf '%-34s | %6s | %-8s | %s\n' "ours-tokio / none (information)" "$r_tokio" "" ""
printf '%-34s | %6s | %-8s | %s\n' "ours-tokio / governor (information)" "$r_tokio_gov" "" ""
log ""
log "load after:  $(cut -d' ' -f1-3 /proc/loadavg)"
