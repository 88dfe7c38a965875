"""Launching a model server process: a free port, a log file, a health wait, a clean stop.

Shared by the built-in backends; a plugin backend can use ``launched`` too.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
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


def _die_with_parent() -> None:
    """In the server's process, before it runs: SIGTERM it when evalsvc dies (Linux prctl PR_SET_PDEATHSIG), so a
    killed evalsvc (SIGKILL, OOM) does not leave a server holding a GPU."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the reaping below still applies
        pass


def _started(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (/proc/PID/stat field 22): a pid with another is another."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _registry() -> Path:
    from evalsvc.identity import cache_dir

    return cache_dir() / "servers"


def reap_stale() -> list[int]:
    """Kill the process groups of servers whose evalsvc is gone (a record per server, written at launch): what a
    parent-death signal missed (a server that ignores SIGTERM, or its engine's own child processes). Returns them."""
    reaped = []
    for record in _registry().glob("*.json") if _registry().is_dir() else []:
        try:
            info = json.loads(record.read_text())
            owner_alive = _started(info["owner"]) == info["owner_started"]
            if not owner_alive and _started(info["pgid"]) == info["started"]:
                os.killpg(info["pgid"], signal.SIGKILL)
                reaped.append(info["pgid"])
            if not owner_alive:
                record.unlink(missing_ok=True)
        except (OSError, ValueError, KeyError, TypeError):
            record.unlink(missing_ok=True)
    return reaped


_held = threading.local()  # the device sets this thread holds: a thread may nest servers on its own devices


DEVICE_SCOPE_ENV = "EVALSVC_DEVICE_SCOPE"


@contextmanager
def devices(key: str) -> Iterator[None]:
    """Hold a device set ("gpus-2,3", or "cpu") on this machine: another process or thread that wants it waits until
    it is free, so two servers never share a GPU set (two schedules due in the same minute queue here).

    Inside a Ray task (``EVALSVC_DEVICE_SCOPE`` names its node) Ray places the work: GPU ids are the node's own, so the
    lock is per node, and CPUs are counted by Ray, so "cpu" takes no lock."""
    import fcntl

    scope = os.environ.get(DEVICE_SCOPE_ENV)
    if scope:
        if key == "cpu":
            yield
            return
        key = f"{scope}.{key}"
    mine = getattr(_held, "keys", set())
    if key in mine:
        yield
        return
    path = _registry() / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"evalsvc: waiting for {key}: another model server holds it", file=sys.stderr, flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        _held.keys = mine | {key}
        try:
            yield
        finally:
            _held.keys = mine
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def launched(cmd: list[str], env: dict[str, str], log: Path, port: int, model: str, timeout_s: float,
             grace_s: float = 10.0, device_key: str = "cpu") -> Iterator[Served]:
    """Start ``cmd`` (which must listen on ``port``) on its device set, wait until /v1/models answers, yield, stop it.

    The device set is held for the server's life (`devices`). The server runs in its own process group, gets SIGTERM
    if evalsvc dies, and is recorded so that the next launch on this machine reaps its group should it outlive a
    killed evalsvc anyway (`reap_stale`)."""
    with devices(device_key):
        with _launched(cmd, env, log, port, model, timeout_s, grace_s) as served:
            yield served


@contextmanager
def _launched(cmd: list[str], env: dict[str, str], log: Path, port: int, model: str, timeout_s: float,
              grace_s: float) -> Iterator[Served]:
    log.parent.mkdir(parents=True, exist_ok=True)
    reap_stale()
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=_die_with_parent)
    record = _registry() / f"{proc.pid}.json"
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"pgid": proc.pid, "started": _started(proc.pid), "owner": os.getpid(),
                                      "owner_started": _started(os.getpid()), "cmd": cmd[:4]}))
    except OSError:
        record = None  # type: ignore[assignment]
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}/v1/models", log, timeout_s)
        yield Served(f"http://127.0.0.1:{port}/v1", model, health=lambda: death(proc, log))
    finally:
        stop(proc, grace_s)
        if record is not None:
            record.unlink(missing_ok=True)
