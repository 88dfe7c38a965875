"""Engine saturation and incremental re-runs, against bench/sim_server.py (N slots, fixed delay per token).

    python3 bench/engine_saturation.py                       # 2,000 cases, 8 slots, 32 tokens x 4 ms
    python3 bench/engine_saturation.py --skip-lm-eval        # evalsvc only (lm-eval at num_concurrent=1 takes minutes)

Ideal time: ceil(cases / slots) x tokens x per-token delay, every slot busy from the first request to the last.
What it runs, each against a fresh simulator count:

1. ``evalsvc run`` (a subprocess, as a user runs it) on a fresh SQLite store, concurrency = slots. The variant
   is an endpoint with ``cache: true`` (the default for local variants; endpoints default to off, since the model
   behind an API may change).
   Reports the CLI's wall time, the run's own time (started_at to finished_at in the store) and both / ideal.
2. The same command again: the suite and variant are unchanged, so every answer comes from the response
   cache. Reports requests sent (goal 0) and time as a share of the first run (goal under 5%).
3. ``evalsvc run --slot`` with a new slot (what a schedule does): a new run, every answer from the cache.
4. lm-eval ``local-completions`` on the same 2,000 prompts as a bundled generate_until task, with its default
   ``num_concurrent`` (1) and tuned (= slots), timed around ``simple_evaluate`` (a subprocess each).

docs/performance.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LM_EVAL = """
import json, sys, time
import lm_eval
from lm_eval.tasks import TaskManager
include, base_url, concurrent = sys.argv[1], sys.argv[2], int(sys.argv[3])
tm = TaskManager(include_path=include, include_defaults=False)
args = {"model": "sim", "base_url": base_url, "tokenizer_backend": None, "tokenized_requests": False}
if concurrent:
    args["num_concurrent"] = concurrent
t = time.perf_counter()
lm_eval.simple_evaluate(model="local-completions", model_args=args, tasks=["bench_sim"], task_manager=tm,
                        bootstrap_iters=0, use_cache=None, cache_requests=False, log_samples=False)
print(json.dumps({"wall_s": time.perf_counter() - t}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sim:
    def __init__(self, slots: int, tokens: int, per_token_ms: float) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sim_server.py"), "--port", str(self.port),
                                      "--slots", str(slots), "--tokens", str(tokens), "--per-token-ms", str(per_token_ms)])
        deadline = time.monotonic() + 30
        while True:
            try:
                self.stats()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stats(self) -> dict[str, float]:
        with urllib.request.urlopen(self.url + "/stats", timeout=5) as r:
            return json.loads(r.read())

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(self.url + "/reset", method="POST"), timeout=5).close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def write_project(folder: Path, cases: int, sim: Sim, concurrency: int, tokens: int, lm_eval: bool = True,
                  judge: bool = False) -> None:
    """An evalsvc project (suite `bench`, variant `sim`, SQLite store) and, with lm_eval, the same prompts as a task.

    With judge, every case also has a judge check, graded by the simulator as a second variant (`simjudge`).
    """
    (folder / "suites").mkdir()
    judged = [{"type": "judge", "judge": "simjudge", "rubric": "Is the sum right?", "threshold": 5}] if judge else []
    with open(folder / "suites" / "bench.jsonl", "w") as f:
        for i in range(cases):
            a, b = i % 97, i // 97
            f.write(json.dumps({"id": f"case-{i:05d}", "input": f"What is {a} + {b}? Explain briefly.",
                                "references": [f"the answer is {a + b} because {a} plus {b} makes {a + b}"],
                                "checks": [{"type": "numeric", "value": a + b, "match": "last"},
                                           {"type": "rouge", "rouge_types": ["rougeL"], "threshold": 0.3}, *judged]}) + "\n")
    (folder / "suites" / "bench.yaml").write_text(
        "name: bench\ncases: bench.jsonl\nprompt_template: \"{input}\"\n"
        f"generation: {{max_tokens: {tokens}}}\n")
    (folder / "evalsvc.yaml").write_text(
        "store: sqlite:///store.db\nsuites_dir: suites\n"
        f"concurrency: {concurrency}\n"
        "variants:\n  - name: sim\n    family: bench\n    cache: true\n"
        f"    endpoint: {{base_url: '{sim.url}/v1', model: sim, api: completions}}\n"
        + (f"  - name: simjudge\n    family: judge\n    cache: false\n    endpoint: {{base_url: '{sim.url}/v1', model: judge}}\n"
           if judge else ""))
    if not lm_eval:
        return
    tasks = folder / "tasks"
    tasks.mkdir()
    with open(tasks / "bench_sim.jsonl", "w") as f:
        for i in range(cases):
            a, b = i % 97, i // 97
            f.write(json.dumps({"question": f"What is {a} + {b}? Explain briefly.", "answer": str(a + b)}) + "\n")
    (tasks / "bench_sim.yaml").write_text(
        "task: bench_sim\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {tasks / 'bench_sim.jsonl'}\n"
        "test_split: test\noutput_type: generate_until\ndoc_to_text: \"{{question}}\"\ndoc_to_target: \"{{answer}}\"\n"
        f"generation_kwargs:\n  until: [\"\\n\\n\"]\n  max_gen_toks: {tokens}\n  do_sample: false\n  temperature: 0\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n")


