"""Model server processes on one machine: what a killed evalsvc leaves is reaped, and GPU sets that overlap queue."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from evalsvc.serving import process

SERVER = """
import json, os, signal, subprocess, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
child = subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
open(sys.argv[2], "w").write(json.dumps({"leader": os.getpid(), "child": child.pid}))

class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"{}")

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

OWNER = """
import sys, time
from pathlib import Path
from evalsvc.serving.process import free_port, launched
port = free_port()
with launched([sys.executable, sys.argv[1], str(port), sys.argv[2]], {}, Path(sys.argv[3]), port, "m", 60):
    print("up", flush=True)
    time.sleep(600)
"""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_an_engine_worker_that_outlives_its_server_is_reaped_by_the_next_launch(tmp_path: Path) -> None:
    """evalsvc is SIGKILLed; its server (the group leader) stops on the parent-death signal, but the server's child
    (an engine worker that ignores SIGTERM, as vLLM's run in the same group) lives on: reap_stale kills it."""
    (tmp_path / "server.py").write_text(SERVER)
    (tmp_path / "owner.py").write_text(OWNER)
    pids = tmp_path / "pids.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    owner = subprocess.Popen([sys.executable, str(tmp_path / "owner.py"), str(tmp_path / "server.py"), str(pids),
                              str(tmp_path / "server.log")], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "up"
        started = json.loads(pids.read_text())
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 30
        while _running(started["leader"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(started["leader"]), "the parent-death signal stops the server"
        assert _running(started["child"]), "the worker ignores SIGTERM and outlives its leader"
        reaped = process.reap_stale()
        deadline = time.monotonic() + 10
        while _running(started["child"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(started["child"]) and started["child"] in reaped
        assert not list((process._registry()).glob("*.json"))
    finally:
        for pid in (json.loads(pids.read_text()).values() if pids.exists() else []):
            try:
                os.kill(pid, signal.SIGKILL)  # what this test started, should an assertion fail first
            except ProcessLookupError:
                pass


@pytest.mark.parametrize(("first", "second"), [("gpus-0,1", "gpus-1,2"), ("gpus-0", "devices-default"),
                                               ("devices-default", "gpus-3"), ("gpus-2,0", "gpus-0,2")])
def test_device_sets_that_share_a_gpu_queue(first: str, second: str) -> None:
    """The second set waits (and says so) until the first is released."""
    holding, release, got = threading.Event(), threading.Event(), threading.Event()
    err = io.StringIO()

    def hold() -> None:
        with process.devices(first):
            holding.set()
            release.wait(60)

    def want() -> None:
        with redirect_stderr(err), process.devices(second):
            got.set()

    a = threading.Thread(target=hold)
    a.start()
    assert holding.wait(30)
    b = threading.Thread(target=want)
    b.start()
    deadline = time.monotonic() + 30
    while "waiting for" not in err.getvalue() and not got.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    queued = not got.is_set()
    release.set()
    a.join(30)
    b.join(30)
    assert queued and got.is_set() and f"waiting for {second}" in err.getvalue()


def test_disjoint_device_sets_do_not_wait_for_each_other() -> None:
    done = threading.Event()

    def other() -> None:
        with process.devices("gpus-2,3"):
            done.set()

    with process.devices("gpus-0,1"):
        t = threading.Thread(target=other)
        t.start()
        t.join(30)
        assert done.is_set()
