"""The gate's decision rule simulated where the truth is known: pooled (the whole decides, every suite can veto)
against every_suite (each suite must pass alone), on pass/fail suites of the sizes teams have.

Each case is a paired outcome: with probability psi/2 it flips down and psi/2 up by noise alone (psi: the
discordance of a nondeterministic server at no change), and with probability |delta_s| it is a real loss, so suite
s's true delta is exactly delta_s. The comparisons are the gate's own (``compare_binary``, Tango's interval) and the
verdict is ``verdicts.decision.decide_gate``, as ``evalsvc gate`` decides. Margin m = 0.05, one-sided alpha 0.05.

Three tables:
1. False pass at a true pooled delta of -m: suites of equal and unequal size, the loss spread evenly or concentrated in
   one suite (the claim "pooled non-inferior" is false, so a pass is an error whatever the suites show).
2. Pass rate (power) at delta = 0 and -m/2 in every suite, by total n and number of suites.
3. A loss concentrated in one small suite inside unchanged ones: how many of its cases must flip down before the pass
   is blocked (and before the gate calls a regression).

    OMP_NUM_THREADS=1 python3 bench/simulate_decision.py --reps 2000 --seed 1
"""

from __future__ import annotations

import argparse
import time
import zlib
from collections import Counter
from collections.abc import Sequence

import numpy as np
from simulate_gate_exits import paired  # the same paired draws as the one-suite table (run from bench/'s folder)

from evalsvc.config import GateConfig
from evalsvc.stats.binary import compare_binary
from evalsvc.verdicts.decision import decide_gate

MARGIN, ALPHA = 0.05, 0.05
RULES = ("pooled", "every_suite")


def verdict(suites: Sequence[tuple[np.ndarray, np.ndarray]], gate: GateConfig) -> str:
    rows = [(f"s{i}", compare_binary("pass", b, c, MARGIN, ALPHA)) for i, (b, c) in enumerate(suites)]
    pooled = [("all suites", compare_binary("pass", np.concatenate([b for b, _ in suites]),
                                            np.concatenate([c for _, c in suites]), MARGIN, ALPHA))]
    return decide_gate(pooled, rows, [], gate)[3].verdict


def _rng(seed: int, *cell: object) -> np.random.Generator:
    """The same draws for both rules of a cell, so their difference is the rule's alone."""
    return np.random.default_rng([seed, zlib.crc32(repr(cell).encode())])


def shares(seed: int, sizes: Sequence[int], deltas: Sequence[float], psi: float, reps: int,
           rule: str) -> dict[str, float]:
    gate = GateConfig(alpha=ALPHA, decide=rule)
    rng = _rng(seed, sizes, deltas, psi)
    counts: Counter[str] = Counter()
    for _ in range(reps):
        v = verdict([paired(rng, n, psi, d) for n, d in zip(sizes, deltas, strict=True)], gate)
        counts["pass" if v == "improvement" else v] += 1
    return {k: 100 * counts[k] / reps for k in ("pass", "regression", "inconclusive")}


def concentrated(seed: int, small: int, others: Sequence[int], lost: int, psi: float, reps: int,
                 rule: str) -> dict[str, float]:
    """``lost`` of the small suite's cases flip down for real (the others and the rest of it: noise only)."""
    gate = GateConfig(alpha=ALPHA, decide=rule)
    rng = _rng(seed, small, others, lost, psi)
    counts: Counter[str] = Counter()
    for _ in range(reps):
        b, c = paired(rng, small, psi, 0.0)
        hit = rng.choice(small, size=lost, replace=False)
        b[hit], c[hit] = 1.0, 0.0
        v = verdict([(b, c), *(paired(rng, n, psi, 0.0) for n in others)], gate)
        counts["pass" if v == "improvement" else v] += 1
    return {k: 100 * counts[k] / reps for k in ("pass", "regression", "inconclusive")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    started = time.perf_counter()
    se = 100 * (0.05 * 0.95 / args.reps) ** 0.5
    print(f"reps = {args.reps} per cell, seed {args.seed}; margin {MARGIN}, one-sided alpha {ALPHA}; Monte-Carlo SE "
          f"{se:.1f} points at 5%. Cells: pass / regression / inconclusive, %.\n")

    print("1. False pass at a true pooled Δ of −m (psi = 10%)\n")
    print("| suites (cases) | where the loss is | pooled rule | every_suite |")
    print("|---|---|---|---|")
    for sizes, where in (((40, 40, 40, 40), "spread"), ((12, 24, 48, 76), "spread"), ((12, 24, 48, 76), "all in the 48"),
                         ((12, 24, 48, 76), "all in the 76"), ((250, 250, 250, 250), "spread"),
                         ((12, 24, 48, 916), "all in the 916")):
        total = sum(sizes)
        if where == "spread":
            deltas = [-MARGIN] * len(sizes)
        else:
            target = int(where.rsplit(" ", 1)[1])
            deltas = [-MARGIN * total / n if n == target else 0.0 for n in sizes]
        cells = [shares(args.seed, sizes, deltas, 0.10, args.reps, rule) for rule in RULES]
        label = " + ".join(map(str, sizes))
        print(f"| {label} | {where} | " + " | ".join(f"{c['pass']:.1f} / {c['regression']:.1f} / {c['inconclusive']:.1f}"
                                                  for c in cells) + " |")

    print("\n2. Pass rate where nothing or half the margin was lost in every suite\n")
    print("| total n | suites | discordance | true Δ | pooled rule: pass | every_suite: pass |")
    print("|---:|---:|---:|---:|---:|---:|")
    for total in (160, 400, 1000):
        for k in (1, 4, 10):
            for psi in (0.02, 0.10):
                for delta, label in ((0.0, "0"), (-MARGIN / 2, "−m/2")):
                    sizes = [total // k] * k
                    cells = [shares(args.seed, sizes, [delta] * k, psi, args.reps, rule) for rule in RULES]
                    print(f"| {total} | {k} | {psi:.0%} | {label} | {cells[0]['pass']:.1f} | {cells[1]['pass']:.1f} |")

    print("\n3. A loss in one small suite inside unchanged ones (psi = 2%): cases of it that flipped down\n")
    print("| small suite | other suites | flipped down | pooled rule | every_suite |")
    print("|---:|---|---:|---|---|")
    for small, others in ((12, (140,)), (15, (140,)), (24, (300,))):
        for lost in sorted({1, 2, 3, 4, 5, 7, small // 2, small}):
            cells = [concentrated(args.seed, small, others, lost, 0.02, args.reps, rule) for rule in RULES]
            print(f"| {small} | {' + '.join(map(str, others))} | {lost} | "
                  + " | ".join(f"{c['pass']:.1f} / {c['regression']:.1f} / {c['inconclusive']:.1f}" for c in cells) + " |")
    print(f"\n_{time.perf_counter() - started:.0f} s_")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
