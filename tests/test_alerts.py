"""Slack alerts posted to a real HTTP receiver on 127.0.0.1: dedupe, resolve, 429, secrets."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.alerts import Alerter, Condition, build_sinks, run_conditions
from evalsvc.config import AlertsConfig, SlackConfig
from evalsvc.stats.comparison import Comparison
from evalsvc.store.db import open_engine
from evalsvc.store.schema import Alert
from evalsvc.verdicts.compare import Report


class Receiver:
    """A Slack-webhook stand-in: records every POST; can answer 429 with Retry-After first."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.throttle = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if outer.throttle:
                    outer.throttle -= 1
                    self.send_response(429)
                    self.send_header("Retry-After", "1")
                    self.end_headers()
                    return
                outer.posts.append(body)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/secret-token"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _alerter(tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Alerter:
    monkeypatch.setenv("EVALSVC_SLACK_WEBHOOK", receiver.url)
    return Alerter(open_engine(f"sqlite:///{tmp_path / 's.db'}"), build_sinks(AlertsConfig(slack=SlackConfig())))


REG = Condition("regression:q2:f16:all suites:pass", "regression", "q2 vs f16: pass on all suites",
                {"variant": "q2", "baseline": "f16", "metric": "pass", "delta": "-0.188 [-0.257, -0.119]",
                 "top_flips": ["records/order-1"], "link": "http://dash:8501/?view=compare"})


def test_one_alert_per_regression_across_repeated_checks_then_one_resolved(tmp_path: Path, receiver: Receiver,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    alerter = _alerter(tmp_path, receiver, monkeypatch)
    for _ in range(3):
        alerter.sync([REG], [REG.key])
    assert len(receiver.posts) == 1
    post = receiver.posts[0]
    assert post["text"] == REG.summary and post["blocks"][0]["text"]["text"].startswith("🔴 Quality regression")
    assert any("records/order-1" in b.get("text", {}).get("text", "") for b in post["blocks"])
    assert post["blocks"][-1]["elements"][0]["text"] == "<http://dash:8501/?view=compare|Open in the dashboard>"
    alerter.sync([], [REG.key])
    alerter.sync([], [REG.key])
    assert len(receiver.posts) == 2 and receiver.posts[1]["blocks"][0]["text"]["text"].startswith("✅ Resolved")


def test_unchecked_alerts_are_not_resolved(tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    alerter = _alerter(tmp_path, receiver, monkeypatch)
    alerter.sync([REG], [REG.key])
    alerter.sync([], ["regression:other:f16:all suites:pass"])
    assert len(receiver.posts) == 1


def test_endpoint_failures_alert_apart_from_quality(tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    alerter = _alerter(tmp_path, receiver, monkeypatch)
    failed = SimpleNamespace(variant="q2", suite="facts", status="failed", error="the model server died (signal 9)",
                             upstream_change=None)
    alerter.sync(*run_conditions([failed]))
    assert len(receiver.posts) == 1 and receiver.posts[0]["blocks"][0]["text"]["text"].startswith("🟠 Endpoint failing")
    assert "Quality" not in json.dumps(receiver.posts)
    ok = SimpleNamespace(variant="q2", suite="facts", status="succeeded", error=None, upstream_change=None)
    alerter.sync(*run_conditions([ok]))
    assert receiver.posts[-1]["blocks"][0]["text"]["text"].startswith("✅ Resolved")


def test_429_is_retried_after_retry_after(tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver.throttle = 1
    _alerter(tmp_path, receiver, monkeypatch).sync([REG], [REG.key])
    assert len(receiver.posts) == 1


def test_undelivered_alerts_are_retried_and_the_url_is_never_logged_or_stored(
        tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    alerter = _alerter(tmp_path, receiver, monkeypatch)
    receiver.throttle = 10  # more 429s than the sink retries
    with caplog.at_level(logging.DEBUG):
        alerter.sync([REG], [REG.key])
    assert receiver.posts == []
    receiver.throttle = 0
    alerter.sync([REG], [REG.key])
    assert len(receiver.posts) == 1
    assert "secret-token" not in caplog.text
    raw = (tmp_path / "s.db").read_bytes()
    assert b"secret-token" not in raw
    with Session(alerter.engine) as s:
        assert s.scalars(select(Alert)).one().delivered["slack"]["open"]


def test_a_newly_configured_sink_gets_the_open_alerts_not_the_whole_history(tmp_path: Path, receiver: Receiver,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 's.db'}")
    old = Condition("regression:q4:f16", "regression", "q4 vs f16: pass regressed", {"variant": "q4"})
    quiet = Alerter(engine, {})  # no sink configured yet: alerts are kept, nothing is sent
    quiet.sync([old, REG], [old.key, REG.key])
    quiet.sync([REG], [old.key, REG.key])  # q4's problem is over before Slack is set up
    monkeypatch.setenv("EVALSVC_SLACK_WEBHOOK", receiver.url)
    Alerter(engine, build_sinks(AlertsConfig(slack=SlackConfig()))).sync([REG], [REG.key])
    assert [p["text"] for p in receiver.posts] == [REG.summary]  # the open one; not q4's opened-and-resolved past


def test_an_inconclusive_comparison_does_not_resolve_an_open_regression(tmp_path: Path, receiver: Receiver,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from evalsvc.alerts import regression_conditions

    alerter = _alerter(tmp_path, receiver, monkeypatch)
    worse = Comparison("pass", "binary", 60, 1.0, 0.6, -0.4, -0.5, -0.3, 0.05, 0.05, 1.0, 0.0, "regression", 24, 0,
                       None, "m")
    unsure = replace(worse, delta=-0.05, ci_low=-0.12, ci_high=0.02, verdict="inconclusive")
    fine = replace(worse, delta=0.0, ci_low=-0.03, ci_high=0.03, verdict="pass")

    def report(c: Comparison) -> Report:
        return Report("f16", "q2", [("facts", c)], [], c.verdict)

    alerter.sync(*regression_conditions(report(worse)))
    alerter.sync(*regression_conditions(report(unsure)))  # not shown to be fine: the regression stays open
    assert len(receiver.posts) == 1
    alerter.sync(*regression_conditions(report(fine)))
    assert len(receiver.posts) == 2 and receiver.posts[1]["blocks"][0]["text"]["text"].startswith("✅ Resolved")


def test_messages_are_sent_outside_any_store_transaction(tmp_path: Path) -> None:
    """A slow webhook must not hold a store connection (and its transaction) open: while the sink sends, the
    alerter holds none."""
    engine = open_engine(f"sqlite:///{tmp_path / 's.db'}")
    held: list[int] = []

    class Probe:
        def send(self, event: Any) -> None:
            held.append(engine.pool.checkedout())

    other = Condition("endpoint:q2", "endpoint", "runs of q2 are failing", {"variant": "q2"})
    Alerter(engine, {"probe": Probe()}).sync([REG, other], [REG.key, other.key])
    assert held == [0, 0]
