"""Soak of the scheduler service on PostgreSQL: firings under random SIGKILLs and PostgreSQL restarts.

    python3 bench/soak.py --firings 30 --seed 7

A throw-away PostgreSQL server (run as user postgres, as tests/pg.py does), two OpenAI-compatible stand-ins
(baseline and candidate, each answering 5% of requests with HTTP 500), a Slack stand-in, and a schedule of both
variants with a comparison. Each firing is `evalsvc fire NAME --slot S`, the command `evalsvc serve` runs for a slot
(a cron fires once a minute at most, so the slots here are given); the candidate starts to regress at a random
firing and recovers a few firings later. At random:

- the firing is SIGKILLed once its firing row exists (a killed serve leaves exactly that); then `evalsvc serve`
  starts, must find the firing cut off and fire it again under its slot, and is stopped with SIGTERM once nothing
  is running; that serve itself is SIGKILLed mid-recovery at random (the next serve recovers again);
- PostgreSQL is restarted (stopped at once, as a crash does) between firings, or while a serve is recovering.

At the end it checks the store and prints one table row: every slot's two runs completed exactly once (no case row
lost or duplicated), no run or firing left running, no process of the soak left, exactly one regression alert and
one resolution reached Slack and no other alert, and neither the API key nor the webhook's token is in any log or
table. Exit 1 if a check fails. tests/test_soak.py runs 10 firings; docs/reliability.md has the figures.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from evalsvc.store.db import make_engine  # noqa: E402
from evalsvc.store.schema import Alert, CaseResult, Firing, Run  # noqa: E402
from tests.fake_endpoint import FakeEndpoint  # noqa: E402
from tests.pg import PostgresServer, _as_postgres  # noqa: E402
from tests.test_alerts import Receiver  # noqa: E402

N_CASES = 60
API_KEY = "sk-soak-SECRET-4f9c2a"
CHECKS = ["slots", "runs_once", "lost_rows", "duplicated_rows", "runs_running", "firings_running", "firings_not_done",
          "orphans",
          "regression_alerts", "resolutions", "other_alerts", "secret_leaks"]


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
    def __init__(self, firings: int, seed: int, work: Path, kill_p: float, restart_p: float) -> None:
        self.firings, self.rng, self.work = firings, random.Random(seed), work
        self.kill_p, self.restart_p = kill_p, restart_p
        self.counts = {"fire_kills": 0, "serve_kills": 0, "pg_restarts": 0, "recoveries": 0}
        self.regressed = False
        self.start = self.rng.randint(2, max(2, firings // 3))
        self.end = min(firings - 2, self.start + self.rng.randint(2, 4))

    def reply(self, body: dict[str, Any]) -> str:
        import re

        n = int(re.findall(r"\d+", body["messages"][-1]["content"])[0])
        return "no idea" if self.regressed and n % 3 == 0 else f"echo {n}"

    def fault(self, n: int, body: dict[str, Any]) -> Any:
        return (500, {}, b"injected fault") if self.rng.random() < 0.05 else None

    def run(self) -> dict[str, Any]:
        pg_root = Path(tempfile.mkdtemp(prefix="evalsvc-soak-pg-"))
        self.pg = PostgresServer(pg_root)
        self.pg.start()
        self.url = self.pg.create_database("soak")
        receiver = Receiver()
        try:
            with FakeEndpoint(reply=lambda b: f"echo {b['messages'][-1]['content'].split()[-1]}") as base, \
                    FakeEndpoint(reply=self.reply) as cand:
                base.behaviour = cand.behaviour = self.fault
                self.receiver = receiver
                self._setup(base.base_url, cand.base_url, receiver.url)
                for i in range(self.firings):
                    self.regressed = self.start <= i < self.end
                    self._fire(i)
                return self._check()
        finally:
            receiver.close()
            self.pg.stop()
            shutil.rmtree(pg_root, ignore_errors=True)

    def _setup(self, base_url: str, cand_url: str, hook: str) -> None:
        (self.work / "suites").mkdir(parents=True, exist_ok=True)
        (self.work / "logs").mkdir(exist_ok=True)
        (self.work / "suites" / "echo.jsonl").write_text("".join(
            f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}\n'
            for i in range(N_CASES)))
        (self.work / "suites" / "echo.yaml").write_text("name: echo\ncases: echo.jsonl\n")
        self.config = self.work / "evalsvc.yaml"
        endpoint = "{{base_url: \"{}\", model: {}, api_key_env: SOAK_API_KEY}}"
        self.config.write_text(f"""\
store: {self.url}
suites_dir: suites
concurrency: 4
baselines: {{f: base}}
drift: {{alerts: false}}
generation: {{temperature: 0.7, seed: 1, max_tokens: 16}}
alerts: {{slack: {{webhook_env: SOAK_SLACK}}}}
schedules: [{{name: soak, cron: '0 3 1 1 *'}}]
variants:
  - {{name: base, family: f, endpoint: {endpoint.format(base_url, 'b')}}}
  - {{name: cand, family: f, endpoint: {endpoint.format(cand_url, 'c')}}}
