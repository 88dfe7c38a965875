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
        self.retry_after = "1"  # what a throttled answer asks to wait
        self.fail = 0  # answer this many posts with HTTP 500 first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if outer.throttle:
                    outer.throttle -= 1
                    self.send_response(429)
                    self.send_header("Retry-After", outer.retry_after)
                    self.end_headers()
                    return
                if outer.fail:
                    outer.fail -= 1
                    self.send_response(500)
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


def _worse(**changes: Any) -> Comparison:
    c = Comparison("pass", "binary", 60, 1.0, 0.6, -0.4, -0.5, -0.3, 0.05, 0.05, 1.0, 0.0, "regression", 24, 0, None, "m")
    return replace(c, **changes)


def test_a_regression_decided_by_serving_health_alone_opens_one_alert_naming_it(tmp_path: Path, receiver: Receiver,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """No quality row regressed, the candidate just answers fewer cases: the verdict is regression and the alert says
    so (a regression verdict must always make a condition, whichever part decided it)."""
    from evalsvc.alerts import regression_conditions

    fine = _worse(delta=0.0, ci_low=-0.03, ci_high=0.03, verdict="pass")
    health = _worse(metric="answered", delta=-0.05, ci_low=-0.087, ci_high=-0.028, margin=0.0)
    report = Report("f16", "q2", [("facts", fine)], [], "regression", health=health)
    firing, checked = regression_conditions(report)
    assert [c.key for c in firing] == ["regression:q2:f16"] and checked == ["regression:q2:f16"]
    assert firing[0].summary == "q2 vs f16: answered regressed"
    assert firing[0].detail["suite"] == "serving health" and "serving health" in firing[0].detail["regressed"]
    _alerter(tmp_path, receiver, monkeypatch).sync(firing, checked)
    assert [p["text"] for p in receiver.posts] == ["q2 vs f16: answered regressed"]


def test_a_regression_from_the_worst_case_bound_or_from_no_row_still_alerts() -> None:
    from evalsvc.alerts import regression_conditions

    fine = _worse(delta=0.0, ci_low=-0.03, ci_high=0.03, verdict="pass")
    bound = Report("f16", "q2", [("facts", fine)], [], "regression", bounds=[("facts", _worse(metric="pass"))])
    assert regression_conditions(bound)[0][0].detail["metric"] == "pass"
    bare = Report("f16", "q2", [("facts", fine)], [], "regression")
    firing, checked = regression_conditions(bare)
    assert [c.summary for c in firing] == ["q2 vs f16: regressed"] and checked == ["regression:q2:f16"]


def test_a_run_executed_elsewhere_neither_resolves_nor_opens_an_endpoint_alert(tmp_path: Path, receiver: Receiver,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A second firing of the same slot finds the run key busy: its outcome (the run still running in the other
    process) decides nothing, so the open endpoint alert is not resolved."""
    alerter = _alerter(tmp_path, receiver, monkeypatch)
    failed = SimpleNamespace(variant="q2", suite="facts", status="failed", error="HTTP 500", upstream_change=None)
    alerter.sync(*run_conditions([failed]))
    busy = SimpleNamespace(variant="q2", suite="facts", status="running", upstream_change=None,
                           error="being executed by another evalsvc process right now; not started twice")
    assert run_conditions([busy]) == ([], [])
    alerter.sync(*run_conditions([busy]))
    assert [p["blocks"][0]["text"]["text"] for p in receiver.posts] == ["🟠 Endpoint failing: runs of q2 are failing"]


def test_a_webhook_pasted_without_its_scheme_turns_slack_off_without_logging_it(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("EVALSVC_SLACK_WEBHOOK", "hooks.slack.com/services/T0SECRET/B0SECRET/TOKENxyz123")
    with caplog.at_level(logging.DEBUG):
        assert build_sinks(AlertsConfig(slack=SlackConfig())) == {}
    assert "EVALSVC_SLACK_WEBHOOK" in caplog.text and "https://" in caplog.text
    assert "SECRET" not in caplog.text and "TOKENxyz" not in caplog.text


def test_a_long_retry_after_is_not_slept_through_and_the_service_retries_after_it(
        tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack asks to wait 100 s: the sync returns at once with the alert undelivered; the service's retry sends it
    once that wait is over, and only once."""
    import evalsvc.alerts as alerts_mod

    clock = [1000.0]
    monkeypatch.setattr(alerts_mod.time, "monotonic", lambda: clock[0])
    alerter = _alerter(tmp_path, receiver, monkeypatch)
    receiver.throttle, receiver.retry_after = 1, "100"
    alerter.sync([REG], [REG.key])
    assert receiver.posts == []
    assert alerter.retry_undelivered() == [] and receiver.posts == []  # Retry-After not over yet
    clock[0] += 101
    assert len(alerter.retry_undelivered()) == 1 and len(receiver.posts) == 1
    assert alerter.retry_undelivered() == [] and len(receiver.posts) == 1


def test_the_service_retries_an_undelivered_alert_with_backoff(tmp_path: Path, receiver: Receiver,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import evalsvc.alerts as alerts_mod

    clock = [1000.0]
    monkeypatch.setattr(alerts_mod.time, "monotonic", lambda: clock[0])
    alerter = _alerter(tmp_path, receiver, monkeypatch)
    receiver.fail = 2  # Slack is down for the firing and the first retry
    alerter.sync([REG], [REG.key])
    assert alerter.retry_undelivered() == []  # within the first backoff: not tried
    clock[0] += alerts_mod.RETRY_BASE_S + 1
    assert alerter.retry_undelivered() == [] and receiver.fail == 0  # tried, failed: the backoff doubles
    clock[0] += alerts_mod.RETRY_BASE_S + 1
    assert alerter.retry_undelivered() == []
    clock[0] += alerts_mod.RETRY_BASE_S
    assert len(alerter.retry_undelivered()) == 1 and [p["text"] for p in receiver.posts] == [REG.summary]
