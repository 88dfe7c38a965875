"""How long a command spends on a checkpoint folder's identity: the first time (its files read) and the next.

    python3 bench/checkpoint_hash.py models/hf/smollm2-135m-bf16

Each measurement is a fresh process (as each evalsvc command is) hashing the folder with `checkpoint_hash`, with a
cache of its own (EVALSVC_CACHE in a temporary folder): the first reads every model file, the later ones find
their hashes stored by (path, size, modification time). Prints one Markdown row (docs/performance.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = "import sys; from evalsvc.identity import checkpoint_hash; print(checkpoint_hash(sys.argv[1]))"


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "models/hf/smollm2-135m-bf16")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "EVALSVC_CACHE": cache, "PYTHONPATH": str(ROOT)}
        times, digests = [], set()
        for _ in range(4):
            started = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CODE, str(folder)], capture_output=True, text=True, env=env, check=True)
            times.append(time.perf_counter() - started)
            digests.add(out.stdout.strip())
    assert len(digests) == 1
    print("| folder | size | first command (files read) | next commands (hashes stored), median of 3 |")
    print("|---|---|---|---|")
    later = sorted(times[1:])[1]
    print(f"| {folder.name} | {size / 1e6:.0f} MB | {times[0]:.2f} s | {later:.2f} s |")


if __name__ == "__main__":
    main()
