"""Soak of `evalsvc serve` on PostgreSQL: its own cron every few seconds, under faults, SIGKILLs and restarts.

    python3 bench/soak.py --firings 100 --seed 7 --kill-p 0.4 --restart-p 0.2 --server-kill-p 0.2

A throw-away PostgreSQL server (run as user postgres, as tests/pg.py does), two OpenAI-compatible model servers
(baseline and candidate, each its own process: bench/soak_endpoint.py), a Slack stand-in, and one schedule of both
variants with a comparison, its cron firing every ``--every-s`` seconds (a six-field cron, the second first).
`evalsvc serve` fires every slot itself; the soak only disturbs it, as an operator's bad night would:

- each model server answers 5% of its requests with a fault drawn evenly from 5xx, a connection reset, a hang longer
  than the config's request_timeout_s (2 s), JSON cut off halfway, an answer of the wrong shape, ``content: null``
  and 429 with Retry-After: 1 (bench/soak_endpoint.py's FAULTS). evalsvc retries all but the null content by class;
  a null content (or a case whose retries run out) is stored as an errored case, never scored;
- the candidate starts to regress at a random firing and recovers a few firings later;
- at each firing's start, at random moments within its first seconds: `evalsvc serve` is SIGKILLed (``--kill-p``)
  and started again after up to 2 s, as a supervisor would (the new serve fires the cut-off firing again under its
  slot and the latest slot missed meanwhile once; the slots in between are skipped, by design); PostgreSQL is
  restarted, stopped at once as a crash does (``--restart-p``); a model server is SIGKILLed (``--server-kill-p``)
  and started again on its port within about a second, as a supervisor would: inside the endpoint's retry window
  (backoff 0.5, 1, 2, 4 s), so every request in flight or sent meanwhile gets its answer on a retry and no run fails.
  A model server down for longer than the retries fails that variant's runs and raises an endpoint alert, which is
  what an operator should see; the soak keeps its restarts short so that no endpoint alert is expected.

Once ``--firings`` firings are done, serve is stopped with SIGTERM (it finishes the firing in hand). The soak then
checks the store and prints one table row: every slot fired once and its two runs completed exactly once (no case
row lost or duplicated; an errored case is a stored row), no run or firing left running or in error, no process of
the soak left, exactly one regression alert and one resolution reached Slack and no other alert, and neither the API
key nor the webhook's token is in any log or table; slots skipped by design are counted. Exit 1 if a check fails.
tests/test_soak.py runs 10 firings; docs/reliability.md has the figures.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from evalsvc.store.db import make_engine  # noqa: E402
from evalsvc.store.schema import Alert, CaseResult, Firing, Run  # noqa: E402
from tests.pg import PostgresServer, _as_postgres  # noqa: E402
from tests.test_alerts import Receiver  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from soak_endpoint import FAULTS  # noqa: E402

N_CASES = 60
API_KEY = "sk-soak-SECRET-4f9c2a"
REQUEST_TIMEOUT_S = 2.0  # a hang costs little
HANG_S = 3.0  # longer than the request timeout: the client gives up and retries
CHECKS = ["slots", "slots_repeated", "slots_skipped", "runs_once", "lost_rows", "duplicated_rows", "errored_cases",
          "runs_running", "firings_running", "firings_not_done", "orphans", "regression_alerts", "resolutions",
          "other_alerts", "secret_leaks"]


def _restart(server: PostgresServer) -> None:
    subprocess.run(_as_postgres([str(server.bindir / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "stop"]),
                   check=True, capture_output=True)
    opts = f"-p {server.port} -k {server.data} -h 127.0.0.1 -c fsync=off"
    subprocess.run(_as_postgres([str(server.bindir / "pg_ctl"), "-D", str(server.data), "-o", opts, "-w",
                                 "-l", str(server.data / "log"), "start"]), check=True, capture_output=True)


def _wait(predicate: Any, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:  # the store is restarting
            pass
        time.sleep(0.2)
    return False


class Soak:
    def __init__(self, firings: int, seed: int, work: Path, kill_p: float, restart_p: float,
                 server_kill_p: float = 0.2, every_s: int = 6) -> None:
        self.firings, self.seed, self.rng, self.work = firings, seed, random.Random(seed), work
        self.kill_p, self.restart_p, self.server_kill_p, self.every_s = kill_p, restart_p, server_kill_p, every_s
        self.counts = {"serve_kills": 0, "server_kills": 0, "pg_restarts": 0, "serve_exits": 0}
        self.start = self.rng.randint(2, max(2, firings // 3))
        self.end = min(firings - 2, self.start + self.rng.randint(2, 4))
        self.servers: dict[str, subprocess.Popen[bytes]] = {}
        self.serve: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def run(self) -> dict[str, Any]:
        pg_root = Path(tempfile.mkdtemp(prefix="evalsvc-soak-pg-"))
        self.pg = PostgresServer(pg_root)
        self.pg.start()
        self.url = self.pg.create_database("soak")
        self.receiver = Receiver()
        try:
            self.ports = {"base": _free_port(), "cand": _free_port()}
            for role in self.ports:
                self._start_server(role)
            self._setup()
            self._serve()
            self._loop()
            self._drain()
            for role in list(self.servers):
                self._stop(self.servers.pop(role))
            return self._check()
        finally:
            for proc in [*self.servers.values(), *([self.serve] if self.serve else [])]:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            self.receiver.close()
            self.pg.stop()
            shutil.rmtree(pg_root, ignore_errors=True)

    def _start_server(self, role: str) -> None:
        self.starts += 1
        self.servers[role] = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "soak_endpoint.py"), "--port", str(self.ports[role]), "--role", role,
             "--work", str(self.work), "--seed", str(self.seed * 1000 + self.starts), "--hang-s", str(HANG_S)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _setup(self) -> None:
        (self.work / "suites").mkdir(parents=True, exist_ok=True)
        (self.work / "logs").mkdir(exist_ok=True)
        (self.work / "suites" / "echo.jsonl").write_text("".join(
            f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}\n'
            for i in range(N_CASES)))
        (self.work / "suites" / "echo.yaml").write_text("name: echo\ncases: echo.jsonl\n")
        self.config = self.work / "evalsvc.yaml"
        endpoint = "{{base_url: \"http://127.0.0.1:{}/v1\", model: {}, api_key_env: SOAK_API_KEY}}"
        self.config.write_text(f"""\
