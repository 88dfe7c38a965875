"""How often the gate exits 0, 1 or 3 where the truth is known: "not proven is not passed", simulated.

One suite, binary metric (pass/fail per case), margin m = 0.05, alpha 0.05, the gate's own Tango interval
(``stats.compare_binary`` decided by ``stats.decide_suites``, as ``evalsvc gate`` decides). Each case is a
paired outcome: with probability psi/2 it flips down and psi/2 up by noise alone (psi: the discordance
a nondeterministic server shows at delta = 0), and with probability |delta| it is a real loss (pass -> fail):
the true delta is exactly delta. Exit 0 is pass or improvement, 1 regression, 3 inconclusive (the default);
the "old exit 0" column counts what the gate exited 0 on before inconclusive became exit 3.

    OMP_NUM_THREADS=1 python3 bench/simulate_gate_exits.py --reps 4000 --seed 1
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

from evalsvc.stats.binary import compare_binary
from evalsvc.stats.multiplicity import decide_suites

MARGIN, ALPHA = 0.05, 0.05
NS = (160, 1000)
DISCORDANCE = (0.02, 0.10)
DELTAS = (0.0, -MARGIN / 2, -MARGIN, -2 * MARGIN)
EXIT = {"pass": 0, "improvement": 0, "regression": 1, "inconclusive": 3}


def paired(rng: np.random.Generator, n: int, psi: float, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Baseline and candidate pass/fail per case with P(down) = psi/2 + |delta|, P(up) = psi/2 (delta <= 0)."""
    u = rng.random(n)
    down = u < psi / 2 - delta
    up = (u >= psi / 2 - delta) & (u < psi - delta)
    base = np.ones(n)  # the concordant cases' level does not enter the paired difference
    base[up] = 0.0
    cand = base.copy()
    cand[down], cand[up] = 0.0, 1.0
    return base, cand


def cell(n: int, psi: float, delta: float, reps: int, seed: int) -> Counter[int]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, n, round(psi * 1000), round(-delta * 1000)]))
    counts: Counter[int] = Counter()
    for _ in range(reps):
        c = decide_suites([compare_binary("pass", *paired(rng, n, psi, delta), MARGIN, ALPHA)], ALPHA)[0]
        counts[EXIT[c.verdict]] += 1
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    started = time.perf_counter()
    print(f"reps = {args.reps} per row, seed {args.seed}; margin {MARGIN}, one-sided alpha {ALPHA}; Monte-Carlo SE "
          f"{100 * (0.05 * 0.95 / args.reps) ** 0.5:.1f} points at 5%.\n")
    print("| n | discordance | true Δ | exit 0 (pass) | exit 1 (regression) | exit 3 (inconclusive) | old exit 0 |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in NS:
        for psi in DISCORDANCE:
            for delta in DELTAS:
                c = cell(n, psi, delta, args.reps, args.seed)
                share = {k: 100 * c[k] / args.reps for k in (0, 1, 3)}
                label = {0.0: "0", -MARGIN / 2: "−m/2", -MARGIN: "−m", -2 * MARGIN: "−2m"}[delta]
                print(f"| {n} | {psi:.0%} | {label} | {share[0]:.1f}% | {share[1]:.1f}% | {share[3]:.1f}% | "
                      f"{share[0] + share[3]:.1f}% |")
    print(f"\n_{time.perf_counter() - started:.0f} s_")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
