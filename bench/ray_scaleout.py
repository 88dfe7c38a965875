"""Scale-out on Ray: 8 variants against the serving simulator on clusters of 1, 2 and 4 simulated GPU nodes.

    python3 bench/ray_scaleout.py                      # 8 variants x 200 cases, 8 slots, 32 tokens x 10 ms
    python3 bench/ray_scaleout.py --nodes 1 2 --cases 100

Each variant is a vLLM-engine variant whose server is bench/sim_server.py (8 slots, a fixed delay per token), so its
Ray task holds one (simulated) GPU, starts a managed server with Ray's device id, and writes its case results to the
store, as a real variant does. Each node has one GPU: a node evaluates one variant at a time, and the 8 variants
spread over the nodes. Each cluster is Ray's test cluster (``ray.cluster_utils.Cluster``: a head without GPUs and N
worker nodes), started fresh; the time is the driver's (``cluster.executor.run_on_ray``) from submission to the last
outcome, on a fresh SQLite store (one machine). With ``--via-jobs`` the time is a whole firing as `evalsvc serve` makes
it: the Ray Job submitted through the head's Jobs REST API, its driver (`evalsvc fire`, a new process: imports,
validation, checkpoint hashing for the fingerprints) started by Ray, the tasks, the comparisons, until the job ended.
What no bench here shows is a real cluster's GPU work: the servers are simulators that sleep per token.

Reported per cluster size N: wall time; how long after submission the first run started (Ray's workers for the job
start and import evalsvc: on this machine every simulated node shares the same cores); the serving ideal,
ceil(8 / N) x one variant's ideal
(ceil(cases / slots) x tokens x per-token delay, no server start, no client); and the scaling efficiency
T(1) / (N x T(N)), the share of the one-node time that N nodes keep (the goal at 4 nodes: 0.85 or more).
docs/performance.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)


def project(folder: Path, store: str, variants: int, cases: int, slots: int, tokens: int, per_token_ms: float,
            jobs_url: str = "http://127.0.0.1:8265") -> Path:
    (folder / "suites").mkdir(parents=True)
    with (folder / "suites" / "load.jsonl").open("w") as fh:
        for i in range(cases):
            fh.write(json.dumps({"id": f"c{i}", "input": f"question {i}", "checks": [{"type": "contains", "value": "42"}]})
                     + "\n")
    (folder / "suites" / "load.yaml").write_text("name: load\ncases: load.jsonl\n")
    lines = [f"store: {store or 'sqlite:///' + str(folder / 'store.db')}", f"concurrency: {slots}",
             f"executor: {{type: ray, address: auto, jobs_url: '{jobs_url}'}}",
             "schedules: [{name: bench, cron: '0 3 * * *', compare: false}]",
             f"generation: {{temperature: 0.0, max_tokens: {tokens}}}", "variants:"]
    for v in range(variants):
        model = folder / f"model-{v}"
        model.mkdir()
        (model / "config.json").write_text(json.dumps({"variant": v}))
        lines += [f"  - name: v{v}", "    family: sim", "    cache: false",
                  f"    local: {{engine: vllm, model_path: {model}, entrypoint: bench.sim_server, start_timeout_s: 120, "
                  f"extra_args: {{slots: {slots}, tokens: {tokens}, per_token_ms: {per_token_ms}}}}}"]
    (folder / "evalsvc.yaml").write_text("\n".join(lines) + "\n")
    return folder / "evalsvc.yaml"


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine so far (/proc/stat)."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def measure(nodes: int, args: argparse.Namespace, pg: object | None = None) -> dict:
    import ray
    from ray.cluster_utils import Cluster
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from evalsvc import suites as suites_mod
    from evalsvc.cluster.executor import run_on_ray
    from evalsvc.config import load_config
    from evalsvc.store.db import open_engine, upgrade
    from evalsvc.store.schema import Run

    folder = Path(tempfile.mkdtemp(prefix=f"ray-scaleout-{nodes}-"))
    store = pg.create_database(f"scaleout_{nodes}") if pg is not None else ""
    dash = free_port()
    config = project(folder, store, args.variants, args.cases, args.slots, args.tokens, args.per_token_ms,
                     f"http://127.0.0.1:{dash}")
    cfg = load_config(config)
    if store:
        upgrade(store)
    engine = open_engine(cfg.store_url())
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "include_dashboard": args.via_jobs, "dashboard_host": "127.0.0.1",
        "dashboard_port": dash, "object_store_memory": 80_000_000})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=2, num_gpus=1, object_store_memory=80_000_000)
        cluster.wait_for_nodes()
        if args.via_jobs:
            wait_for_jobs_api(f"http://127.0.0.1:{dash}")
            start, (busy0, total0), submitted = time.perf_counter(), cpu_times(), datetime.now(UTC).replace(tzinfo=None)
            outcomes = via_jobs(cfg, config, engine)
        else:
            ray.init(address=cluster.address, log_to_driver=False)
            suites = suites_mod.resolve(cfg.suites_dir, ["load"])
            start, (busy0, total0), submitted = time.perf_counter(), cpu_times(), datetime.now(UTC).replace(tzinfo=None)
            outcomes = run_on_ray(cfg, engine, suites, list(cfg.variants), "bench", folder / "logs")
        wall, (busy1, total1) = time.perf_counter() - start, cpu_times()
    finally:
        ray.shutdown()
        cluster.shutdown()
    with Session(engine) as session:
        first = session.scalar(select(func.min(Run.started_at)))
    bad = [o for o in outcomes if o.status != "succeeded"]
    if bad:
        raise SystemExit(f"{len(bad)} runs did not succeed: {bad[0].error}")
    one = math.ceil(args.cases / args.slots) * args.tokens * args.per_token_ms / 1000
    return {"nodes": nodes, "wall_s": wall, "serving_ideal_s": math.ceil(args.variants / nodes) * one,
            "requests": sum(o.sent for o in outcomes), "cpu_busy": (busy1 - busy0) / max(total1 - total0, 1.0),
            "first_start_s": (first - submitted).total_seconds()}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_jobs_api(url: str, timeout_s: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/version", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the head's Jobs API at {url} did not answer in {timeout_s:g} s")


def via_jobs(cfg: object, config: Path, engine: object) -> list:
    """A firing as `evalsvc serve` makes it (ray_firings.submit_and_watch); its runs' outcomes, read from the store."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from evalsvc.engine.runner import Outcome
    from evalsvc.service import ray_firings
    from evalsvc.store.schema import Run

    ray_firings.POLL_S = 0.2
    spec = cfg.schedules[0]  # type: ignore[attr-defined]
    done = ray_firings.submit_and_watch(cfg, str(config), spec, "bench")  # type: ignore[arg-type]
    if done["status"] != "SUCCEEDED":
        raise SystemExit(f"the firing's Ray job ended {done['status']}")
    with Session(engine) as s:  # type: ignore[arg-type]
        return [Outcome(r.id, r.suite_name, r.variant_name, r.status, r.n_cases, r.n_ok, r.n_errored, sent=r.n_cases,
                        error=r.error) for r in s.scalars(select(Run))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--variants", type=int, default=8)
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--per-token-ms", type=float, default=10.0)
    ap.add_argument("--via-jobs", action="store_true", help="time whole firings submitted as Ray Jobs (the Jobs API, "
                    "`evalsvc fire` starting) instead of run_on_ray called here")
    ap.add_argument("--postgres", action="store_true", help="a throw-away PostgreSQL store (as on a real cluster) "
                    "instead of SQLite")
    args = ap.parse_args()
    pg = None
    if args.postgres:
        from tests.pg import PostgresServer

        pg_dir = Path(tempfile.mkdtemp(prefix="evalsvc-bench-pg-"))
        pg_dir.chmod(0o755)  # the postgres user must reach its data folder inside
        pg = PostgresServer(pg_dir / "pg")
        pg.start()
    try:
        rows = [measure(n, args, pg) for n in args.nodes]
    finally:
        if pg is not None:
            pg.stop()
    base = next((r for r in rows if r["nodes"] == 1), None)
    print(f"{'PostgreSQL' if pg else 'SQLite'} store; {'whole firings as Ray Jobs; ' if args.via_jobs else ''}"
          f"{args.variants} variants x {args.cases} cases; "
          f"simulator {args.slots} slots, {args.tokens} tokens x "
          f"{args.per_token_ms:g} ms; one GPU per node\n")
    print(f"| nodes | wall (s) | serving ideal (s) | wall / ideal | scaling efficiency T(1) / (N x T(N)) | "
          f"first run started after (s) | machine CPU busy ({os.cpu_count()} cores) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        eff = f"{base['wall_s'] / (r['nodes'] * r['wall_s']):.2f}" if base else "-"
        print(f"| {r['nodes']} | {r['wall_s']:.1f} | {r['serving_ideal_s']:.1f} | {r['wall_s'] / r['serving_ideal_s']:.2f} "
              f"| {eff} | {r['first_start_s']:.1f} | {r['cpu_busy']:.0%} |")


if __name__ == "__main__":
    main()
