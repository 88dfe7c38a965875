"""A/A speed gates: how often a 90% speed interval excludes 0 when the two arms are the same endpoint.

A calibrated interval excludes 0 in about 10% of A/A gates. Each gate here measures one endpoint twice on the
same cases (response cache off, the second arm with other seeds, as an A/A gate does) in one of two ways, taken
in turn so that both meet the same machine: **interleaved**, as the gate measures (``Runner.run_pair``: each
case's two requests back to back, in a random order), and **one after the other** (two ``Runner.run_variant``
runs, as the gate measured before). Each gate's latency p50, p95 and tokens per second are compared with the
gate's own method (``verdicts.timing.compare_metric``: ``compare_quantile`` for the percentiles, the signed-rank
shift for tokens per second) at one-sided alpha 0.05, so a 90% two-sided
interval, and the share of intervals that exclude 0 is counted per metric.

The endpoint is a stand-in for a loaded serving machine (stdlib HTTP, in this process): a request of case k
takes ``base_ms x (1 + (k mod 7) / 7)`` (longer prompts take longer) times the machine's load at that moment
times per-request noise (lognormal, SD 0.1), and answers 8 + (k mod 5) words. The load is a level drawn afresh
(lognormal, SD ``--load-sd``) every ``--load-period`` seconds: other work starting and stopping on the machine.

    python bench/speed_aa.py --gates 30 --cases 120
    python bench/speed_aa.py --gates 100 --cases 120 --interleaved-only --seed 2

Takes about 5 s per pair of gates on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import socket
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from evalsvc.config import Margin, load_config
from evalsvc.engine.runner import Runner
from evalsvc.service.gate import A_A_SEED_OFFSET
from evalsvc.stats import speed
from evalsvc.store import queries
from evalsvc.store.db import open_engine
from evalsvc.store.latest import runs_by_id
from evalsvc.suites import resolve
from evalsvc.verdicts.timing import compare_metric

METRICS = ("latency_p50", "latency_p95", "tokens_per_s")


class LoadedMachine:
    """Latency = per-case base x the machine's load now x per-request noise."""

    def __init__(self, base_ms: float, load_sd: float, period_s: float, seed: int) -> None:
        self.base_s, self.load_sd, self.period_s, self.seed = base_ms / 1000, load_sd, period_s, seed
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()

    def load(self, now: float) -> float:
        window = int(now / self.period_s)
        h = int.from_bytes(hashlib.sha256(f"{self.seed}:{window}".encode()).digest()[:8], "big") / 2**64
        return math.exp(self.load_sd * float(_ndtri(h)))

    def latency(self, k: int) -> float:
        with self.lock:
            noise = float(self.rng.lognormal(0.0, 0.1))
        return self.base_s * (1 + (k % 7) / 7) * self.load(time.time()) * noise


def _ndtri(p: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(min(max(p, 1e-12), 1 - 1e-12)))


def serve(machine: LoadedMachine) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._send({"data": [{"id": "v"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            k = int(body["messages"][-1]["content"].split()[-1])
            time.sleep(machine.latency(k))
            words = ["w"] * (8 + k % 5)
            self._send({"id": "x", "object": "chat.completion", "model": body.get("model"),
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": f"{k} " + " ".join(words)}}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": len(words) + 1}})

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _send(self, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
            self.wfile.write(head.encode() + data)  # one write: no Nagle/delayed-ACK stall between head and body

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def excludes_zero(s: Session, base_id: int, cand_id: int) -> dict[str, bool]:
    """Each metric's 90% interval of the A/A difference, on the cases timed in both runs: does it exclude 0?"""
    b, c = speed.per_case(queries.speed_rows(s, base_id)), speed.per_case(queries.speed_rows(s, cand_id))
    ids = sorted(b.keys() & c.keys())
    out = {}
    for metric in METRICS:
        bv, cv = speed.values(b, metric, ids), speed.values(c, metric, ids)
        comparison = compare_metric(metric, bv, cv, Margin(absolute=0.0), 0.05)  # the gate's own method
        out[metric] = comparison.ci_low > 0 or comparison.ci_high < 0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gates", type=int, default=30, help="A/A gates per way of measuring")
    parser.add_argument("--cases", type=int, default=120)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--base-ms", type=float, default=20.0)
    parser.add_argument("--load-sd", type=float, default=0.3)
    parser.add_argument("--load-period", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--interleaved-only", action="store_true", help="measure only as the gate does")
    args = parser.parse_args()
    machine = LoadedMachine(args.base_ms, args.load_sd, args.load_period, args.seed)
    server = serve(machine)
    root = Path(tempfile.mkdtemp(prefix="speed-aa-"))
    (root / "suites").mkdir()
    (root / "suites" / "aa.jsonl").write_text("".join(
        json.dumps({"id": f"c{k}", "input": f"say {k}", "checks": [{"type": "contains", "value": str(k)}]}) + "\n"
        for k in range(args.cases)))
    (root / "suites" / "aa.yaml").write_text("name: aa\ncases: aa.jsonl\n")
    (root / "evalsvc.yaml").write_text(
        f"store: sqlite:///{root / 'store.db'}\nsuites_dir: {root / 'suites'}\nconcurrency: {args.concurrency}\n"
        f"variants:\n  - {{name: v, family: f, endpoint: {{base_url: 'http://127.0.0.1:{server.server_port}/v1', model: v}}}}\n")
    cfg = load_config(root / "evalsvc.yaml")
    engine = open_engine(cfg.store_url())
    suites = resolve(cfg.suites_dir, ["aa"])
    variant = cfg.variant("v")
    counts: dict[str, Counter[str]] = {"interleaved": Counter()}
    if not args.interleaved_only:
        counts["one after the other"] = Counter()
    started = time.monotonic()
    for g in range(args.gates):
        for way in counts:
            first = Runner(cfg, engine, progress=False, log_dir=root / "logs", cache="off")
            second = Runner(cfg, engine, progress=False, log_dir=root / "logs", cache="off", seed_offset=A_A_SEED_OFFSET)
            slot = f"aa:{g}:{way}"
            if way == "interleaved":
                base, cand = first.run_pair(second, (suites, variant, f"{slot}:a"), (suites, variant, f"{slot}:b"), g)
            else:
                base = first.run_variant(suites, variant, slot=f"{slot}:a")
                cand = second.run_variant(suites, variant, slot=f"{slot}:b")
            with Session(engine) as s:
                rows = runs_by_id(s, [base[0].run_id, cand[0].run_id])
                hit = excludes_zero(s, rows[base[0].run_id].id, rows[cand[0].run_id].id)
            counts[way].update(m for m, excluded in hit.items() if excluded)
        print(f"gate {g + 1}/{args.gates}: " + "; ".join(
            f"{way}: " + ", ".join(f"{m} {counts[way][m]}" for m in METRICS) for way in counts), flush=True)
    server.shutdown()
    print(f"\n{args.gates} A/A gates per way, {args.cases} cases, concurrency {args.concurrency}, load SD {args.load_sd} "
          f"every {args.load_period} s, {time.monotonic() - started:.0f} s in all")
    print("| measured | " + " | ".join(METRICS) + " |")
    print("|---|" + "---:|" * len(METRICS))
    for way, c in counts.items():
        print(f"| {way} | " + " | ".join(f"{c[m]}/{args.gates} ({c[m] / args.gates:.0%})" for m in METRICS) + " |")


if __name__ == "__main__":
    main()
