"""Launching a model server process: a free port, a log file, a health wait, a clean stop.

Shared by the built-in backends; a plugin backend can use ``launched`` too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from evalsvc.errors import ServingError
from evalsvc.serving.base import Served


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def death(proc: subprocess.Popen[bytes], log: Path) -> str | None:
    if proc.poll() is None:
        return None
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"code {proc.returncode}"
    return f"the model server died ({how}); its log ({log}) ends:\n{tail(log, 5)}"


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServingError(f"the model server exited with code {proc.returncode} during start-up; "
                               f"its log ({log}) ends:\n{tail(log)}")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise ServingError(f"the model server did not answer {url} within {timeout_s:.0f}s; log ({log}) ends:\n{tail(log)}")


def stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the server's whole process group, then SIGKILL what is left after ``grace_s``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def launched(cmd: list[str], env: dict[str, str], log: Path, port: int, model: str, timeout_s: float,
             grace_s: float = 10.0) -> Iterator[Served]:
    """Start ``cmd`` (which must listen on ``port``), wait until /v1/models answers, yield, stop it."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}/v1/models", log, timeout_s)
        yield Served(f"http://127.0.0.1:{port}/v1", model, health=lambda: death(proc, log))
    finally:
        stop(proc, grace_s)
