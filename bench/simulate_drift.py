"""Simulated error rates of evalsvc.drift at its defaults (warm-up 5, 20 looks, alpha 0.05, shift 1 SE).

Prints Markdown (pasted into docs/drift.md):

    OMP_NUM_THREADS=1 python3 bench/simulate_drift.py --reps 50000 --seed 0

Series go through the same vectorised code that `detect` uses (`residuals` then `cusum`);
tests/test_drift.py checks that `detect` gives the same answers one series at a time.
``--table`` instead prints `H_TABLE` for evalsvc/drift.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalsvc.drift import SdMode, cusum, null_max_statistic, residuals, threshold

WARMUP, LOOKS, ALPHA, SHIFT = 5, 20, 0.05, 1.0
CHANGE_LOOK = 8  # a step change first visible at look 8 (point index WARMUP + 7)


def alarms(values: np.ndarray, ns: np.ndarray | float, mode: SdMode, sds: np.ndarray | None = None) -> np.ndarray:
    """First alarm's column per series (-1 none), through the detector's own code."""
    h = threshold(LOOKS, ALPHA, SHIFT)
    first, _, _ = cusum(residuals(values, np.asarray(ns, dtype=float), mode, sds, WARMUP), h, SHIFT / 2, LOOKS)
    return first


def binary(rng: np.random.Generator, reps: int, p: np.ndarray | float, n: np.ndarray | float) -> np.ndarray:
    return rng.binomial(np.asarray(n, dtype=np.int64), p, size=(reps, WARMUP + LOOKS)) / n


def wald_alarms(values: np.ndarray, n: float) -> np.ndarray:
    """The same self-starting CUSUM with the Wald SE sqrt(p0(1-p0)(1/n + 1/N)), p0 guarded by half a pass and half a fail."""
    count = values.shape[1]
    z = np.full(values.shape, np.nan)
    for t in range(WARMUP, count):
        passes, total = values[:, :t].sum(axis=1) * n, n * t
        guarded = (passes + 0.5) / (total + 1)
        z[:, t] = (values[:, t] - passes / total) / np.sqrt(guarded * (1 - guarded) * (1 / n + 1 / total))
    return cusum(z, threshold(LOOKS, ALPHA, SHIFT), SHIFT / 2, LOOKS)[0]


def false_alarms(rng: np.random.Generator, reps: int) -> list[str]:
    lines = ["| pass rate p | n per run | false-alarm rate (Anscombe, shipped) | with the Wald SE instead |", "|---|---|---|---|"]
    for p in (0.5, 0.7, 0.9, 0.97):
        for n in (20, 50, 100, 500):
            values = binary(rng, reps, p, n)
            shipped, wald = np.mean(alarms(values, n, "binary") >= 0), np.mean(wald_alarms(values, n) >= 0)
            lines.append(f"| {p} | {n} | {shipped:.4f} | {wald:.4f} |")
    ns = rng.integers(60, 101, size=(reps, WARMUP + LOOKS))  # errored cases drop a varying share of each run
    lines.append(f"| 0.7 | 60-100, varying | {np.mean(alarms(binary(rng, reps, 0.7, ns), ns, 'binary') >= 0):.4f} | |")
    lines += ["", "| continuous scores (per-case SD 1, n = 100) | false-alarm rate |", "|---|---|"]
    cases: tuple[tuple[str, SdMode, str], ...] = (
        ("per-case sd given (pooled)", "known", "normal"),
        ("sd not given (estimated from the runs' spread)", "estimated", "normal"),
        ("sd given, per-case scores skewed (exponential)", "known", "exponential"),
        ("sd not given, n varying 60-100", "estimated", "varying"),
    )
    for label, mode, dist in cases:
        sizes = ns if dist == "varying" else np.full(1, 100.0)
        if dist == "exponential":
            values = rng.gamma(100.0, 1 / 100.0, size=(reps, WARMUP + LOOKS))  # the mean of 100 Exp(1) scores
        else:
            values = rng.standard_normal((reps, WARMUP + LOOKS)) / np.sqrt(sizes)
        sds = np.ones(1) if mode == "known" else None
        lines.append(f"| {label} | {np.mean(alarms(values, sizes, mode, sds) >= 0):.4f} |")
    return lines


def power_row(first: np.ndarray, change: int) -> tuple[float, float, float]:
    """Detection rate (alarm at or after the change), median runs to the alarm (1 = at the first changed run), early alarms."""
    caught = first >= change
    delays = first[caught] - change + 1
    delay = float(np.median(delays)) if delays.size else float("nan")
    return float(caught.mean()), delay, float(np.mean((first >= 0) & (first < change)))


def detection(rng: np.random.Generator, reps: int) -> list[str]:
    change = WARMUP + CHANGE_LOOK - 1
    lines = [
        f"| drop in pass rate (0.70 before) | n per run | detected by look {LOOKS} | median runs to alarm | alarm before the change |",
        "|---|---|---|---|---|",
    ]
    for drop in (0.02, 0.05, 0.10):
        for n in (50, 100, 500):
            p = np.full(WARMUP + LOOKS, 0.7)
            p[change:] -= drop
            caught, delay, early = power_row(alarms(binary(rng, reps, p, n), n, "binary"), change)
            lines.append(f"| {drop:.2f} | {n} | {caught:.3f} | {delay:g} | {early:.3f} |")
    lines += ["", "| continuous: drop in per-case SDs (n = 100) | sd given | sd estimated from the runs |", "|---|---|---|"]
    for drop in (0.1, 0.2, 0.3):
        cells = []
        modes: tuple[SdMode, ...] = ("known", "estimated")
        for mode in modes:
            values = rng.standard_normal((reps, WARMUP + LOOKS)) / 10.0
            values[:, change:] -= drop
            caught, delay, _ = power_row(alarms(values, 100.0, mode, np.ones(1) if mode == "known" else None), change)
            cells.append(f"{caught:.3f} (median {delay:g} runs)")
        lines.append(f"| {drop} | {cells[0]} | {cells[1]} |")
    return lines


def designs(rng: np.random.Generator, reps: int) -> list[str]:
    """Self-starting reference (shipped) against a reference frozen after the warm-up, normal theory, SE known."""
    k = SHIFT / 2
    null = rng.standard_normal((reps, WARMUP + LOOKS))
    frozen_null = null[:, WARMUP:] - null[:, :WARMUP].mean(axis=1, keepdims=True)
    h_frozen = float(np.quantile(np.max(_paths(frozen_null, k), axis=1), 1 - ALPHA))
    h_self = threshold(LOOKS, ALPHA, SHIFT)
    lines = [
        f"Frozen reference: h = {h_frozen:.2f} (calibrated here, warm-up estimation error included); self-starting: h = {h_self:.2f}.",
        "",
        "| step (run SEs) | change at look | frozen reference: detected, median runs | self-starting: detected, median runs |",
        "|---|---|---|---|",
    ]
    for step in (1.0, 2.2):
        for look in (1, 8, 15):
            change = WARMUP + look - 1
            x = rng.standard_normal((reps, WARMUP + LOOKS))
            x[:, change:] -= step
            frozen = np.where(_paths(x[:, WARMUP:] - x[:, :WARMUP].mean(axis=1, keepdims=True), k) > h_frozen, 1, 0)
            first_frozen = np.where(frozen.any(axis=1), frozen.argmax(axis=1) + WARMUP, -1)
            cells = []
            for first in (first_frozen, alarms(x / 10.0, 100.0, "known", np.ones(1))):
                caught, delay, _ = power_row(first, change)
                cells.append(f"{caught:.3f}, {delay:g}")
            lines.append(f"| {step} | {look} | {cells[0]} | {cells[1]} |")
    return lines


FAMILY = 50  # series watched together (Holm across them)


def fixed_cases(rng: np.random.Generator, series: int, drop_at: int | None = None) -> np.ndarray:
    """Pass rates of series that re-run one fixed set of 100 cases on a nondeterministic server: per series, 60 cases
    always pass, 20 always fail and 20 pass with their own probability (uniform on 0.2-0.8), drawn afresh each run.
    From ``drop_at`` on, 10 of the always-passing cases fail (a 10-point drop)."""
    p = rng.uniform(0.2, 0.8, size=(series, 1, 20))
    uncertain = (rng.random((series, WARMUP + LOOKS, 20)) < p).sum(axis=2)
    passes = 60 + uncertain.astype(float)
    if drop_at is not None:
        passes[:, drop_at:] -= 10
    return passes / 100.0


def families(rng: np.random.Generator, reps: int) -> list[str]:
    """Any false alarm across a family of 50 fixed-case series, and the delay to catch a 10-point drop in one of them."""
    fams = max(reps // FAMILY, 200)
    change = WARMUP + CHANGE_LOOK - 1
    lines = [f"| noise model | level per series | any false alarm in {LOOKS} looks across {FAMILY} series | "
             f"10-point drop (n = 100) in one of them: detected by look {LOOKS}, median runs to alarm |", "|---|---|---|---|"]
    null = fixed_cases(rng, fams * FAMILY)
    shifted = fixed_cases(rng, fams, drop_at=change)
    for label, mode in (("binomial (Anscombe; shipped)", "binary"), ("the series' own spread", "estimated")):
        for level_label, level in (("alpha (no correction)", ALPHA), (f"alpha / {FAMILY} (Holm's first step)", ALPHA / FAMILY)):
            h = threshold(LOOKS, level, SHIFT)

            def first(values: np.ndarray, mode: str = mode, h: float = h) -> np.ndarray:
                return cusum(residuals(values, np.full(1, 100.0), mode, None, WARMUP), h, SHIFT / 2, LOOKS)[0]  # type: ignore[arg-type]

            any_false = np.mean((first(null) >= 0).reshape(fams, FAMILY).any(axis=1))
            caught, delay, _ = power_row(first(shifted), change)
            lines.append(f"| {label} | {level_label} | {any_false:.3f} | {caught:.3f}, {delay:g} |")
    return lines


def _paths(z: np.ndarray, k: float) -> np.ndarray:
    up = np.zeros(z.shape[0])
    down = np.zeros(z.shape[0])
    out = np.empty(z.shape)
    for t in range(z.shape[1]):
        up = np.maximum(0.0, up + z[:, t] - k)
        down = np.maximum(0.0, down - z[:, t] - k)
        out[:, t] = np.maximum(up, down)
    return out


def table(reps: int, seed: int) -> None:
    print("H_TABLE: dict[tuple[int, float], dict[float, float]] = {")
    for looks in (10, 20, 30, 50):
        for shift in (0.5, 1.0, 1.5, 2.0):
            top = null_max_statistic(looks, shift, sd="known", warmup=5, reps=reps, seed=seed)
            hs = ", ".join(f"{alpha}: {np.quantile(top, 1 - alpha):.3f}" for alpha in (0.01, 0.05, 0.1))
            print(f"    ({looks}, {shift}): {{{hs}}},", flush=True)
    print("}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=50_000, help="simulated series per cell (default 50000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", action="store_true", help="print H_TABLE instead (use --reps 4000000 --seed 1)")
    args = parser.parse_args()
    if args.table:
        table(args.reps, args.seed)
        return
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    se = np.sqrt(0.05 * 0.95 / args.reps)
    print(f"Defaults: warm-up {WARMUP}, {LOOKS} looks, alpha {ALPHA}, shift {SHIFT} SE, h = {threshold(LOOKS, ALPHA, SHIFT):.3f}; "
          f"{args.reps} series per cell, seed {args.seed}. Monte-Carlo SE of a rate near 0.05: {se:.4f}.")
    print(f"\n### False alarms: share of in-control series with any alarm in {LOOKS} looks (target <= {ALPHA})\n")
    print("\n".join(false_alarms(rng, args.reps)))
    print(f"\n### Detection: step drop first visible at look {CHANGE_LOOK}, {LOOKS - CHANGE_LOOK + 1} looks to catch it\n")
    print("\n".join(detection(rng, args.reps)))
    print(f"\n### Many series of fixed cases: {FAMILY} watched together, nondeterministic server\n")
    print("\n".join(families(rng, args.reps)))
    print("\n### Design choice: reference frozen after the warm-up vs self-starting (normal theory)\n")
    print("\n".join(designs(rng, args.reps)))
    print(f"\n_{time.perf_counter() - started:.0f} s_")


if __name__ == "__main__":
    main()
