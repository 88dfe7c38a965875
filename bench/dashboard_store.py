"""Dashboard query latency on a big store: seeds ~1M case results and ~100k metric points, then times
every query each dashboard page makes (no Streamlit cache: what a first visit, or a TTL expiry, costs).

    python3 bench/dashboard_store.py                 # SQLite in a temp folder
    python3 bench/dashboard_store.py --postgres      # also a throw-away PostgreSQL (needs its binaries)
    python3 bench/dashboard_store.py --postgres --no-sqlite
    python3 bench/dashboard_store.py --runs 40       # a smaller store (~100k case results)

Prints the seeding time and ingest rate, then a Markdown table: page, query, median of 5 (ms).
docs/dashboard.md records the figures.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.seed_store import BASELINE, FAMILY, Plan, seed  # noqa: E402
from evalsvc.config import GateConfig  # noqa: E402
from evalsvc.dashboard import queries as q  # noqa: E402
from evalsvc.store.db import open_engine, upgrade  # noqa: E402
from evalsvc.store.readonly import open_readonly  # noqa: E402
from evalsvc.store.schema import utcnow  # noqa: E402

RATES = {BASELINE: 0.80, "smollm2-q8_0": 0.79, "smollm2-q6_k": 0.78, "smollm2-q5_k": 0.77, "smollm2-q4_0": 0.72,
         "smollm2-q3_k": 0.65, "smollm2-q2_k": 0.52}
SUITES = ["facts", "arithmetic", "extraction", "records", "summaries", "harness"]


def plan(runs: int) -> Plan:
    # 8 variants (7 + a failing endpoint) x 6 suites x runs x 50 cases; 5 metrics per run
    return Plan(runs=runs, cases=50, suites=SUITES, rates=RATES, extra_metrics=4, battles=2000)


def page_queries(engine, gate: dict) -> list[tuple[str, str, object]]:
    since = utcnow() - timedelta(days=90)
    cmp = q.comparison(engine, gate, BASELINE, "smollm2-q2_k")
    base_run, cand_run = cmp["runs"]["records"]
    case = q.shared_cases(engine, base_run, cand_run)[0]
    return [
        ("Overview", "overview", lambda: q.overview(engine, {FAMILY: BASELINE}, timedelta(hours=48))),
        ("Overview", "latest_verdicts", lambda: q.latest_verdicts(engine)),
        ("Trends", "names", lambda: q.names(engine)),
        ("Trends", "metrics_of", lambda: q.metrics_of(engine, "records")),
        ("Trends", "series (90 days, all variants)", lambda: q.series(engine, "records", "pass", None, since)),
        ("Trends", "series (all time, all variants)", lambda: q.series(engine, "records", "pass")),
        ("Trends", "markers", lambda: q.markers(engine, "records", "pass", None, since)),
        ("Compare", "comparison (6 suites, paired stats)", lambda: q.comparison(engine, gate, BASELINE, "smollm2-q2_k")),
        ("Compare", "shared_cases", lambda: q.shared_cases(engine, base_run, cand_run)),
        ("Compare", "case_detail x2", lambda: (q.case_detail(engine, base_run, case), q.case_detail(engine, cand_run, case))),
        ("Arena", "battle_judges", lambda: q.battle_judges(engine)),
        ("Arena", "win_matrix", lambda: q.win_matrix(engine, "facts", "checks", "checks")),
        ("Arena", "leaderboard (300 bootstrap)", lambda: q.leaderboard(engine, "facts", "checks", "checks", BASELINE)),
        ("Runs and alerts", "runs (newest 500)", lambda: q.runs(engine)),
        ("Runs and alerts", "runs (one variant, failed)", lambda: q.runs(engine, "api-upstream", None, "failed")),
        ("Runs and alerts", "run_totals", lambda: q.run_totals(engine)),
        ("Runs and alerts", "alerts", lambda: q.alerts(engine)),
        ("Runs and alerts", "firings", lambda: q.firings(engine)),
    ]


def measure(label: str, url: str, runs: int, repeat: int) -> dict[str, float]:
    if not url.startswith("sqlite"):
        upgrade(url)
    t0 = time.perf_counter()
    counts = seed(open_engine(url), plan(runs))
    took = time.perf_counter() - t0
    print(f"\n### {label}: seeded {counts} in {took:.0f} s ({counts['case_results'] / took:,.0f} case results/s with "
          "their runs and metric points)")
    engine = open_readonly(url)
    gate = GateConfig().model_dump(mode="json")
    out = {}
    print("\n| page | query | median ms | max ms |\n|---|---|---|---|")
    for page, name, fn in page_queries(engine, gate):
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
        out[f"{page}/{name}"] = statistics.median(times)
        print(f"| {page} | {name} | {statistics.median(times):.0f} | {max(times):.0f} |")
    totals: dict[str, float] = {}
    for key, ms in out.items():
        totals[key.split("/")[0]] = totals.get(key.split("/")[0], 0.0) + ms
    print("\nPer page (sum of its queries' medians): " + ", ".join(f"{p} {ms:.0f} ms" for p, ms in totals.items()))
    engine.dispose()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=420, help="runs per variant x suite (420: ~1M case results, ~100k points)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--postgres", action="store_true", help="also measure a throw-away PostgreSQL server")
    ap.add_argument("--no-sqlite", action="store_true", help="skip SQLite (with --postgres: PostgreSQL only)")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="evalsvc-bench-"))
    folder.chmod(0o755)  # the postgres user must reach its data folder inside
    try:
        if not args.no_sqlite:
            measure("SQLite", f"sqlite:///{folder / 'store.db'}", args.runs, args.repeat)
        if args.postgres:
            from tests.pg import PostgresServer

            server = PostgresServer(folder / "pg")
            server.start()
            try:
                measure("PostgreSQL", server.create_database("bench"), args.runs, args.repeat)
            finally:
                server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
