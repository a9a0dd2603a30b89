#!/usr/bin/env python3
"""Generate reference vectors for tests/aiofreqlimit_reference.rs.

Runs the REAL ``aiofreqlimit.gcra.gcra_step`` (aiofreqlimit 0.2.2, from PyPI)
over many deterministic call sequences and writes them in a line-oriented text
format that the Rust test parses without any dependency:

    # comment lines
    case <limit> <period seconds, exact decimal> <burst> <number of calls>
    <now_ns> <delay repr()> <new_tat repr()>     (one line per call)

``now_ns`` is an integer number of nanoseconds; Python is given the float
``now_ns / 1e9`` (seconds). ``delay`` and ``new_tat`` are Python's results in
seconds, printed with ``repr()`` (shortest round-trip form). Python's own TAT is
carried from one call to the next exactly as ``FreqLimit`` does; the Rust side
carries its own TAT and never reads Python's back.

Usage (stdlib only, plus aiofreqlimit):

    pip download --no-deps aiofreqlimit==0.2.2 -d /tmp/aiofl
    python3 -m zipfile -e /tmp/aiofl/aiofreqlimit-0.2.2-py3-none-any.whl /tmp/aiofl/x
    PYTHONPATH=/tmp/aiofl/x python3 tests/data/gen_aiofreqlimit_vectors.py \\
        > tests/data/aiofreqlimit_vectors.txt

The output is fully determined by SEED and the code below.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import random
import sys
from decimal import Decimal
from fractions import Fraction

import aiofreqlimit
import aiofreqlimit.gcra
from aiofreqlimit.gcra import gcra_step
from aiofreqlimit.params import FreqLimitParams

SEED = 20250601
NS_PER_S = 10**9

# Periods from the brief, plus two that are not exact binary fractions.
PERIODS = ["0.001", "0.25", "1.0", "3.0", "60.0", "3600.0"]
AWKWARD_PERIODS = ["0.1", "2.5"]

# Where a sequence's clock starts: 0, or a loop.time()-like uptime.
OFFSETS_NS = [0, 100_000 * NS_PER_S, 1_234_567_891_234_567]

# Hand-picked cases first (limit, period, burst, calls, offset): awkward
# intervals such as 1 s / 3 and 1 s / 7, long back-to-back chains, extremes.
FIXED_CASES = [
    (1, "1.0", 1, 400, 0),
    (3, "1.0", 1, 400, 0),
    (3, "1.0", 3, 400, 100_000 * NS_PER_S),
    (7, "1.0", 1, 400, 0),
    (7, "1.0", 5, 400, 100_000 * NS_PER_S),
    (7, "60.0", 10, 400, 100_000 * NS_PER_S),
    (3, "0.25", 4, 400, 0),
    (50, "0.001", 10, 400, 100_000 * NS_PER_S),
    (1, "3600.0", 1, 400, 0),
    (7, "3600.0", 3, 400, 1_234_567_891_234_567),
    (3, "0.1", 2, 400, 100_000 * NS_PER_S),
    (7, "2.5", 7, 400, 0),
    (1, "1.0", 1, 1, 0),
    (49, "3.0", 10, 1, 100_000 * NS_PER_S),
]
N_RANDOM_CASES = 125
MAX_CALLS = 400


def exact_interval_ns(limit: int, period: str) -> Fraction:
    return Fraction(Decimal(period)) * NS_PER_S / limit


def next_gap_ns(rng: random.Random, profile: dict[str, int], interval: int,
                tau: int, prev_delay_ns: int) -> int:
    regime = rng.choices(list(profile), weights=list(profile.values()))[0]
    if regime == "same":  # many calls at one instant
        return 0
    if regime == "small":  # less than one interval
        return rng.randint(1, max(1, interval - 1))
    if regime == "near":  # about one interval, either side
        jitter = max(1, interval // 20)
        return max(0, interval + rng.randint(-jitter, jitter))
    if regime == "follow":  # sleep the delay, then call (what FreqLimit does)
        return prev_delay_ns + rng.choice([0, 0, 0, 1, rng.randint(0, 50_000)])
    if regime == "exact":  # exactly k intervals (ties at the boundaries)
        return interval * rng.randint(1, 3)
    if regime == "beyond_tau":  # the bucket refills completely
        return tau + interval + rng.randint(0, 2 * interval)
    if regime == "idle":  # a long idle gap
        return tau + interval * rng.randint(2, 50) + rng.randint(0, NS_PER_S)
    raise AssertionError(regime)


PROFILES = [
    # bursty: mostly simultaneous calls, so delays grow and tau matters
    {"same": 8, "small": 3, "near": 1, "follow": 2, "exact": 1,
     "beyond_tau": 1, "idle": 1},
    # steady: spacing around the interval
    {"same": 1, "small": 3, "near": 6, "follow": 2, "exact": 2,
     "beyond_tau": 1, "idle": 1},
    # waiting callers: each call sleeps its delay first
    {"same": 3, "small": 1, "near": 1, "follow": 8, "exact": 1,
     "beyond_tau": 1, "idle": 1},
    # mixed
    {"same": 4, "small": 4, "near": 3, "follow": 3, "exact": 2,
     "beyond_tau": 3, "idle": 1},
]


def run_case(rng: random.Random, limit: int, period: str, burst: int,
             n_calls: int, offset_ns: int) -> list[str]:
    params = FreqLimitParams(limit=limit, period=float(period), burst=burst)
    interval = math.ceil(exact_interval_ns(limit, period))
    tau = interval * (burst - 1)
    profile = rng.choice(PROFILES)
    lines = [f"case {limit} {period} {burst} {n_calls}"]
    tat: float | None = None
    now_ns = offset_ns
    prev_delay_ns = 0
    for i in range(n_calls):
        if i > 0:
            now_ns += next_gap_ns(rng, profile, interval, tau, prev_delay_ns)
        new_tat, delay = gcra_step(now_ns / 1e9, tat, params)
        tat = new_tat
        prev_delay_ns = math.ceil(Fraction(delay) * NS_PER_S)
        lines.append(f"{now_ns} {delay!r} {new_tat!r}")
    return lines


def main() -> None:
    rng = random.Random(SEED)
    cases = list(FIXED_CASES)
    for _ in range(N_RANDOM_CASES):
        period = rng.choice(PERIODS + PERIODS + AWKWARD_PERIODS)
        limit = rng.choice([3, 7]) if rng.random() < 0.2 else rng.randint(1, 50)
        burst = rng.randint(1, 10)
        n_calls = MAX_CALLS if rng.random() < 0.3 else rng.randint(1, MAX_CALLS)
        offset = rng.choice(OFFSETS_NS)
        cases.append((limit, period, burst, n_calls, offset))

    src = inspect.getsource(aiofreqlimit.gcra).encode()
    out = [
        "# Reference vectors from the real aiofreqlimit.gcra.gcra_step.",
        f"# aiofreqlimit {aiofreqlimit.__version__}, "
        f"gcra.py sha256 {hashlib.sha256(src).hexdigest()}",
        f"# Python {sys.version.split()[0]}, seed {SEED}, {len(cases)} cases.",
        "# Generated with (see the script's docstring for getting the wheel):",
        "#   PYTHONPATH=/tmp/aiofl/x python3 tests/data/gen_aiofreqlimit_vectors.py"
        " > tests/data/aiofreqlimit_vectors.txt",
        "# Format: 'case <limit> <period s> <burst> <calls>' then one line per call:",
        "#   <now_ns> <delay s, repr()> <new_tat s, repr()>  (Python got now_ns / 1e9)",
    ]
    for case in cases:
        out.extend(run_case(rng, *case))
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
