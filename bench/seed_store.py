"""Seed a store with a realistic history: variants x suites x scheduled runs, every case result, metric
points, real verdicts (computed by evalsvc.verdicts from the seeded cases), arena battles, alerts, firings.

Used by the dashboard tests (small) and by bench/dashboard_store.py (1M case results). Outcomes are
paired the way real variants are: each case has a difficulty shared by every variant, and a variant
passes a case when the difficulty is under its pass rate (plus a little per-run noise), so quantized
variants disagree with the baseline on few cases and the paired verdicts are what they would be.

    python3 bench/seed_store.py --store sqlite:///demo.db --runs 30 --cases 40   # a store to look at
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from evalsvc import alerts
from evalsvc.config import GateConfig
from evalsvc.identity import content_hash
from evalsvc.stats.aggregate import t_interval, wilson_interval
from evalsvc.store.latest import latest_pairs
from evalsvc.store.schema import BattleRecord, CaseResult, Firing, MetricPoint, Run, Suite, SuiteCase, Variant
from evalsvc.verdicts.compare import compare_runs
from evalsvc.verdicts.record import record

FAMILY = "smollm2"
BASELINE = "smollm2-f16"


@dataclass
class Plan:
    runs: int = 12  # scheduled runs per variant x suite (one a day)
    cases: int = 40  # per suite
    suites: list[str] = field(default_factory=lambda: ["facts", "records", "summaries"])
    rates: dict[str, float] = field(default_factory=lambda: {BASELINE: 0.80, "smollm2-q8_0": 0.79, "smollm2-q4_0": 0.72,
                                                             "smollm2-q2_k": 0.52})
    extra_metrics: int = 1  # continuous metrics per case besides pass (rouge_l, then score_1, score_2, ...)
    battles: int = 200  # arena battles per pair of variants on the first suite
    failing: str | None = "api-upstream"  # an endpoint variant whose newest runs failed
    upstream: str | None = "smollm2-q8_0"  # its newest run on the second suite answered differently
    new_checkpoint: str | None = "smollm2-q4_0"  # re-quantized half way: a new fingerprint
    end: datetime = field(default_factory=lambda: datetime.now(UTC).replace(minute=0, second=0, microsecond=0))
    seed: int = 0


def _metric_names(plan: Plan) -> list[str]:
    return ["rouge_l", *(f"score_{i}" for i in range(1, plan.extra_metrics))]


def seed(engine: Engine, plan: Plan | None = None, chunk: int = 20_000) -> dict[str, int]:
    """Fill an empty store at schema head; returns row counts per table."""
    plan = plan or Plan()
    rng = random.Random(plan.seed)
    variants = list(plan.rates) + ([plan.failing] if plan.failing else [])
    difficulty = {s: [rng.random() for _ in range(plan.cases)] for s in plan.suites}
    extra = _metric_names(plan)
    counts = {"case_results": 0, "metric_points": 0, "runs": 0}
    with Session(engine) as s, s.begin():
        for v in variants:
            for fp in {_fp(plan, v, i) for i in range(plan.runs)}:
                s.add(Variant(fingerprint=fp, name=v, family="api" if v == plan.failing else FAMILY, quantization=None,
                              spec={"name": v}, first_seen=plan.end - timedelta(days=plan.runs)))
        for name in plan.suites:
            s.add(Suite(version=_version(name), name=name, header={"name": name}, n_cases=plan.cases))
            s.flush()
            s.add_all(SuiteCase(suite_version=_version(name), case_id=f"{name}-{i}", position=i,
                                spec={"input": f"question {i} of {name}", "context": f"context of {name} {i}",
                                      "reference": f"answer {i}"}) for i in range(plan.cases))
    run_id = 0
    cases, points, runs = [], [], []
    for v in variants:
        for si, suite in enumerate(plan.suites):
            for i in range(plan.runs):
                run_id += 1
                ts = plan.end - timedelta(days=plan.runs - 1 - i)
                failed = v == plan.failing and i >= plan.runs - 2
                upstream = "outputs changed under an unchanged fingerprint" if (
                    v == plan.upstream and si == 1 and i == plan.runs - 1) else None
                rate = plan.rates.get(v, 0.7)
                run_cases, passes, cont = [], [], {m: [] for m in extra}
                for ci, d in enumerate(difficulty[suite]):
                    if failed:
                        run_cases.append(dict(run_id=run_id, case_id=f"{suite}-{ci}", sample_index=0, run_ts=ts,
                                              status="errored", output=None, error="HTTP 503 from the endpoint",
                                              latency_ms=None, scores=None, cached=False, created_at=ts))
                        continue
                    ok = d + rng.gauss(0, 0.03) < rate
                    scores = {"pass": 1.0 if ok else 0.0}
                    for m in extra:
                        scores[m] = min(1.0, max(0.0, (0.75 if ok else 0.35) + rng.gauss(0, 0.1)))
                        cont[m].append(scores[m])
                    passes.append(scores["pass"])
                    run_cases.append(dict(run_id=run_id, case_id=f"{suite}-{ci}", sample_index=0, run_ts=ts, status="ok",
                                          output=f"{v} answer to {ci}" + ("" if ok else " (wrong)"), error=None,
                                          latency_ms=40 + rng.random() * 20, scores=scores, cached=False, created_at=ts))
                cases.extend(run_cases)
                n_ok = len(passes)
                runs.append(dict(id=run_id, suite_version=_version(suite), suite_name=suite,
                                 variant_fingerprint=_fp(plan, v, i), variant_name=v, slot=ts.strftime("%Y-%m-%dT%H:%MZ"),
                                 status="failed" if failed else "succeeded", created_at=ts, started_at=ts,
                                 finished_at=ts + timedelta(seconds=30 + rng.random() * 60),
                                 error="40/40 cases errored: HTTP 503 from the endpoint" if failed else None,
                                 n_cases=plan.cases, n_ok=n_ok, n_errored=plan.cases - n_ok, attempts=1,
                                 output_hash=None, upstream_change=upstream))
                if n_ok:
                    lo, hi = wilson_interval(sum(passes), n_ok)
                    points.append(_point(run_id, "pass", "binary", sum(passes) / n_ok, n_ok, lo, hi, runs[-1]))
                    for m, vals in cont.items():
                        lo, hi = t_interval(vals)
                        points.append(_point(run_id, m, "continuous", sum(vals) / len(vals), len(vals), lo, hi, runs[-1]))
                if len(cases) >= chunk:
                    counts["case_results"] += _flush(engine, runs, points, cases, counts)
    counts["case_results"] += _flush(engine, runs, points, cases, counts)
    if engine.dialect.name == "postgresql":  # ids were given explicitly: move the sequence past them
        with engine.begin() as conn:
            conn.execute(text("SELECT setval(pg_get_serial_sequence('runs', 'id'), (SELECT max(id) FROM runs))"))
    counts["battles"] = _battles(engine, plan, rng)
    counts["verdicts"] = _verdicts(engine, plan)
    with Session(engine) as s, s.begin():
        s.add(Firing(schedule="nightly", slot=plan.end.strftime("%Y-%m-%dT%H:%MZ"), started_at=plan.end,
                     finished_at=plan.end + timedelta(minutes=9), status="done", runs={}, alerts={}))
    return counts


def _flush(engine: Engine, runs: list, points: list, cases: list, counts: dict[str, int]) -> int:
    n = len(cases)
    with engine.begin() as conn:
        if runs:
            conn.execute(insert(Run), runs)
        if points:
            conn.execute(insert(MetricPoint), points)
        if cases:
            conn.execute(insert(CaseResult), cases)
    counts["runs"] += len(runs)
    counts["metric_points"] += len(points)
    runs.clear()
    points.clear()
    cases.clear()
    return n


def _point(run_id: int, metric: str, kind: str, value: float, n: int, lo, hi, run: dict) -> dict:
    return dict(run_id=run_id, metric=metric, run_ts=run["created_at"], suite_name=run["suite_name"],
                suite_version=run["suite_version"], variant_name=run["variant_name"],
                variant_fingerprint=run["variant_fingerprint"], kind=kind, higher_is_better=True, value=value, n=n,
                ci_low=lo, ci_high=hi)


def _fp(plan: Plan, variant: str, run_index: int) -> str:
    generation = 1 if variant == plan.new_checkpoint and run_index >= plan.runs // 2 else 0
    return content_hash({"variant": variant, "checkpoint": generation})[:32]


def _version(suite: str) -> str:
    return content_hash({"suite": suite})[:32]


def _battles(engine: Engine, plan: Plan, rng: random.Random) -> int:
    """Battles judged by "checks" on the first suite: every pair on the newest checkpoints; the re-quantized variant's
    old checkpoint against the baseline (same name, another fingerprint); and, under the same judge name, an older
    rubric that ranked the variants the other way round (another judge identity: never one leaderboard with these)."""
    names = list(plan.rates)
    rows = []

    def battle(a: str, b: str, k: int, run_index: int, template: str, rates: dict[str, float]) -> None:
        pa, pb = rates[a], rates[b]
        u = rng.random()
        outcome = 1.0 if u < pa * (1 - pb) else 0.0 if u < pa * (1 - pb) + pb * (1 - pa) else 0.5
        verdict = "A" if outcome == 1 else "B" if outcome == 0 else "tie"
        rows.append(dict(suite_name=plan.suites[0], suite_version=_version(plan.suites[0]), case_id=f"b{k}",
                         variant_a=a, fingerprint_a=_fp(plan, a, run_index), variant_b=b, fingerprint_b=_fp(plan, b, run_index),
                         judge_name="checks", judge_fingerprint="checks", template_hash=template, verdict_ab=verdict,
                         verdict_ba=verdict, outcome=outcome, len_a=40, len_b=40, created_at=plan.end))

    reversed_rates = dict(zip(names, reversed(list(plan.rates.values())), strict=True))
    for ai, a in enumerate(names):
        for b in names[ai + 1:]:
            for k in range(plan.battles // 4):
                battle(a, b, k, plan.runs - 1, "checks-v0", reversed_rates)
    if plan.new_checkpoint:
        for k in range(plan.battles // 4):
            battle(names[0], plan.new_checkpoint, k, 0, "checks", plan.rates)
    for ai, a in enumerate(names):
        for b in names[ai + 1:]:
            for k in range(plan.battles):
                battle(a, b, k, plan.runs - 1, "checks", plan.rates)
    if rows:
        with engine.begin() as conn:
            conn.execute(insert(BattleRecord), rows)
    return len(rows)


def _verdicts(engine: Engine, plan: Plan) -> int:
    """Each candidate's newest runs against the baseline's, through the gate's own code; regressions alert."""
    gate = GateConfig(primary=["pass"])
    alerter = alerts.Alerter(engine, {})
    n = 0
    for v in plan.rates:
        if v == BASELINE:
            continue
        with Session(engine) as s:
            pairs = latest_pairs(s, BASELINE, v)
            report = compare_runs(s, gate, BASELINE, v, pairs)
        record(engine, report)
        firing, checked = alerts.regression_conditions(report, "http://127.0.0.1:8501")
        alerter.sync(firing, checked)
        n += len(report.pooled) + len(report.primary) + len(report.secondary)
    if plan.failing:
        firing = [alerts.Condition(f"endpoint:{plan.failing}", "endpoint", f"runs of {plan.failing} are failing",
                                   {"variant": plan.failing, "cause": "HTTP 503 from the endpoint"})]
        alerter.sync(firing, [])
    return n


def main() -> None:
    from evalsvc.store.db import open_engine

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="URL of an empty store (SQLite is created and migrated)")
    ap.add_argument("--runs", type=int, default=Plan.runs)
    ap.add_argument("--cases", type=int, default=Plan.cases)
    args = ap.parse_args()
    print(seed(open_engine(args.store), Plan(runs=args.runs, cases=args.cases)))


if __name__ == "__main__":
    main()
