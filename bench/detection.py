"""Detection on the real local variants: the gate's verdict for each of Q8_0, Q4_0 and Q2_K against F16.

    bash scripts/run-local.sh          # first: every bundled suite x the four variants (resumable, cached)
    python3 bench/detection.py         # then: the gate's statistics over that store, no requests

Reads evalsvc.yaml and its store, pairs each candidate's newest succeeded runs with the baseline's on every
suite (what `evalsvc gate --no-run` does), and prints the pooled primary verdict and each suite's pass-rate
delta with its interval, flips and verdict. With no baseline in the config it uses the first variant.
docs/performance.md records the figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evalsvc import suites as suites_mod  # noqa: E402
from evalsvc.config import load_config  # noqa: E402
from evalsvc.store.db import open_engine  # noqa: E402
from evalsvc.verdicts.compare import compare  # noqa: E402


def interval(c) -> str:
    return f"{c.delta:+.3f} [{c.ci_low:+.3f}, {c.ci_high:+.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--config", default="evalsvc.yaml")
    ap.add_argument("--metric", default="pass", help="the per-suite metric to tabulate")
    args = ap.parse_args()
    cfg = load_config(args.config)
    engine = open_engine(cfg.store_url())
    chosen = suites_mod.resolve(cfg.suites_dir, cfg.suites)
    baseline = next(iter(cfg.baselines.values()), cfg.variants[0].name)
    candidates = [v.name for v in cfg.variants if v.name != baseline]
    margins = {k: m.model_dump(exclude_none=True) for k, m in cfg.gate.margins.items()}
    print(f"baseline {baseline}; margins {margins}; alpha {cfg.gate.alpha}\n")
    print("| candidate | verdict | pooled " + " | pooled ".join(cfg.gate.primary) + " (Δ [CI], n) | flips down/up |")
    print("|---|---|" + "---|" * len(cfg.gate.primary) + "---|")
    reports = [compare(engine, cfg, chosen, baseline, cand) for cand in candidates]
    for r in reports:
        cells = [f"{interval(c)}, n={c.n}" for _, c in r.pooled]
        down = sum(1 for f in r.flips if f.direction == "down")
        print(f"| {r.candidate} | **{r.verdict}** | " + " | ".join(cells) + f" | {down}/{len(r.flips) - down} |")
    print(f"\nPer suite, metric `{args.metric}` (Δ [CI], n, verdict; primary metrics as each suite decides them, "
          "Holm across suites; others Holm-adjusted among themselves):\n")
    print("| suite | " + " | ".join(r.candidate for r in reports) + " |\n|---|" + "---|" * len(reports))
    for suite in chosen:
        cells = []
        for r in reports:
            c = next((c for name, c in [*r.primary, *r.secondary] if name == suite.name and c.metric == args.metric), None)
            cells.append(f"{interval(c)} n={c.n} {c.verdict}" if c else "-")
        print(f"| {suite.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
