"""Simulated error rates of evalsvc.stats.drift at its defaults (warm-up 5, 20 looks, alpha 0.05, shift 1 SE).

Prints Markdown (pasted into docs/drift.md):

    OMP_NUM_THREADS=1 python3 bench/simulate_drift.py --reps 50000 --seed 0
    OMP_NUM_THREADS=1 python3 bench/simulate_drift.py --continuous --reps 50000 --seed 0   # that table alone

Series go through the same vectorised code that `detect` uses (`residuals` then `cusum`);
tests/test_drift.py checks that `detect` gives the same answers one series at a time.
``--table`` instead prints `H_TABLE` for evalsvc/stats/drift.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evalsvc.stats.drift import SdMode, case_variances, cusum, design_effects, null_max_statistic, residuals, threshold

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


FAMILY = 50  # series watched together (a family: each at alpha / 50)


def fixed_cases(rng: np.random.Generator, series: int, drop_at: int | None = None, mix: str = "60/20/20") -> np.ndarray:
    """Per-case passes, shaped (series, runs, n), of series that re-run one fixed case set on a nondeterministic
    server; each case passes with its own probability, drawn afresh each run. Mixes (n = 100 unless named):

    - "60/20/20": 60 cases always pass, 20 always fail, 20 pass with probability uniform on 0.2-0.8 (per series);
    - "half": 25 always pass, 25 always fail, 50 uniform on 0.2-0.8;
    - "rare": every case is 0.97 or 0.03 (70% / 30%): rare flips everywhere;
    - "near-deterministic": 70 pass, 27 fail, 3 at 0.5;
    - "iid 0.7" and "iid 0.9": every case at that rate, as if drawn afresh (the binomial's own setting; the worst case);
    - any mix followed by " n=20": 20 cases instead of 100, in the same proportions.

    From ``drop_at`` on, the 10% of cases most likely to pass fail (a 10-point drop)."""
    name, _, size = mix.partition(" n=")
    n = int(size or 100)

    def fixed(share: float, rate: float) -> np.ndarray:
        return np.full((series, int(n * share)), rate)

    if name == "60/20/20":
        p = np.concatenate([fixed(0.6, 1.0), fixed(0.2, 0.0), rng.uniform(0.2, 0.8, (series, n // 5))], axis=1)
    elif name == "half":
        p = np.concatenate([fixed(0.25, 1.0), fixed(0.25, 0.0), rng.uniform(0.2, 0.8, (series, n // 2))], axis=1)
    elif name == "rare":
        p = np.where(rng.random((series, n)) < 0.7, 0.97, 0.03)
    elif name == "near-deterministic":
        k = max(1, n * 3 // 100)
        p = np.concatenate([fixed(0.7, 1.0), np.zeros((series, n - int(n * 0.7) - k)), np.full((series, k), 0.5)], axis=1)
    else:
        p = np.full((series, n), float(name.removeprefix("iid ")))
    passes = (rng.random((series, WARMUP + LOOKS, n)) < p[:, None, :]).astype(float)
    if drop_at is not None:
        top = np.argsort(-p, axis=1, kind="stable")[:, : n // 10]
        rows = np.arange(series)[:, None]
        passes[rows, drop_at:, top] = 0.0  # fancy indexing puts the run axis last: (series, cases, runs)
    return passes


def family_false_alarms(rng: np.random.Generator, fams: int, model: str, level: float, mix: str = "60/20/20") -> float:
    """Share of families of FAMILY unchanged series with any alarm, generated 200 families at a time (memory)."""
    hits = 0
    for lo in range(0, fams, 200):
        chunk = min(200, fams - lo)
        fired = first_alarms(fixed_cases(rng, chunk * FAMILY, mix=mix), model, level) >= 0
        hits += int(fired.reshape(chunk, FAMILY).any(axis=1).sum())
    return hits / fams


def first_alarms(passes: np.ndarray, model: str, level: float) -> np.ndarray:
    """First alarm per series (-1 none) of the detector's own code under one noise model, in chunks of 10,000 series."""
    h = threshold(LOOKS, level, SHIFT)
    out = []
    for lo in range(0, passes.shape[0], 10_000):
        chunk = passes[lo:lo + 10_000]
        n = float(chunk.shape[2])
        rates = chunk.mean(axis=2)
        mode = "estimated" if model == "own spread" else "binary"
        design = design_effects(chunk, WARMUP) if model == "cases" else None
        out.append(cusum(residuals(rates, np.full(1, n), mode, None, WARMUP, design), h, SHIFT / 2, LOOKS)[0])  # type: ignore[arg-type]
    return np.concatenate(out)


MODELS = (("binomial bound (Anscombe)", "binomial"), ("the series' own spread", "own spread"),
          ("fixed cases: design effect (shipped)", "cases"))


def families(rng: np.random.Generator, reps: int) -> list[str]:
    """Any false alarm across a family of 50 fixed-case series, and the delay to catch a 10-point drop in one of them."""
    fams = max(reps // FAMILY, 200)
    change = WARMUP + CHANGE_LOOK - 1
    lines = [f"| noise model | level per series | any false alarm in {LOOKS} looks across {FAMILY} series | "
             f"10-point drop (n = 100) in one of them: detected by look {LOOKS}, median runs to alarm |", "|---|---|---|---|"]
    shifted = fixed_cases(rng, fams, drop_at=change)
    for label, model in MODELS:
        for level_label, level in (("alpha (no correction)", ALPHA), (f"alpha / {FAMILY} (a family of {FAMILY})", ALPHA / FAMILY)):
            any_false = family_false_alarms(rng, fams, model, level)
            caught, delay, _ = power_row(first_alarms(shifted, model, level), change)
            lines.append(f"| {label} | {level_label} | {any_false:.3f} | {caught:.3f}, {delay:g} |")
    return lines


def case_mixes(rng: np.random.Generator, reps: int) -> list[str]:
    """The design effect against the binomial bound across case mixes: false alarms alone and across 50, and delay."""
    fams = max(reps // (5 * FAMILY), 200)
    change = WARMUP + CHANGE_LOOK - 1
    lines = [f"| case mix | n | false alarms, one series at alpha: bound / design effect | any false alarm across {FAMILY} "
             f"at alpha / {FAMILY}: bound / design effect | 10-point drop at alpha / {FAMILY}: detected, median runs: bound / "
             "design effect |",
             "|---|---|---|---|---|"]
    for mix in ("iid 0.7", "iid 0.9", "half", "60/20/20", "rare", "near-deterministic"):
        for size in (100, 20):
            named = f"{mix} n={size}"
            single = fixed_cases(rng, fams * 5, mix=named)
            shifted = fixed_cases(rng, max(fams, 1000), drop_at=change, mix=named)
            cells: list[list[str]] = [[], [], []]
            for model in ("binomial", "cases"):
                cells[0].append(f"{np.mean(first_alarms(single, model, ALPHA) >= 0):.3f}")
                cells[1].append(f"{family_false_alarms(rng, fams, model, ALPHA / FAMILY, named):.3f}")
                caught, delay, _ = power_row(first_alarms(shifted, model, ALPHA / FAMILY), change)
                cells[2].append(f"{caught:.2f}, {delay:g}")
            lines.append(f"| {mix} | {size} | " + " | ".join(" / ".join(c) for c in cells) + " |")
    return lines


SCORE_MIXES = {  # n fixed cases: the SD of the cases' own levels, and each case's run-to-run noise SD
    "levels 0.2, noise 0.02 every case": (0.2, lambda n: np.full(n, 0.02)),
    "levels 0.2, noise 0 or 0.04 (half each)": (0.2, lambda n: np.where(np.arange(n) < n // 2, 0.0, 0.04)),
    "levels 0.2, noise 0.05 on 5% (near-deterministic)": (0.2, lambda n: np.where(np.arange(n) < max(n // 20, 1), 0.05, 0.0)),
    "fresh draws: levels 0, noise 0.2": (0.0, lambda n: np.full(n, 0.2)),
}
SCORE_MODELS = (("fresh draws (per-case SD; before)", "fresh"), ("the runs' own spread", "own spread"),
                ("fixed cases (shipped)", "cases"))


def score_alarms(rng: np.random.Generator, series: int, mix: str, n: int, model: str, level: float,
                 drop: float = 0.0) -> np.ndarray:
    """First alarm per series (-1 none) of a continuous score over n fixed cases re-scored every run, through the
    detector's own code; from look CHANGE_LOOK on every case loses ``drop`` run-mean SDs (of the fixed-case noise)."""
    h = threshold(LOOKS, level, SHIFT)
    spread, noise_of = SCORE_MIXES[mix]
    noise = noise_of(n)
    run_sd = np.sqrt(np.sum(noise**2)) / n
    out = []
    for lo in range(0, series, 2000):
        rows = min(2000, series - lo)
        cases = rng.normal(0.5, spread, (rows, 1, n)) + rng.standard_normal((rows, WARMUP + LOOKS, n)) * noise
        cases[:, WARMUP + CHANGE_LOOK - 1:, :] -= drop * run_sd
        values, sds = cases.mean(axis=2), cases.std(axis=2, ddof=1)
        if model == "own spread":
            z = residuals(values, np.full(1, float(n)), "estimated", None, WARMUP)
        else:
            design, dof = case_variances(cases, WARMUP) if model == "cases" else (None, None)
            z = residuals(values, np.full(1, float(n)), "known", sds, WARMUP, design, dof)
        out.append(cusum(z, h, SHIFT / 2, LOOKS)[0])
    return np.concatenate(out)


def continuous_fixed(rng: np.random.Generator, reps: int) -> list[str]:
    """Continuous scores over fixed cases: false alarms alone and across a family of 50, and a drop of 3 run SDs."""
    fams = max(reps // (10 * FAMILY), 100)
    change = WARMUP + CHANGE_LOOK - 1
    lines = [f"| cases | n | noise model | false alarms, one series at alpha | any "
             f"false alarm across {FAMILY} at alpha / {FAMILY} | drop of 3 run SDs at alpha / {FAMILY}: detected by "
             f"look {LOOKS}, median runs |", "|---|---|---|---|---|---|"]
    for mix in SCORE_MIXES:
        for n in (100, 20):
            for label, model in SCORE_MODELS:
                single = np.mean(score_alarms(rng, fams * 10, mix, n, model, ALPHA) >= 0)
                family = np.mean((score_alarms(rng, fams * FAMILY, mix, n, model, ALPHA / FAMILY) >= 0)
                                 .reshape(fams, FAMILY).any(axis=1))
                caught, delay, _ = power_row(score_alarms(rng, fams * 10, mix, n, model, ALPHA / FAMILY, drop=3.0), change)
                lines.append(f"| {mix} | {n} | {label} | {single:.3f} | {family:.3f} | {caught:.2f}, {delay:g} |")
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
    parser.add_argument("--continuous", action="store_true", help="print only the continuous fixed-case table")
    args = parser.parse_args()
    if args.table:
        table(args.reps, args.seed)
        return
    rng = np.random.default_rng(args.seed)
    if args.continuous:
        started = time.perf_counter()
        print(f"{max(args.reps // (10 * FAMILY), 100)} families of {FAMILY} and {10 * max(args.reps // (10 * FAMILY), 100)} "
              f"single series per row, seed {args.seed}\n")
        print("\n".join(continuous_fixed(rng, args.reps)))
        print(f"\n_{time.perf_counter() - started:.0f} s_")
        return
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
    print(f"\n### The fixed-case noise model across case mixes ({max(args.reps // (5 * FAMILY), 200)} families of {FAMILY})\n")
    print("\n".join(case_mixes(rng, args.reps)))
    print(f"\n### Continuous scores over fixed cases ({max(args.reps // (10 * FAMILY), 100)} families of {FAMILY})\n")
    print("\n".join(continuous_fixed(rng, args.reps)))
    print("\n### Design choice: reference frozen after the warm-up vs self-starting (normal theory)\n")
    print("\n".join(designs(rng, args.reps)))
    print(f"\n_{time.perf_counter() - started:.0f} s_")


if __name__ == "__main__":
    main()
