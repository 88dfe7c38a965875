"""What storing top log-probabilities costs: request time and store bytes, `top_logprobs: 5` against `top_logprobs: 0`.

One variant (F16 by default) on the real llama.cpp server (evalsvc's local backend, 2 threads, concurrency 1, response
cache off, temperature 0, max_tokens 64) answers the same suites in `--reps` pairs of `evalsvc run`, one with
`divergence: {top_logprobs: K}` and one with `top_logprobs: 0`, in an ABBA order (K then 0, then 0 then K, ...) so that
a neighbour's load, the server's warm-up and the store's growth fall on both alike. Each run is one store, one project,
its own slot; each `evalsvc run` starts its own server.

Per request: `case_results.latency_ms`, the client's wall time from sending the request to the parsed answer
(`serving/endpoint.py`); its median per arm, and the ratio of medians over all runs. Per run: the requests' total
time. Per case: the bytes of its stored log-probabilities (`case_results.logprobs`, the JSON text as SQLite holds it)
and per generated token, with the bound the endpoint client enforces on the answer they come from
(`serving.response.size_cap`: the body of an answer to a request with max_tokens 64 and K alternatives may not exceed
it).

    python bench/divergence_cost.py --suites arithmetic facts --reps 3     # about 7 min on a busy 2-core machine
    python bench/divergence_cost.py --report-only                          # the figures again, from the store
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import text

from evalsvc.serving.response import size_cap
from evalsvc.store.db import open_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gate_table import project  # bench/ is not a package

ROOT = Path(__file__).resolve().parent.parent
MAX_TOKENS = 64


def configs(folder: Path, models: Path, quant: str, k: int) -> dict[int, Path]:
    """Two evalsvc.yaml files on one store, differing only in divergence.top_logprobs."""
    project(folder, models, [quant], sampled=False)
    base = (folder / "evalsvc.yaml").read_text().replace("concurrency: 2", "concurrency: 1")
    if "concurrency: 1" not in base or f"max_tokens: {MAX_TOKENS}" not in base:
        sys.exit("the starter config changed: update bench/divergence_cost.py")
    out = {}
    for top in (k, 0):
        path = folder / f"evalsvc-k{top}.yaml"
        path.write_text(base + f"divergence: {{top_logprobs: {top}}}\n")
        out[top] = path
    return out


def run(folder: Path, cfg: Path, suites: list[str], slot: str) -> float:
    """One `evalsvc run` of the suites; its wall time in seconds (server start included)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "evalsvc.cli", "run", "-c", str(cfg), *(a for s in suites for a in ("-s", s)),
                    "--slot", slot, "--no-compare", "--no-progress"], cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - start


def report(folder: Path, quant: str, suites: list[str], k: int, reps: int) -> None:
    """The table and the bytes, from the runs stored in the project's store."""
    engine = open_engine(f"sqlite:///{folder / 'evalsvc.db'}")
    with engine.connect() as c:
        # a case that stored none holds the JSON text null (4 bytes), not SQL NULL: json_type tells the two apart
        rows = c.execute(text("SELECT r.slot, c.latency_ms, length(CAST(c.logprobs AS BLOB)), json_type(c.logprobs), "
                              "json_array_length(c.logprobs) FROM case_results c JOIN runs r ON r.id = c.run_id "
                              "WHERE c.status = 'ok'")).all()
        spans = dict(c.execute(text("SELECT slot, (julianday(max(finished_at)) - julianday(min(started_at))) * 86400 "
                                    "FROM runs GROUP BY slot")).all())
    print(f"{quant} on {', '.join(suites)} ({len(rows) // (2 * reps)} requests a run), {reps} pairs of runs in ABBA "
          f"order, llama.cpp 2 threads, concurrency 1, max_tokens {MAX_TOKENS}\n")
    print("| top_logprobs | requests | median request (ms) | requests' total per run (s) | run, first start to last finish (s) |")
    print("|---|---|---|---|---|")
    medians = {}
    for top in (k, 0):
        lat = [r[1] for r in rows if r[0].startswith(f"cost-k{top}-")]
        per_run = [sum(r[1] for r in rows if r[0] == f"cost-k{top}-{rep}") / 1000 for rep in range(reps)]
        medians[top] = statistics.median(lat)
        span = statistics.median(spans[f"cost-k{top}-{rep}"] for rep in range(reps))
        print(f"| {top} | {len(lat)} | {medians[top]:.0f} | {statistics.median(per_run):.1f} "
              f"({', '.join(f'{x:.1f}' for x in per_run)}) | {span:.1f} |")
    print(f"\nratio of median request times, top_logprobs {k} / 0: {medians[k] / medians[0]:.3f}")
    for top in (k, 0):
        arm = [r for r in rows if r[0].startswith(f"cost-k{top}-")]
        lists = [(r[2], r[4]) for r in arm if r[3] == "array"]
        if not lists:
            print(f"top_logprobs {top}: no answer stored log-probabilities; each case's column holds "
                  f"{statistics.median(r[2] or 0 for r in arm):.0f} B (JSON null)")
            continue
        per_case = sorted(b for b, _ in lists)
        per_token = [b / t for b, t in lists if t]
        print(f"top_logprobs {top}: {len(per_case)} of {len(arm)} answers stored log-probabilities, per case median "
              f"{statistics.median(per_case):.0f} B, max {per_case[-1]} B, total {sum(per_case)} B; per token median "
              f"{statistics.median(per_token):.0f} B, max {max(per_token):.0f} B")
    cap_k = size_cap({"max_tokens": MAX_TOKENS, "logprobs": True, "top_logprobs": k})
    cap_0 = size_cap({"max_tokens": MAX_TOKENS})
    print(f"bound enforced on the answer they come from (serving.response.size_cap, max_tokens {MAX_TOKENS}): "
          f"{cap_k} B at top_logprobs {k}, {cap_0} B at 0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="Method: the module docstring.")
    parser.add_argument("--out", type=Path, default=Path("/tmp/divergence-cost"), help="the project folder (made afresh)")
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--quant", default="F16", choices=["F16", "Q8_0", "Q4_0", "Q2_K"])
    parser.add_argument("--suites", nargs="+", default=["arithmetic", "facts"])
    parser.add_argument("--k", type=int, default=5, help="top_logprobs of the arm that stores them (the default, 5)")
    parser.add_argument("--reps", type=int, default=3, help="pairs of runs")
    parser.add_argument("--report-only", action="store_true", help="report the runs already in --out's store")
    args = parser.parse_args()
    if not args.report_only:
        cfgs = configs(args.out, args.models, args.quant, args.k)
        for rep in range(args.reps):
            for top in ((args.k, 0) if rep % 2 == 0 else (0, args.k)):
                seconds = run(args.out, cfgs[top], args.suites, f"cost-k{top}-{rep}")
                print(f"rep {rep} top_logprobs {top}: `evalsvc run` {seconds:.1f} s", file=sys.stderr, flush=True)
    report(args.out, args.quant, args.suites, args.k, args.reps)


if __name__ == "__main__":
    main()
