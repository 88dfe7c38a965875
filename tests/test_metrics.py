"""Prometheus `/metrics` (issue 19, item 2): a real firing's series, outcome and errored cases, scraped over HTTP."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.config import load_config
from evalsvc.service.metrics import METRICS, serve_metrics
from evalsvc.service.schedule import fire
from evalsvc.store.db import open_engine, upgrade
from evalsvc.store.readonly import open_readonly
from evalsvc.store.schema import Firing, MetricPoint, Run
from tests.fake_endpoint import FakeEndpoint

ROOT = Path(__file__).resolve().parent.parent
SCHEDULE = "schedules: [{name: nightly, cron: '0 3 1 1 *'}]\n"  # once a year: never during a test


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _scrape(port: int) -> str:
    resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    resp.raise_for_status()
    return resp.text


def _fail_case_3(n: int, body: dict[str, Any]) -> Any:
    return (500, {}, b"boom") if body["messages"][-1]["content"] == "say 3" else None


def test_scrape_carries_the_series_outcome_and_errors_of_a_firing(echo_project: Path, fake: FakeEndpoint, store_url: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALSVC_STORE", store_url)
    upgrade(store_url)  # PostgreSQL is migrated by `evalsvc db upgrade`, never by a run
    cfg_path = echo_project / "evalsvc.yaml"
    cfg_path.write_text(cfg_path.read_text() + "  - {name: down, family: other, endpoint: {base_url: 'http://127.0.0.1:9/v1', "
                        "model: d}}\nmax_error_rate: 0.5\n" + SCHEDULE)
    fake.behaviour = _fail_case_3
    cfg = load_config(cfg_path)
    summary = fire(cfg, str(cfg_path), cfg.schedules[0], "2026-12-02T03:00Z")
    assert ("fake", "echo", "succeeded") in summary["runs"] and ("down", "echo", "failed") in summary["runs"]
    engine = open_engine(store_url)
    with Session(engine) as s:
        run = s.execute(select(Run.id, Run.variant_fingerprint, Run.suite_version, Run.n_errored)
                        .where(Run.variant_name == "fake")).one()
        points = s.execute(select(MetricPoint.metric, MetricPoint.value, MetricPoint.ci_low, MetricPoint.ci_high,
                                  MetricPoint.n).where(MetricPoint.run_id == run.id)).all()
        firing = s.execute(select(Firing.status, Firing.started_at, Firing.finished_at)).one()
    assert run.n_errored == 1 and points

    server = serve_metrics(open_readonly(store_url), "127.0.0.1", 0)
    try:
        got = _samples(_scrape(server.server_port))
    finally:
        server.shutdown()
        server.server_close()
    assert got["evalsvc_store_up"] == [({}, 1.0)]
    labels = {"variant": "fake", "suite": "echo", "fingerprint": run.variant_fingerprint, "suite_version": run.suite_version}

    def one(name: str, **extra: str) -> float:
        hits = [v for lab, v in got.get(name, []) if all(lab.get(k) == x for k, x in {**labels, **extra}.items())]
        assert len(hits) == 1, (name, extra, got.get(name))
        return hits[0]

    for p in points:  # every stored point of the firing's run, value and interval
        assert one("evalsvc_series_value", metric=p.metric) == pytest.approx(p.value, rel=1e-12, abs=1e-12)
        assert one("evalsvc_series_n", metric=p.metric) == p.n
        for name, stored in (("evalsvc_series_ci_low", p.ci_low), ("evalsvc_series_ci_high", p.ci_high)):
            if stored is not None:
                assert one(name, metric=p.metric) == pytest.approx(stored, rel=1e-12, abs=1e-12)
    assert {lab["metric"] for lab, _ in got["evalsvc_series_value"] if lab["variant"] == "fake"} == {p.metric for p in points}
    assert not [lab for lab, _ in got["evalsvc_series_value"] if lab["variant"] == "down"]  # no succeeded run: no series
    assert one("evalsvc_run_errored_cases", status="succeeded") == 1 and one("evalsvc_run_cases", status="succeeded") == 6
    down = [v for lab, v in got["evalsvc_run_cases"] if lab["variant"] == "down" and lab["status"] == "failed"]
    assert down == [6.0] or down == [0.0], got["evalsvc_run_cases"]
    assert got["evalsvc_firings"] == [({"schedule": "nightly", "status": "done"}, 1.0)] and firing.status == "done"
    (lab, took), = got["evalsvc_firing_last_duration_seconds"]
    assert lab == {"schedule": "nightly", "status": "done"}
    assert took == pytest.approx((firing.finished_at - firing.started_at).total_seconds(), abs=1e-3)
    alerts = dict((lab["kind"], v) for lab, v in got["evalsvc_alerts_open"])
    assert alerts["endpoint"] == 1 and alerts["regression"] == 0 and alerts["drift"] == 0


def test_an_unreadable_store_still_answers_the_scrape(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    engine.dispose()
    (tmp_path / "store.db").unlink()  # the tables are gone under the engine
    server = serve_metrics(engine, "127.0.0.1", 0)
    try:
        got = _samples(_scrape(server.server_port))
    finally:
        server.shutdown()
        server.server_close()
    assert got["evalsvc_store_up"] == [({}, 0.0)] and "evalsvc_series_value" not in got


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) of sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            addr, hexport = fields[1].rsplit(":", 1)
            if int(hexport, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                found.add(addr)
    return found


@pytest.mark.slow
def test_serve_binds_metrics_to_loopback_by_default(echo_project: Path) -> None:
    cfg_path = echo_project / "evalsvc.yaml"
    cfg_path.write_text(cfg_path.read_text() + SCHEDULE)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "evalsvc.cli", "serve", "-c", str(cfg_path), "--metrics-port", str(port)],
                            cwd=echo_project, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, text = time.monotonic() + 60, ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                text = _scrape(port)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert text, proc.stderr.read() if proc.poll() is not None else "no /metrics within 60 s"
        assert _listening(port) == {"0100007F"}  # 127.0.0.1 only, no wildcard and no IPv6
        assert _samples(text)["evalsvc_store_up"] == [({}, 1.0)]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"metrics on http://127.0.0.1:{port}/metrics" in err


def test_the_grafana_dashboard_reads_only_exported_metrics() -> None:
    text = (ROOT / "docs" / "grafana" / "evalsvc.json").read_text()
    board = json.loads(text)
    assert all(t["expr"] for panel in board["panels"] for t in panel.get("targets", []))
    used = set(re.findall(r"\bevalsvc_[a-z_]+", text))  # in queries, variables and legends alike
    assert used and used <= set(METRICS), used - set(METRICS)
    assert {"evalsvc_series_value", "evalsvc_series_ci_low", "evalsvc_series_ci_high", "evalsvc_alerts_open",
            "evalsvc_firings", "evalsvc_run_errored_cases"} <= used
    docs = (ROOT / "docs" / "metrics.md").read_text()
    assert all(f"`{name}`" in docs for name in METRICS)  # every exported name is documented
