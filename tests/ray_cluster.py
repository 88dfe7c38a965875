"""A real local Ray cluster for the executor tests, and projects whose variants run on it.

The head is `ray start --head --block` in its own process group (simulated GPUs: ``--num-gpus``, which Ray hands out
as CUDA_VISIBLE_DEVICES ids), with the dashboard for the Jobs API; auth off and usage stats off. The variants are
stand-in model servers (tests/stand_in_server.py) launched through the vLLM backend, so a task holds GPUs, starts a
managed server with Ray's device ids, and writes to the store as a real variant does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, echo_cases, write_config, write_suite

RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
SLOT = "2026-12-02T03:00Z"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, **RAY_ENV, **extra}


@dataclass
class Head:
    address: str
    jobs_url: str
    proc: subprocess.Popen


def start_head(num_cpus: int = 4, num_gpus: int = 4) -> Head:
    port, dash = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
           f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", "--disable-usage-stats", f"--temp-dir={tmp}", "--node-ip-address=127.0.0.1",
           "--object-store-memory=80000000"]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    head = Head(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", proc)
    deadline = time.time() + 90
    import httpx

    while time.time() < deadline:
        try:
            if httpx.get(f"{head.jobs_url}/api/version", timeout=2).status_code == 200:
                return head
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}")
        time.sleep(0.5)
    stop_head(head)
    raise RuntimeError("the Ray head did not come up in 90 s")


def stop_head(head: Head) -> None:
    try:
        os.killpg(head.proc.pid, signal.SIGTERM)
        head.proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(head.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stand_in(name: str, gpus: int, log: Path, delay: float = 0.2, **extra: Any) -> str:
    """A variant served by the stand-in through the vLLM backend, asking for ``gpus`` GPUs."""
    args = {"stand_in_log": str(log), "stand_in_delay": delay, **extra}
    return f"""
  - name: {name}
    family: f
    cache: false
    local: {{engine: vllm, model_path: {name}-model, entrypoint: tests.stand_in_server, tensor_parallel_size: {gpus},
            start_timeout_s: 60, extra_args: {json.dumps(args)}}}"""


def project(tmp: Path, store: str, address: str, variants: str, n_cases: int = 8, executor: str = "",
            extra: str = "") -> Path:
    """A project folder: the echo suite of ``n_cases`` cases, a nightly schedule, executor type ray at ``address``."""
    for line in variants.splitlines():
        if line.strip().startswith("- name:"):
            model = tmp / f"{line.split(':', 1)[1].strip()}-model"
            model.mkdir(parents=True, exist_ok=True)
            (model / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "name": model.name}))
    write_suite(tmp / "suites", "echo", echo_cases(n_cases))
    write_config(tmp, f"""\
store: {store}
concurrency: 1
executor: {{type: ray, address: "{address}", task_retries: 2, lock_wait_s: 5, schedule_timeout_s: 120, run_timeout_s: 300{executor}}}
schedules: [{{name: nightly, cron: "0 3 * * *", compare: false}}]
variants:{variants}
{extra}""")
    return tmp / "evalsvc.yaml"


def fire(config: Path, *args: str, timeout: float = 240, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evalsvc.cli", "fire", "nightly", "--slot", SLOT, "-c", str(config), *args],
                          env=env(**(extra_env or {})), capture_output=True, text=True, timeout=timeout, cwd=config.parent)


def fire_in_background(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "evalsvc.cli", "fire", "nightly", "--slot", SLOT, "-c", str(config)],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=config.parent)


def events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def wait_for(predicate: Any, timeout: float = 120, what: str = "a condition") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def all_gone(pids: set[int], timeout: float = 20) -> bool:
    """Every pid has exited (within ``timeout``): no model server left behind."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = set()
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, IndexError):
                continue
            if state != "Z":  # a zombie has exited; its parent has not reaped it yet
                alive.add(pid)
        if not alive:
            return True
        time.sleep(0.2)
    return False
