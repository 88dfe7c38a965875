"""Simulate the gate's verdicts where the truth is known: false alarms, power and the A/A pass rate.

Prints Markdown tables (docs/statistics.md pastes them). Every cell draws ``--reps`` paired data sets
from one of two generators and counts the verdicts of ``evalsvc.stats`` at margin 0.05 and alpha 0.05:

- binary: each case has a pass probability p ~ Beta(2, 2); baseline and candidate are independent
  Bernoulli draws given p (the candidate's p is scaled so that the true delta is exact). About 40% of
  pairs are discordant: a noisy, sampled-at-temperature eval, the hard case for a paired test.
- continuous: each case has a latent quality q ~ N(0.6, 0.2^2); each run scores q + N(0, 0.1^2)
  (the candidate also + delta): scores correlated 0.8 across runs, SD of the differences 0.141.

    OMP_NUM_THREADS=1 python3 bench/simulate_gate.py --reps 2000 --seed 1 --jobs 2
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np

from evalsvc.stats.binary import compare_binary
from evalsvc.stats.bootstrap import compare_continuous
from evalsvc.stats.multiplicity import decide

NS = (50, 100, 200, 500, 1000)
DELTAS = (-0.02, -0.05, -0.10, -0.15)
MARGIN = 0.05
ALPHA = 0.05

Pair = tuple[np.ndarray, np.ndarray]


def binary_pair(rng: np.random.Generator, n: int, delta: float) -> Pair:
    """E[p] = 0.5, so scaling p by (1 + 2 delta) (or 1 - p by 1 - 2 delta) moves the mean by exactly delta."""
    p = rng.beta(2.0, 2.0, n)
    p_cand = p * (1 + 2 * delta) if delta <= 0 else 1 - (1 - p) * (1 - 2 * delta)
    return (rng.random(n) < p).astype(np.float64), (rng.random(n) < p_cand).astype(np.float64)


def continuous_pair(rng: np.random.Generator, n: int, delta: float) -> Pair:
    q = rng.normal(0.6, 0.2, n)
    return q + rng.normal(0.0, 0.1, n), q + delta + rng.normal(0.0, 0.1, n)


Cell = tuple[str, int, float, tuple[float, ...], int, int, int]  # kind, n, delta, margins, reps, n_boot, seed
Counts = Counter[tuple[float, str]]  # (margin, verdict) -> count


def run_cell(kind: str, n: int, delta: float, margins: tuple[float, ...], reps: int, n_boot: int, seed: int) -> Counts:
    """Verdict counts per margin over ``reps`` simulated data sets (each data set judged at every margin)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, kind == "binary", n, round(delta * 1000) + 1000]))
    counts: Counts = Counter()
    for _ in range(reps):
        if kind == "binary":
            first = compare_binary("m", *binary_pair(rng, n, delta), margins[0], ALPHA)
        else:
            base, cand = continuous_pair(rng, n, delta)
            first = compare_continuous("m", base, cand, margins[0], ALPHA, n_boot=n_boot, seed=int(rng.integers(2**62)))
        for margin in margins:  # the same data and resamples judged at another margin: decide() redoes the test from the evidence
            comparison = first if margin == margins[0] else decide([replace(first, margin=margin)], ALPHA)[0]
            counts[(margin, comparison.verdict)] += 1
    return counts


def _cell(cell: Cell) -> tuple[tuple[str, int, float], Counts]:
    return cell[:3], run_cell(*cell)


def pct(count: int, reps: int) -> str:
    return f"{100 * count / reps:.1f}"


def table(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---:|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=2000, help="simulated data sets per cell (default 2000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples per continuous comparison (default 1000)")
    parser.add_argument("--aa-n", type=int, nargs="*", default=[2000, 5000],
                        help="extra n for the binary A/A pass-rate table only (default 2000 5000)")
    args = parser.parse_args()
    started = time.perf_counter()

    cells: list[Cell] = []
    for kind in ("binary", "continuous"):
        for n in NS:
            cells.append((kind, n, 0.0, (MARGIN, 0.0), args.reps, args.n_boot, args.seed))
            cells += [(kind, n, delta, (MARGIN,), args.reps, args.n_boot, args.seed) for delta in DELTAS]
    cells += [("binary", n, 0.0, (MARGIN,), args.reps, args.n_boot, args.seed) for n in args.aa_n]
    cells.sort(key=lambda cell: -cell[1] * (5 if cell[0] == "continuous" else 1))  # longest first
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = dict(pool.map(_cell, cells))

    reps = args.reps

    def share(kind: str, n: int, delta: float, margin: float, verdict: str) -> str:
        return pct(results[(kind, n, delta)][(margin, verdict)], reps)

    kinds = ("binary", "continuous")
    se = [100 * (rate * (1 - rate) / reps) ** 0.5 for rate in (0.05, 0.5)]
    out = [f"reps = {reps} per cell, seed {args.seed}, {args.n_boot} bootstrap resamples per continuous comparison, "
           f"margin {MARGIN}, alpha {ALPHA} (one-sided). Monte-Carlo SE: {se[0]:.1f} points at 5%, {se[1]:.1f} points at 50%.\n"]
    out.append(table("(a) False alarms: % regression verdicts when the true delta is 0",
                     ["n", "binary, m = 0.05", "binary, m = 0 (boundary)", "continuous, m = 0.05", "continuous, m = 0 (boundary)"],
                     [[str(n), *(share(kind, n, 0.0, margin, "regression") for kind in kinds for margin in (MARGIN, 0.0))]
                      for n in NS]))
    for kind in kinds:
        out.append(table(f"(b) {kind}: % regression verdicts by true delta (m = 0.05: -0.02 is inside the margin, "
                         f"-0.05 on it, so those two columns are false-alarm rates)",
                         ["n", *(f"delta = {delta:+.2f}" for delta in DELTAS)],
                         [[str(n), *(share(kind, n, delta, MARGIN, "regression") for delta in DELTAS)] for n in NS]))

    def aa(kind: str, n: int) -> str:
        if (kind, n, 0.0) not in results:
            return "-"
        return f"{share(kind, n, 0.0, MARGIN, 'pass')} ({share(kind, n, 0.0, MARGIN, 'improvement')})"

    out.append(table("(c) A/A: % pass verdicts (m = 0.05) when the true delta is 0; % improvement in brackets",
                     ["n", "binary", "continuous"], [[str(n), aa("binary", n), aa("continuous", n)] for n in (*NS, *args.aa_n)]))
    out.append(table("(d) False passes: % pass verdicts when the candidate is at the margin or worse (m = 0.05)",
                     ["n", *(f"{kind}, delta = {delta:+.2f}" for kind in kinds for delta in (-0.05, -0.10))],
                     [[str(n), *(share(kind, n, delta, MARGIN, "pass") for kind in kinds for delta in (-0.05, -0.10))]
                      for n in NS]))
    print("\n".join(out))
    print(f"_{len(cells)} cells in {time.perf_counter() - started:.0f} s with {args.jobs} worker processes._")


if __name__ == "__main__":
    main()
