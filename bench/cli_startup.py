"""How long `evalsvc --help` takes to start, against a bare interpreter: the floor any command pays.

    python3 bench/cli_startup.py                 # 21 runs of each, medians
    python3 bench/cli_startup.py --runs 41 --ref /path/to/an/older/checkout

Each run is a fresh process timed from outside. `evalsvc --help` is run through the installed entry point when
it sits beside this interpreter (as pip installs it), else as `python -m evalsvc.cli --help`; with --ref, the other
checkout is put first on PYTHONPATH and run with `python -m evalsvc.cli`. The runs of the cases are interleaved, so
a burst of load on the machine falls on all of them alike. The last column names the heavy libraries `--help`
imported (it should import none: evalsvc/cli loads a command's code only when that command runs).
docs/performance.md records the figures.
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
HEAVY = ("pydantic", "yaml", "sqlalchemy", "pandas", "numpy", "scipy", "httpx", "tqdm", "lm_eval", "apscheduler")
PROBE = ("import sys; from evalsvc.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
         f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})), file=sys.stderr)")


def help_command(checkout: Path | None) -> list[str]:
    entry = Path(sys.executable).with_name("evalsvc")
    if checkout is None and entry.exists():
        return [str(entry), "--help"]
    return [sys.executable, "-m", "evalsvc.cli", "--help"]


def env_for(checkout: Path | None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(checkout)} if checkout is not None else dict(os.environ)


def heavy_imports(checkout: Path | None) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env_for(checkout), cwd=checkout or ROOT, capture_output=True,
                         text=True, check=True)
    return out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21, help="fresh processes per case")
    ap.add_argument("--ref", type=Path, default=None, help="another checkout to measure the same way (e.g. an older commit)")
    args = ap.parse_args()
    cases: list[tuple[str, list[str], Path | None]] = [("python -c pass", [sys.executable, "-c", "pass"], None),
                                                       ("evalsvc --help", help_command(None), None)]
    if args.ref:
        ref = args.ref.resolve()
        cases.append((f"evalsvc --help ({ref.name})", help_command(ref), ref))
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(args.runs):
        for name, cmd, checkout in cases:
            start = time.perf_counter()
            subprocess.run(cmd, env=env_for(checkout), cwd=checkout or ROOT, stdout=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - start)
    print(f"{'case':<36} {'median s':>9} {'min s':>7}  heavy imports")
    for name, cmd, checkout in cases:
        heavy = "" if cmd[1:2] == ["-c"] else heavy_imports(checkout) or "none"
        print(f"{name:<36} {statistics.median(times[name]):>9.3f} {min(times[name]):>7.3f}  {heavy}")
    print(f"({args.runs} runs each; load average {os.getloadavg()[0]:.2f}; {' '.join(help_command(None))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
