"""What a command costs before it does anything: the imports behind `evalsvc --help` and behind reading evalsvc.yaml.

    python3 bench/startup.py                   # 15 fresh interpreters per case, medians
    python3 bench/startup.py --repeat 30 --ref /path/to/an/older/checkout

Each case runs in a fresh interpreter (python -c), timed from outside; the last column counts the modules
of SQLAlchemy, Alembic and APScheduler the case imported (reading the config should import none: the
schema is pydantic and the YAML loader alone). docs/performance.md records the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("sqlalchemy", "alembic", "apscheduler")
CASES = {
    "python -c pass": "pass",
    "import evalsvc.cli (evalsvc --help)": "import evalsvc.cli",
    "load_config(evalsvc.yaml)": "from evalsvc.config import load_config; load_config('evalsvc.yaml')",
}
COUNT = "; import sys; print(sum(m.split('.')[0] in {heavy} for m in sys.modules))"


def measure(code: str, checkout: Path, repeat: int) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    times, heavy = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code + COUNT.format(heavy=set(HEAVY))], cwd=checkout, env=env,
                             capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - start)
        heavy = int(out.stdout.split()[-1])
    return statistics.median(times), heavy


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--ref", type=Path, default=None, help="another checkout to measure the same way (e.g. an older commit)")
    args = ap.parse_args()
    trees = [("this checkout", ROOT)] + ([("ref", args.ref.resolve())] if args.ref else [])
    print(f"{'case':<40} {'tree':<14} {'median s':>9} {'heavy modules':>14}")
    for name, code in CASES.items():
        for label, tree in trees:
            median, heavy = measure(code, tree, args.repeat)
            print(f"{name:<40} {label:<14} {median:>9.3f} {heavy:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