store: {self.url}
suites_dir: suites
concurrency: 4
request_timeout_s: {REQUEST_TIMEOUT_S}
baselines: {{f: base}}
drift: {{alerts: false}}
generation: {{temperature: 0.7, seed: 1, max_tokens: 16}}
alerts: {{slack: {{webhook_env: SOAK_SLACK}}}}
schedules: [{{name: soak, cron: '*/{self.every_s} * * * * *'}}]
variants:
  - {{name: base, family: f, endpoint: {endpoint.format(self.ports['base'], 'b')}}}
  - {{name: cand, family: f, endpoint: {endpoint.format(self.ports['cand'], 'c')}}}
""")
        self.env = {**os.environ, "SOAK_API_KEY": API_KEY, "SOAK_SLACK": self.receiver.url, "PYTHONPATH": str(ROOT)}
        self.engine = make_engine(self.url)
        self._evalsvc(["db", "upgrade", "-c", str(self.config)], "upgrade").wait(120)

    def _evalsvc(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        log = (self.work / "logs" / f"{name}.log").open("ab")
        return subprocess.Popen([sys.executable, "-m", "evalsvc.cli", *args], cwd=self.work, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT)

    def _serve(self) -> None:
        self.serve = self._evalsvc(["serve", "-c", str(self.config), "--metrics-port", "0", "--wait"], "serve")

    def _stop(self, proc: subprocess.Popen[bytes], limit_s: float = 300) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(limit_s)

    def _firings(self) -> tuple[int, int, int] | None:
        """(firing rows, done, running), or None while the store is away."""
        try:
            with Session(self.engine) as s:
                statuses = list(s.scalars(select(Firing.status)))
        except Exception:  # PostgreSQL is restarting
            return None
        return len(statuses), statuses.count("done"), statuses.count("running")

    def _regress(self, done: int) -> None:
        """The candidate regresses while the firing under way is in the window (set between firings, as they end)."""
        flag = self.work / "regressed"
        if self.start <= done < self.end:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)

    def _loop(self) -> None:
        seen, progress = 0, time.monotonic()
        while True:
            now = self._firings()
            if now is not None:
                started, done, _ = now
                self._regress(done)
                if done >= self.firings:
                    return
                if started > seen:  # a new firing began: disturb it
                    seen, progress = started, time.monotonic()
                    self._disturb()
            assert self.serve is not None
            if self.serve.poll() is not None:  # serve stopped on its own (its log says why): a supervisor restarts it
                self.counts["serve_exits"] += 1
                self._serve()
            if time.monotonic() - progress > 300:
                raise RuntimeError(f"no new firing for 300 s; logs in {self.work}")
            time.sleep(0.2)

    def _disturb(self) -> None:
        """SIGKILL serve, restart PostgreSQL, SIGKILL a model server: each at random, within the firing's first 4 s."""
        acts = [(self.rng.uniform(0.5, 4.0), what) for what, p in
                (("serve", self.kill_p), ("pg", self.restart_p), ("server", self.server_kill_p)) if self.rng.random() < p]
        t0 = time.monotonic()
        for at, what in sorted(acts):
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            if what == "serve":
                assert self.serve is not None
                if self.serve.poll() is None:
                    self.serve.kill()
                    self.counts["serve_kills"] += 1
                self.serve.wait()
                time.sleep(self.rng.uniform(0.0, 2.0))
                self._serve()
            elif what == "pg":
                _restart(self.pg)
                self.counts["pg_restarts"] += 1
            else:
                role = self.rng.choice(sorted(self.servers))
                self.servers[role].kill()
                self.servers[role].wait()
                self.counts["server_kills"] += 1
                time.sleep(self.rng.uniform(0.2, 1.0))
                self._start_server(role)

    def _drain(self) -> None:
        """Stop serve with SIGTERM (it finishes the firing in hand); should a firing still be running (a serve stopped
        while starting), a serve fires it again and is stopped once nothing runs."""
        assert self.serve is not None
        self._stop(self.serve)
        for attempt in range(3):
            if _wait(lambda: self._firings() is not None, 60) and (self._firings() or (0, 0, 1))[2] == 0:
                return
            self.serve = self._evalsvc(["serve", "-c", str(self.config), "--metrics-port", "0", "--wait"],
                                       f"serve-drain-{attempt}")
            _wait(lambda: (self._firings() or (0, 0, 1))[2] == 0, 240)
            self._stop(self.serve)

    def _check(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counts)
        with Session(self.engine) as s:
            slots = list(s.scalars(select(Firing.slot)))
            runs = s.execute(select(Run.id, Run.slot, Run.variant_name, Run.status)).all()
            rows = dict(s.execute(select(CaseResult.run_id, func.count()).group_by(CaseResult.run_id)).all())
            distinct = dict(s.execute(select(CaseResult.run_id, func.count(func.distinct(CaseResult.case_id)))
                                      .group_by(CaseResult.run_id)).all())
            errored = int(s.scalar(select(func.count()).select_from(CaseResult)
                                   .where(CaseResult.status != "ok")) or 0)
            alerts = s.execute(select(Alert.key, Alert.status)).all()
            statuses = list(s.scalars(select(Firing.status)))
            tables = [r[0] for r in s.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))]
            dump = "\n".join(str(row) for t in tables for row in s.execute(text(f'SELECT * FROM "{t}"')))
        faults = [line for role in ("base", "cand") if (self.work / f"faults-{role}.txt").exists()
                  for line in (self.work / f"faults-{role}.txt").read_text().split()]
        out["faults"] = len(faults)
        out["fault_kinds"] = " ".join(f"{k}:{faults.count(k)}" for k in FAULTS)
        out["slots"] = len(set(slots))
        out["slots_repeated"] = len(slots) - len(set(slots))
        out["slots_skipped"] = _skipped(slots, self.every_s)
        out["firings_running"] = statuses.count("running")
        out["firings_not_done"] = len(statuses) - statuses.count("done")
        done = {(slot, v) for _, slot, v, st in runs if st == "succeeded"}
        out["runs_once"] = f"{len(done)}/{2 * len(set(slots))}"
        out["lost_rows"] = sum(N_CASES - rows.get(rid, 0) for rid, *_ in runs)
        out["duplicated_rows"] = sum(rows.get(rid, 0) - distinct.get(rid, 0) for rid, *_ in runs)
        out["errored_cases"] = errored
        out["runs_running"] = sum(1 for *_, st in runs if st == "running")
        mine = str(self.work)
        out["orphans"] = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit() and int(p.name) != os.getpid()
                             and mine in _cmdline(p))
        regression = [st for key, st in alerts if key == "regression:cand:base"]
        out["regression_alerts"] = len(regression)
        titles = [p["blocks"][0]["text"]["text"] for p in self.receiver.posts]
        out["resolutions"] = sum(t.startswith("✅ Resolved: cand vs base") for t in titles)
        out["other_alerts"] = len(alerts) - len(regression) + len([t for t in titles if "cand vs base" not in t])
        token = self.receiver.url.rsplit("/", 1)[-1]
        logs = "".join(p.read_text(errors="replace") for p in (self.work / "logs").glob("*.log"))
        out["secret_leaks"] = sum(secret in blob for secret in (API_KEY, token) for blob in (logs, dump))
        out["ok"] = (len(set(slots)) >= self.firings and out["slots_repeated"] == 0
                     and len(done) == 2 * len(set(slots)) and len(runs) == len(done)
                     and out["lost_rows"] == 0 and out["duplicated_rows"] == 0
                     and out["runs_running"] == 0 and out["firings_not_done"] == 0 and out["orphans"] == 0
                     and regression == ["resolved"] and out["resolutions"] == 1 and out["other_alerts"] == 0
                     and out["secret_leaks"] == 0)
        out["regressed_firings"] = f"{self.start}..{self.end - 1}"
        return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _skipped(slots: list[str], every_s: int) -> int:
    """Cron slots between the first and the last fired one that did not fire: by design, one firing of a schedule runs
    at a time (a slot due meanwhile is skipped) and of a backlog left while serve was down only the latest fires."""
    times = sorted(datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ" if s.count(":") == 2 else "%Y-%m-%dT%H:%MZ")
                   for s in set(slots))
    if not times:
        return 0
    return int((times[-1] - times[0]).total_seconds()) // every_s + 1 - len(times)


