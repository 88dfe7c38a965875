"""Peak memory of `evalsvc run` as a suite grows: 1k, 10k and 100k cases against bench/sim_server.py.

    python3 bench/memory_peak.py                       # 1,000 / 10,000 / 100,000 cases
    python3 bench/memory_peak.py --sizes 1000 20000
    python3 bench/memory_peak.py --judge               # every case also judged (the simulator as judge variant)

Each size is a fresh project and SQLite store; `evalsvc run` runs as a subprocess and its peak resident set
(ru_maxrss from wait4) is reported with the time and the growth per case over the smallest size. The simulator
answers 8 tokens at once with 64 slots (concurrency 64), so the client, not the server, sets the pace.
docs/performance.md records the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine_saturation import Sim, write_project  # noqa: E402

SLOTS, TOKENS = 64, 8


def peak_of_run(folder: Path) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one `evalsvc run` in folder."""
    env = {k: v for k, v in os.environ.items() if k != "EVALSVC_STORE"}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "evalsvc.cli", "run", "--no-progress", "--no-compare", "--variant", "sim"],
                            cwd=folder, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"evalsvc run exited {proc.returncode} in {folder}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--judge", action="store_true", help="give every case a judge check too (a second request per case)")
    args = ap.parse_args()
    sim = Sim(SLOTS, TOKENS, 0.0)
    rows = []
    try:
        for n in args.sizes:
            folder = Path(tempfile.mkdtemp(prefix="evalsvc-mem-"))
            try:
                write_project(folder, n, sim, SLOTS, TOKENS, lm_eval=False, judge=args.judge)
                rss, wall = peak_of_run(folder)
                rows.append((n, rss, wall))
                print(f"{n} cases: peak RSS {rss:.0f} MiB, {wall:.1f} s", flush=True)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        sim.stop()
    n0, rss0, _ = rows[0]
    print("\n| cases | peak RSS MiB | KiB per case over the smallest | wall s | cases/s |\n|---:|---:|---:|---:|---:|")
    for n, rss, wall in rows:
        per = f"{(rss - rss0) * 1024 / (n - n0):.2f}" if n != n0 else "-"
        print(f"| {n:,} | {rss:.0f} | {per} | {wall:.1f} | {n / wall:,.0f} |")


if __name__ == "__main__":
    main()
