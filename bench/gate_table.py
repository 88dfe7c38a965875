"""README's gate table, measured: every candidate against F16 on the bundled suites, fresh and timed, plus an A/A row.

    python bench/gate_table.py [--models models] [--out /tmp/gate-table]

Each row is `evalsvc gate` in a fresh project on the bundled SmolLM2 variants (llama.cpp, 2 threads,
concurrency 2), with the response cache off so every answer is requested and timed. The A/A row gates
F16 against itself at temperature 0.8 (seed 0; the gate's second run offsets the seeds): two independent
fresh draws, the honest noise floor. Prints the Markdown rows and writes each gate's JSON under --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from evalsvc.local_models import starter_config

ROOT = Path(__file__).resolve().parent.parent


def project(folder: Path, models: Path, quants: list[str], sampled: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "evalsvc.db").unlink(missing_ok=True)
    cfg = starter_config(str(models.resolve()), quants).replace("suites_dir: suites", f"suites_dir: {ROOT / 'suites'}")
    cfg = cfg.replace("    local: {model_path:", "    cache: false\n    local: {model_path:")
    if sampled:
        cfg = cfg.replace("generation: {temperature: 0.0, max_tokens: 64, seed: 0}",
                          "generation: {temperature: 0.8, max_tokens: 64, seed: 0}")
    (folder / "evalsvc.yaml").write_text(cfg)
    return folder


def gate(folder: Path, candidate: str, extra: tuple[str, ...] = ()) -> tuple[dict, float]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "evalsvc.cli", "gate", "-c", str(folder / "evalsvc.yaml"), "--candidate", candidate,
                    "--baseline", "smollm2-f16", "--no-progress", "--json", str(folder / "gate.json"), *extra],
                   cwd=folder, capture_output=True, text=True, check=False)
    return json.loads((folder / "gate.json").read_text()), time.perf_counter() - start


def row(label: str, report: dict) -> str:
    rows = report["comparisons"]
    suites = [r for r in rows if r["role"] in ("veto", "decides") and r["scope"] != "all suites" and r["metric"] == "pass"]
    regressed = [f"`{r['scope']}` {r['delta']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" for r in suites
                 if r["verdict"] == "regression"]
    worse = report["decision"]["shown_worse"]
    vetoes = (f"regression: {'; '.join(regressed)}" if regressed else
              f"shown worse: {', '.join(worse)}" if worse else f"none of {len(suites)} (no suite shown worse)")
    pooled = next(r for r in rows if r["scope"] == "all suites" and r["metric"] == "pass" and r["role"] in ("decides", "summary"))
    speed = {r["metric"]: r for r in rows if r["role"] == "speed" and r["scope"] == "all suites"}
    rate = speed.get("tokens_per_s")
    p95 = speed.get("latency_p95")
    ratio = f"{rate['candidate_mean'] / rate['baseline_mean']:.2f}×" if rate else "n/a"
    p95s = f"{p95['baseline_mean']:.2f} → {p95['candidate_mean']:.2f} s" if p95 else "n/a"
    return (f"| {label} | {pooled['delta']:+.3f} [{pooled['ci_low']:+.3f}, {pooled['ci_high']:+.3f}] {pooled['verdict']} | "
            f"{vetoes} | {pooled['flips_down']} / {pooled['flips_up']} | {ratio} | {p95s} | {report['verdict']} | "
            f"{report['exit_code']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--out", type=Path, default=Path("/tmp/gate-table"))
    parser.add_argument("--sequential", action="store_true", help="gate with --sequential (5 looks, O'Brien-Fleming, "
                        "seed 1) and print the cases each verdict asked")
    parser.add_argument("--only", nargs="+", choices=["Q8_0", "Q4_0", "Q2_K", "F16"], help="with --sequential: these rows")
    args = parser.parse_args()
    if args.sequential:
        return sequential(args)
    print("| candidate vs F16 | pooled Δ pass [90% CI] (decides) | suite vetoes | flips ↓/↑ | tokens/s ratio | "
          "p95 latency | verdict | exit |")
    print("|---|---|---|---|---|---|---|---|")
    for quant, label, sampled in (("Q8_0", "Q8_0", False), ("Q4_0", "Q4_0", False), ("Q2_K", "Q2_K", False),
                                  ("F16", "F16 vs itself (A/A, temperature 0.8, distinct seeds)", True)):
        quants = ["F16"] if quant == "F16" else ["F16", quant]
        folder = project(args.out / quant.lower(), args.models, quants, sampled)
        report, seconds = gate(folder, f"smollm2-{quant.lower()}")
        print(row(label, report), f"<!-- {seconds:.0f} s -->", flush=True)


def sequential(args: argparse.Namespace) -> None:
    print("| candidate vs F16 | sequential verdict | exit | cases asked (of all) | stopped at look | requests saved |")
    print("|---|---|---|---|---|---|")
    for quant, label, sampled in (("Q8_0", "Q8_0", False), ("Q4_0", "Q4_0", False), ("Q2_K", "Q2_K", False),
                                  ("F16", "F16 vs itself (A/A, temperature 0.8)", True)):
        if args.only and quant not in args.only:
            continue
        quants = ["F16"] if quant == "F16" else ["F16", quant]
        folder = project(args.out / f"seq-{quant.lower()}", args.models, quants, sampled)
        report, seconds = gate(folder, f"smollm2-{quant.lower()}", ("--sequential", "--seed", "1"))
        seq = report.get("sequential") or {}
        looks = seq.get("looks") or [{}]
        print(f"| {label} | {report['verdict']} | {report['exit_code']} | {seq.get('cases_asked')} of {seq.get('cases_total')} "
              f"| {looks[-1].get('look')} of {len(seq.get('planned_looks') or [])} | {seq.get('requests_saved')} |",
              f"<!-- {seconds:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