def evalsvc_run(folder: Path, *extra: str) -> float:
    t = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "EVALSVC_STORE"}
    subprocess.run([sys.executable, "-m", "evalsvc.cli", "run", "--no-progress", "--no-compare", *extra],
                   cwd=folder, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def run_seconds(folder: Path) -> list[float]:
    import sqlite3

    with sqlite3.connect(folder / "store.db") as db:
        rows = db.execute("SELECT julianday(finished_at) - julianday(started_at) FROM runs ORDER BY id").fetchall()
    return [r[0] * 86400 for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--per-token-ms", type=float, default=4.0)
    ap.add_argument("--concurrency", type=int, help="evalsvc's concurrency (default: --slots)")
    ap.add_argument("--skip-lm-eval", action="store_true")
    args = ap.parse_args()
    ideal = math.ceil(args.cases / args.slots) * args.tokens * args.per_token_ms / 1000
    print(f"{args.cases} cases, {args.slots} slots, {args.tokens} tokens x {args.per_token_ms} ms: ideal {ideal:.1f} s\n")
    sim = Sim(args.slots, args.tokens, args.per_token_ms)
    folder = Path(tempfile.mkdtemp(prefix="evalsvc-engine-"))
    rows: list[tuple[str, float, float | None, int]] = []
    try:
        write_project(folder, args.cases, sim, args.concurrency or args.slots, args.tokens)
        first = evalsvc_run(folder)
        stats = sim.stats()
        rows.append(("evalsvc run, fresh store", first, run_seconds(folder)[-1], int(stats["requests"])))
        busy = stats["busy_s"] / (args.slots * stats["span_s"])
        sim.reset()
        again = evalsvc_run(folder)
        rows.append(("evalsvc run again (unchanged)", again, run_seconds(folder)[-1], int(sim.stats()["requests"])))
        sim.reset()
        slot = evalsvc_run(folder, "--slot", "2026-01-01T00:00")
        rows.append(("evalsvc run --slot (new slot)", slot, run_seconds(folder)[-1], int(sim.stats()["requests"])))
        if not args.skip_lm_eval:
            for label, conc in (("lm-eval local-completions, default num_concurrent", 0),
                                (f"lm-eval local-completions, num_concurrent={args.slots}", args.slots)):
                sim.reset()
                out = subprocess.run([sys.executable, "-c", LM_EVAL, str(folder / "tasks"), sim.url + "/v1/completions",
                                      str(conc)], check=True, capture_output=True, text=True)
                wall = json.loads(out.stdout.strip().splitlines()[-1])["wall_s"]
                rows.append((label, wall, None, int(sim.stats()["requests"])))
    finally:
        sim.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print("| what | requests | wall s | wall / ideal | run s (store) | run / ideal |\n|---|---:|---:|---:|---:|---:|")
    for label, wall, run_s, requests in rows:
        run_cols = f"{run_s:.2f} | {run_s / ideal:.3f}" if run_s is not None else "- | -"
        print(f"| {label} | {requests} | {wall:.2f} | {wall / ideal:.3f} | {run_cols} |")
    print(f"\nServer slots busy during evalsvc's first run: {busy:.1%} of slots x (first request to last answer, "
          f"{stats['span_s']:.2f} s)")
    print(f"Re-run of an unchanged suite: {rows[1][1] / rows[0][1]:.1%} of the first run's wall time "
          f"({rows[1][2] / rows[0][2]:.1%} of its run time); new slot: {rows[2][1] / rows[0][1]:.1%}")


if __name__ == "__main__":
    main()