def _cmdline(p: Path) -> str:
    try:
        return (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def soak(firings: int, seed: int, work: Path, kill_p: float = 0.4, restart_p: float = 0.2, server_kill_p: float = 0.2,
         every_s: int = 6) -> dict[str, Any]:
    return Soak(firings, seed, work, kill_p, restart_p, server_kill_p, every_s).run()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--firings", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--kill-p", type=float, default=0.4, help="chance serve is SIGKILLed during a firing")
    ap.add_argument("--restart-p", type=float, default=0.2, help="chance PostgreSQL is restarted during a firing")
    ap.add_argument("--server-kill-p", type=float, default=0.2, help="chance a model server is SIGKILLed during a firing")
    ap.add_argument("--every-s", type=int, default=6, help="the cron's period in seconds")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evalsvc-soak-"))
    started = time.monotonic()
    out = soak(args.firings, args.seed, work, args.kill_p, args.restart_p, args.server_kill_p, args.every_s)
    keys = ["serve_kills", "server_kills", "pg_restarts", "serve_exits", "faults", *CHECKS, "regressed_firings"]
    print("| " + " | ".join(keys) + " | seconds |")
    print("|" + "---|" * (len(keys) + 1))
    print("| " + " | ".join(str(out.get(k)) for k in keys) + f" | {time.monotonic() - started:.0f} |")
    print("faults injected by kind: " + out["fault_kinds"])
    print("all checks hold" if out["ok"] else f"a check failed; logs in {work}")
    if out["ok"]:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
