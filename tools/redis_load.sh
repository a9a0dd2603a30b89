#!/usr/bin/env bash
# Redis backend throughput: reservations per second through RedisBackend at
# concurrency 1, 16 and 64, against redis-benchmark running the same Lua script
# (EVALSHA, same arguments, same key spread) at the same concurrency, the two
# interleaved round by round on one fresh redis-server; then the flood case
# (Redis calls and time per 1 000 rejected requests, with and without the
# negative cache). Prints a table with the ratios ours / raw.
#
# Usage (from anywhere in the repository):
#
#   bash tools/redis_load.sh
#
# Settings, through the environment (defaults in brackets):
#   ROUNDS [3]     rounds; each measures ours then redis-benchmark at each concurrency
#   DURATION [3]   seconds of each of our measurements (redis-benchmark gets as
#                  many requests as we made in that time, so it runs about as long)
#
# It installs redis-server/redis-benchmark from Debian's packages when missing
# (as root or through sudo), builds benches/redis.rs in release mode, and starts
# and stops its own redis-server on a free loopback port (no persistence).
# About ROUNDS * 3 * 2 * DURATION seconds after the build (under a minute with
# the defaults).

set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1; then
    SUDO=
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
    echo "redis-server or redis-benchmark not found: installing redis-server with apt-get" >&2
    $SUDO apt-get update >&2
    $SUDO apt-get install -y redis-server >&2
fi

echo "date:      $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine:   $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo); $(uname -sr)"
echo "load:      $(cut -d' ' -f1-3 /proc/loadavg)"
echo "toolchain: $(rustc --version)"
echo "command:   ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-3} bash tools/redis_load.sh"
echo
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-3} cargo bench --features redis --bench redis 2>/dev/null
