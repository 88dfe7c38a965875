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


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields from field 3 (state) on: [2] is the process group, [19] the start time."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _group(pgid: int, started: str) -> list[int]:
    """Processes in process group ``pgid`` that started at or after its leader did. Linux never hands out a pid that
    is still some live process's group id, so with the leader gone these are its group's (an engine's workers)."""
    out = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields and fields[2] == str(pgid) and int(fields[19]) >= int(started) and fields[0] != "Z":
            out.append(int(entry.name))
    return out


def reap_stale() -> list[int]:
    """Kill what is left of servers whose evalsvc is gone (a record per server, written at launch): what a parent-death
    signal missed (a server that ignores SIGTERM, or its engine's child processes, which outlive their leader).
    Returns the pids killed."""
    reaped = []
    for record in _registry().glob("*.json") if _registry().is_dir() else []:
        try:
            info = json.loads(record.read_text())
            if _started(info["owner"]) == info["owner_started"]:
                continue  # its evalsvc lives
            leader = _started(info["pgid"])
            if info["started"] is not None and leader in (None, info["started"]):  # else the pid is another's now
                for pid in _group(int(info["pgid"]), info["started"]):
                    try:
                        os.kill(pid, signal.SIGKILL)
                        reaped.append(pid)
                    except ProcessLookupError:
                        pass
            record.unlink(missing_ok=True)
        except (OSError, ValueError, KeyError, TypeError):
            record.unlink(missing_ok=True)
    return reaped


_held = threading.local()  # the device sets this thread holds: a thread may nest servers on its own devices


DEVICE_SCOPE_ENV = "EVALSVC_DEVICE_SCOPE"


def _device_locks(key: str) -> list[tuple[str, bool]]:
    """The machine-wide locks a device set takes, in the one order every holder takes them: (name, exclusive).

    One lock per GPU id, so overlapping sets ("gpus-0,1" and "gpus-1,2") queue; every GPU holder shares
    "gpus-all", which "devices-default" (no gpu_ids: every GPU) takes alone."""
    if key.startswith("gpus-"):
        ids = sorted({g.strip() for g in key[len("gpus-"):].split(",") if g.strip()},
                     key=lambda g: (not g.isdigit(), int(g) if g.isdigit() else 0, g))
        return [("gpus-all", False), *((f"gpu-{g}", True) for g in ids)]
    if key == "devices-default":
        return [("gpus-all", True)]
    return [(key, True)]


@contextmanager
def devices(key: str) -> Iterator[None]:
    """Hold a device set ("gpus-2,3", "devices-default" for every GPU, or "cpu") on this machine: another process or
    thread that wants any of its devices waits until they are free, so two servers never share a GPU (two schedules
    due in the same minute queue here). The locks are taken in one global order (`_device_locks`), so holders of
    overlapping sets cannot deadlock.

    Inside a Ray task (``EVALSVC_DEVICE_SCOPE`` names its node) Ray places the work: GPU ids are the node's own, so the
    lock is per node, and CPUs are counted by Ray, so "cpu" takes no lock."""
    import fcntl
    from contextlib import ExitStack

    scope = os.environ.get(DEVICE_SCOPE_ENV)
    if scope and key == "cpu":
        yield
        return
    mine = getattr(_held, "keys", set())
    wanted = [(f"{scope}.{name}" if scope else name, excl) for name, excl in _device_locks(key)]
    todo = [(name, excl) for name, excl in wanted if name not in mine]  # a thread may nest servers on its own devices
    with ExitStack() as stack:
        for name, exclusive in todo:
            path = _registry() / f"{name}.lock"
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = stack.enter_context(path.open("a"))
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            try:
                fcntl.flock(fh, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"evalsvc: waiting for {key}: another model server holds {name}", file=sys.stderr, flush=True)
                fcntl.flock(fh, mode)
            stack.callback(fcntl.flock, fh, fcntl.LOCK_UN)
        _held.keys = mine | {name for name, _ in todo}
        try:
            yield
        finally:
            _held.keys = mine


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