""")
        self.env = {**os.environ, "SOAK_API_KEY": API_KEY, "SOAK_SLACK": hook, "PYTHONPATH": str(ROOT)}
        self.engine = make_engine(self.url)
        self._evalsvc(["db", "upgrade", "-c", str(self.config)], "upgrade").wait(120)

    def _evalsvc(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        log = (self.work / "logs" / f"{name}.log").open("ab")
        return subprocess.Popen([sys.executable, "-m", "evalsvc.cli", *args], cwd=self.work, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT)

    def _running(self) -> int:
        with Session(self.engine) as s:
            return int(s.scalar(select(func.count()).select_from(Firing).where(Firing.status == "running")) or 0)

    def _maybe_restart(self) -> None:
        if self.rng.random() < self.restart_p:
            _restart(self.pg)
            self.counts["pg_restarts"] += 1

    def _fire(self, i: int) -> None:
        slot = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%MZ")
        self._maybe_restart()
        proc = self._evalsvc(["fire", "soak", "-c", str(self.config), "--slot", slot], f"fire-{i}")
        if self.rng.random() < self.kill_p:
            def has_row() -> bool:
                with Session(self.engine) as s:
                    return s.scalars(select(Firing.id).where(Firing.slot == slot)).first() is not None

            _wait(lambda: has_row() or proc.poll() is not None, 60)
            time.sleep(self.rng.uniform(0.0, 2.0))
            if proc.poll() is None:
                proc.kill()
                self.counts["fire_kills"] += 1
            proc.wait()
            self._recover(i)
        else:
            proc.wait(300)
            if self._running():  # it lost the store (a restart is not in flight here): a serve picks it up
                self._recover(i)

    def _recover(self, i: int) -> None:
        """`evalsvc serve` until no firing is running; SIGKILLed at random once on the way (the next one goes on)."""
        self.counts["recoveries"] += 1
        for attempt in range(4):
            serve = self._evalsvc(["serve", "-c", str(self.config), "--metrics-port", "0"], f"serve-{i}-{attempt}")
            if attempt == 0 and self.rng.random() < self.kill_p:
                time.sleep(self.rng.uniform(2.0, 4.0))
                if serve.poll() is None:
                    serve.kill()
                    self.counts["serve_kills"] += 1
                serve.wait()
                continue
            if self.rng.random() < self.restart_p:
                time.sleep(self.rng.uniform(2.0, 4.0))
                _restart(self.pg)
                self.counts["pg_restarts"] += 1
            done = _wait(lambda serve=serve: self._running() == 0 or serve.poll() is not None, 240)
            serve.send_signal(signal.SIGTERM)
            serve.wait(120)
            if done and self._running() == 0:
                return

    def _check(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counts)
        with Session(self.engine) as s:
            slots = sorted(set(s.scalars(select(Firing.slot))))
            runs = s.execute(select(Run.id, Run.slot, Run.variant_name, Run.status)).all()
            rows = dict(s.execute(select(CaseResult.run_id, func.count()).group_by(CaseResult.run_id)).all())
            distinct = dict(s.execute(select(CaseResult.run_id, func.count(func.distinct(CaseResult.case_id)))
                                      .group_by(CaseResult.run_id)).all())
            alerts = s.execute(select(Alert.key, Alert.status)).all()
            statuses = list(s.scalars(select(Firing.status)))
            tables = [r[0] for r in s.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))]
            dump = "\n".join(str(row) for t in tables for row in s.execute(text(f'SELECT * FROM "{t}"')))
        out["slots"] = len(slots)
        out["firings_running"] = statuses.count("running")
        out["firings_not_done"] = len(statuses) - statuses.count("done")
        done = {(slot, v) for _, slot, v, st in runs if st == "succeeded"}
        out["runs_once"] = f"{len(done)}/{2 * self.firings}"
        out["lost_rows"] = sum(N_CASES - rows.get(rid, 0) for rid, *_ in runs)
        out["duplicated_rows"] = sum(rows.get(rid, 0) - distinct.get(rid, 0) for rid, *_ in runs)
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
        out["ok"] = (len(done) == 2 * self.firings and out["lost_rows"] == 0 and out["duplicated_rows"] == 0
                     and out["runs_running"] == 0 and out["firings_not_done"] == 0 and out["orphans"] == 0
                     and regression == ["resolved"] and out["resolutions"] == 1 and out["other_alerts"] == 0
                     and out["secret_leaks"] == 0 and len(slots) == self.firings)
        out["regressed_firings"] = f"{self.start}..{self.end - 1}"
        return out


def _cmdline(p: Path) -> str:
    try:
        return (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def soak(firings: int, seed: int, work: Path, kill_p: float = 0.3, restart_p: float = 0.15) -> dict[str, Any]:
    return Soak(firings, seed, work, kill_p, restart_p).run()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--firings", type=int, default=30)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--kill-p", type=float, default=0.3, help="chance a firing (and a recovering serve) is SIGKILLed")
    ap.add_argument("--restart-p", type=float, default=0.15, help="chance of a PostgreSQL restart per step")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="evalsvc-soak-"))
    started = time.monotonic()
    out = soak(args.firings, args.seed, work, args.kill_p, args.restart_p)
    keys = ["fire_kills", "serve_kills", "pg_restarts", "recoveries", *CHECKS, "regressed_firings"]
    print("| " + " | ".join(keys) + " | seconds |")
    print("|" + "---|" * (len(keys) + 1))
    print("| " + " | ".join(str(out.get(k)) for k in keys) + f" | {time.monotonic() - started:.0f} |")
    print("all checks hold" if out["ok"] else f"a check failed; logs in {work}")
    if out["ok"]:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
