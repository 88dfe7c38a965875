"""`evalsvc serve` and `evalsvc schedule`: slots, the single-scheduler lock, alerts from scheduled runs."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.cli import main
from evalsvc.config import ScheduleSpec, load_config
from evalsvc.scheduler import slot_at
from evalsvc.store.db import open_engine
from evalsvc.store.locks import single_scheduler
from evalsvc.store.schema import Run
from tests.conftest import write_config, write_suite
from tests.fake_endpoint import FakeEndpoint
from tests.test_alerts import Receiver


def test_a_late_firing_runs_under_the_slot_it_stands_for() -> None:
    spec = ScheduleSpec(name="s", cron="*/5 * * * *")
    assert slot_at(spec, datetime(2026, 11, 21, 1, 7, 30, tzinfo=UTC)) == datetime(2026, 11, 21, 1, 5, tzinfo=UTC)
    assert slot_at(spec, datetime(2026, 11, 21, 1, 10, tzinfo=UTC)) == datetime(2026, 11, 21, 1, 10, tzinfo=UTC)


def test_a_cron_with_a_seconds_field_fires_every_few_seconds_each_slot_named_apart() -> None:
    from evalsvc.scheduler import trigger
    from evalsvc.service.schedule_state import slot_name

    spec = ScheduleSpec(name="s", cron="*/3 * * * * *")
    t0 = datetime(2026, 11, 21, 1, 7, 58, tzinfo=UTC)
    times = [trigger(spec).get_next_fire_time(None, t0)]
    for _ in range(3):
        times.append(trigger(spec).get_next_fire_time(times[-1], times[-1] + timedelta(seconds=1)))
    assert [slot_name(t) for t in times] == ["2026-11-21T01:08Z", "2026-11-21T01:08:03Z", "2026-11-21T01:08:06Z",
                                             "2026-11-21T01:08:09Z"]
    assert slot_at(spec, datetime(2026, 11, 21, 1, 8, 5, 500000, tzinfo=UTC)) == times[1]


def test_invalid_cron_names_the_line(tmp_path: Path) -> None:
    write_config(tmp_path, "schedules: [{name: s, cron: '61 * * * *'}]\n")
    out = CliRunner().invoke(main, ["serve", "-c", str(tmp_path / "evalsvc.yaml")])
    assert out.exit_code == 2 and "evalsvc.yaml:1" in out.output and "invalid crontab" in out.output


CRONTABS = ["0 3 * * *", "*/5 * * * *", "0 0 1 1 *", "59 23 31 12 6", "0 9-17/2 * * mon-fri", "0 3 * jan,jul sun",
            "1,2,3 * * * *", "0 0 * * 0", "* * * * *", "0 0 L * *", "61 * * * *", "* 24 * * *", "* * 0 * *",
            "* * * 13 *", "* * * * 7", "5-1 * * * *", "*/0 * * * *", "0 3 * *", "0 3 * * * *", "a * * * *", "0 3 * foo *",
            "0 0 * * tue-mon", "1-2/3,4 * * * *", "", "0 0 29 2 *", "*/59 * * * *", "*/60 * * * *", "5/54 * * * *",
            "5/55 * * * *", "0 0 * * mon-fri/2", "0 0 * jan-mar *", "0 0 * * 1-5/2",
            "*/3 * * * * *", "60 * * * * *", "0 0 3 * * *", "*/0 * * * * *", "1-2 * * * * mon", "0 0 3 * * * *"]


@pytest.mark.parametrize("cron", CRONTABS)
def test_the_config_accepts_a_crontab_exactly_when_apscheduler_does(cron: str) -> None:
    """The schema checks cron expressions without importing APScheduler; it must agree with the scheduler that runs them."""
    from pydantic import ValidationError

    from evalsvc.scheduler import trigger

    try:
        trigger(ScheduleSpec.model_construct(name="s", cron=cron))
        runs = True
    except ValueError:
        runs = False
    try:
        ScheduleSpec(name="s", cron=cron)
        accepted = True
    except ValidationError as exc:
        accepted = False
        assert "invalid crontab expression" in str(exc)
    assert accepted == runs


def _number(body: dict[str, Any]) -> int:
    return int(re.findall(r"\d+", body["messages"][-1]["content"])[0])


def _project(tmp_path: Path, base: FakeEndpoint, cand: FakeEndpoint, receiver: Receiver, variants: str = "[base, cand]") -> Path:
    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(60))
    write_suite(tmp_path / "suites", "echo", cases)
    (tmp_path / "hook").write_text(receiver.url)
    write_config(tmp_path, f"""\
        store: sqlite:///store.db
        baselines: {{f: base}}
        alerts: {{dashboard_url: "http://dash:8501", slack: {{webhook_file: hook}}}}
        schedules: [{{name: every-minute, cron: '* * * * *', variants: {variants}}}]
        variants:
          - {{name: base, family: f, endpoint: {{base_url: "{base.base_url}", model: b}}}}
          - {{name: cand, family: f, endpoint: {{base_url: "{cand.base_url}", model: c}}}}
        """)
    return tmp_path


def test_second_scheduler_on_the_same_store_exits_with_a_clear_message(tmp_path: Path) -> None:
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        receiver = Receiver()
        project = _project(tmp_path, base, cand, receiver)
        receiver.close()
    cfg = load_config(project / "evalsvc.yaml")
    with single_scheduler(open_engine(cfg.store_url())):
        out = CliRunner().invoke(main, ["serve", "-c", str(project / "evalsvc.yaml")])
    assert out.exit_code == 2 and "already scheduling on this store" in out.output and "--wait" in out.output


def test_scheduled_regression_alerts_once_and_resolves_when_the_variant_is_removed(tmp_path: Path) -> None:
    broken = lambda body: "no idea" if _number(body) % 3 == 0 else f"echo {_number(body)}"  # noqa: E731
    receiver = Receiver()
    try:
        with FakeEndpoint() as base, FakeEndpoint(reply=broken) as cand:
            project = _project(tmp_path, base, cand, receiver)
            cfg_path = str(project / "evalsvc.yaml")
            for _ in range(3):
                out = CliRunner().invoke(main, ["schedule", "run-now", "-c", cfg_path, "every-minute"], catch_exceptions=False)
                assert out.exit_code == 0, out.output
            assert "alert: regression:cand:base" in out.output
            quality = [p for p in receiver.posts if "Quality regression" in p["blocks"][0]["text"]["text"]]
            assert [p["text"] for p in quality] == ["cand vs base: pass regressed"]  # once, across three firings
            assert "echo/pass" in json.dumps(quality[0])
            sent = len(receiver.posts)
            cfg = (project / "evalsvc.yaml").read_text()
            kept = [ln for ln in cfg.replace("variants: [base, cand]", "variants: [base]").splitlines()
                    if not ln.lstrip().startswith("- {name: cand")]
            (project / "evalsvc.yaml").write_text("\n".join(kept) + "\n")
            out = CliRunner().invoke(main, ["schedule", "run-now", "-c", cfg_path, "every-minute"], catch_exceptions=False)
        resolved = [p for p in receiver.posts[sent:] if p["blocks"][0]["text"]["text"].startswith("✅ Resolved")]
        assert [p["text"] for p in resolved] == ["cand vs base: pass regressed"] and len(receiver.posts) == sent + 1
        engine = open_engine(load_config(project / "evalsvc.yaml").store_url())
        with Session(engine) as s:
            slots = s.scalars(select(Run.slot)).all()
        assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", sl) for sl in slots)
        history = CliRunner().invoke(main, ["schedule", "history", "-c", cfg_path]).output
        assert history.count("every-minute") == 4 and "regression:cand:base" in history and "2/2 ok" in history
    finally:
        receiver.close()


def test_a_failing_endpoint_sends_an_endpoint_alert_and_no_quality_alert(tmp_path: Path) -> None:
    receiver = Receiver()
    try:
        with FakeEndpoint() as base, FakeEndpoint() as cand:
            cand.behaviour = lambda n, body: (503, {}, b"model server gone")
            project = _project(tmp_path, base, cand, receiver)
            out = CliRunner().invoke(main, ["schedule", "run-now", "-c", str(project / "evalsvc.yaml"), "every-minute"],
                                     catch_exceptions=False)
    finally:
        receiver.close()
    assert "cand                 echo                 failed" in out.output
    titles = [p["blocks"][0]["text"]["text"] for p in receiver.posts]
    assert titles == ["🟠 Endpoint failing: runs of cand are failing"]
    assert "503" in json.dumps(receiver.posts[0])


@pytest.mark.parametrize("command", [["schedule", "pause"], ["schedule", "resume"]])
def test_pause_and_resume_are_kept_in_the_store(tmp_path: Path, command: list[str]) -> None:
    with FakeEndpoint() as base, FakeEndpoint() as cand:
        receiver = Receiver()
        project = _project(tmp_path, base, cand, receiver)
        receiver.close()
    cfg_path = str(project / "evalsvc.yaml")
    runner = CliRunner()
    assert runner.invoke(main, ["schedule", "pause", "-c", cfg_path, "every-minute"]).exit_code == 0
    listed = runner.invoke(main, ["schedule", "list", "-c", cfg_path]).output
    assert "paused" in listed
    if command[1] == "resume":
        assert runner.invoke(main, ["schedule", "resume", "-c", cfg_path, "every-minute"]).exit_code == 0
        assert "paused" not in runner.invoke(main, ["schedule", "list", "-c", cfg_path]).output


@pytest.mark.slow
def test_restarting_the_service_mid_schedule_loses_no_schedule_and_repeats_no_slot(tmp_path: Path) -> None:
    """A real `evalsvc serve` on a 1-minute cron, stopped with SIGTERM after its first slot and started again."""
    import signal
    import subprocess
    import sys
    import time

    receiver = Receiver()
    try:
        with FakeEndpoint() as base, FakeEndpoint() as cand:
            project = _project(tmp_path, base, cand, receiver)
            engine = open_engine(load_config(project / "evalsvc.yaml").store_url())

            def slots() -> list[str]:
                with Session(engine) as s:
                    return list(s.scalars(select(Run.slot).where(Run.variant_name == "cand")))

            def serve_until(count: int) -> None:
                proc = subprocess.Popen([sys.executable, "-m", "evalsvc.cli", "serve", "-c", str(project / "evalsvc.yaml")],
                                        cwd=project, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                deadline = time.monotonic() + 150
                while len(slots()) < count and time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(1)
                proc.send_signal(signal.SIGTERM)
                _, err = proc.communicate(timeout=60)
                assert proc.returncode == 0, err
                assert "stopping after the current run" in err

            serve_until(1)
            serve_until(2)
            got = slots()
    finally:
        receiver.close()
    assert len(got) >= 2 and len(got) == len(set(got)), got
    listed = CliRunner().invoke(main, ["schedule", "list", "-c", str(project / "evalsvc.yaml")]).output
    assert "every-minute" in listed and "* * * * *" in listed


def test_the_service_raises_one_drift_alert_for_a_drop_after_a_rise_and_resolves_it_when_acknowledged(
        tmp_path: Path) -> None:
    """20 nightly firings (slots given explicitly, through the service layer) against one endpoint whose accuracy
    rises at firing 9 and drops at firing 13: one drift alert, for the drop, reaches Slack; the rise alerts nothing
    (an improvement); after `evalsvc drift ack` the next firing resolves it, once."""
    from evalsvc.service.schedule import fire

    state = {"rate": 0.70}

    def reply(body: dict[str, Any]) -> str:
        i = _number(body)
        return f"echo {i}" if i < state["rate"] * 100 else "no idea"

    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(100))
    receiver = Receiver()
    try:
        with FakeEndpoint(reply=reply) as fake:
            write_suite(tmp_path / "suites", "echo", cases)
            (tmp_path / "hook").write_text(receiver.url)
            config = write_config(tmp_path, f"""\
                store: sqlite:///store.db
                alerts: {{dashboard_url: "http://dash:8501", slack: {{webhook_file: hook}}}}
                drift: {{metrics: [pass], speed_metrics: []}}  # the answers change their length: speed moves too
                schedules: [{{name: nightly, cron: '0 2 * * *'}}]
                variants: [{{name: v, family: f, endpoint: {{base_url: "{fake.base_url}", model: m}}}}]
                """)
            cfg = load_config(config)
            for night in range(1, 21):
                state["rate"] = 0.70 if night < 9 else 0.85 if night < 13 else 0.40
                fire(cfg, str(config), cfg.schedules[0], f"2026-11-{night:02d}T02:00Z")
            drifts = [p for p in receiver.posts if "Drift" in p["blocks"][0]["text"]["text"]]
            acked = CliRunner().invoke(main, ["drift", "ack", "v/echo", "-c", str(config), "--note", "bad deploy, rolled back"])
            fire(cfg, str(config), cfg.schedules[0], "2026-11-21T02:00Z")
            fire(cfg, str(config), cfg.schedules[0], "2026-11-22T02:00Z")
    finally:
        receiver.close()
    assert [p["text"] for p in drifts] == ["v on echo: pass drifted down"], [p["text"] for p in receiver.posts]
    assert "http://dash:8501/drift?suite=echo&variant=v&metric=pass" in json.dumps(drifts[0])
    assert acked.exit_code == 0, acked.output
    resolved = [p["text"] for p in receiver.posts if p["blocks"][0]["text"]["text"].startswith("✅ Resolved")]
    assert [r for r in resolved if "drifted" in r] == ["v on echo: pass drifted down"]  # (the outputs moved: upstream
    # alerts come and go too; calibrating those is the upstream part of this issue)


def test_one_variant_crashing_fails_that_variant_and_the_others_still_run_compare_and_alert(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error in one variant's runs (a bug, a response shape nothing handles) fails that variant with the
    cause as an endpoint alert; the others run and the alerts of the firing go out; `evalsvc fire` exits 2."""
    from evalsvc.engine.runner import Runner
    from evalsvc.store.schema import Firing

    real = Runner.run_variant

    def crash_on_cand(self: Runner, suites: Any, variant: Any, slot: str | None = None) -> Any:
        if variant.name == "cand":
            raise TypeError("expected string or bytes-like object, got 'list'")
        return real(self, suites, variant, slot)

    monkeypatch.setattr(Runner, "run_variant", crash_on_cand)
    receiver = Receiver()
    try:
        with FakeEndpoint() as base, FakeEndpoint() as cand:
            project = _project(tmp_path, base, cand, receiver, variants="[cand, base]")
            out = CliRunner().invoke(main, ["fire", "every-minute", "-c", str(project / "evalsvc.yaml"),
                                            "--slot", "2026-12-07T03:00Z"])
            assert len(base.requests) == 60 and len(cand.requests) == 0
    finally:
        receiver.close()
    assert out.exit_code == 2, out.output
    assert "base                 echo                 succeeded" in out.output
    assert "cand                 echo                 failed" in out.output and "TypeError" in out.output
    titles = [p["blocks"][0]["text"]["text"] for p in receiver.posts]
    assert titles == ["🟠 Endpoint failing: runs of cand are failing"] and "TypeError" in json.dumps(receiver.posts)
    with Session(open_engine(load_config(project / "evalsvc.yaml").store_url())) as s:
        firing = s.scalars(select(Firing)).one()
    assert firing.status == "error" and "cand: TypeError" in (firing.error or "")
    assert firing.runs == {"cand/echo": "failed", "base/echo": "succeeded"}


def test_a_sequential_schedule_asks_only_the_cases_its_verdict_needs_alerts_and_resolves(tmp_path: Path) -> None:
    """`sequential: true`: each candidate is compared by the sequential gate (look by look, both arms), not run whole;
    its regression alerts, its recovery resolves, and neither firing asks the candidate every case."""
    state = {"broken": True}
    reply = lambda body: "no idea" if state["broken"] else f"echo {_number(body)}"  # noqa: E731
    n = 400
    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(n))
    write_suite(tmp_path / "suites", "echo", cases)
    receiver = Receiver()
    try:
        with FakeEndpoint() as base, FakeEndpoint(reply=reply) as cand:
            (tmp_path / "hook").write_text(receiver.url)
            write_config(tmp_path, f"""\
                store: sqlite:///store.db
                baselines: {{f: base}}
                alerts: {{slack: {{webhook_file: hook}}}}
                gate: {{sequential: {{looks: 5}}}}
                schedules: [{{name: nightly, cron: '0 3 * * *', sequential: true}}]
                variants:
                  - {{name: base, family: f, endpoint: {{base_url: "{base.base_url}", model: b}}}}
                  - {{name: cand, family: f, endpoint: {{base_url: "{cand.base_url}", model: c}}}}
                """)
            cfg_path = str(tmp_path / "evalsvc.yaml")
            out = CliRunner().invoke(main, ["schedule", "run-now", "-c", cfg_path, "nightly"], catch_exceptions=False)
            assert out.exit_code == 0, out.output
            assert "alert: regression:cand:base" in out.output
            asked_broken = len(cand.requests)
            assert 0 < asked_broken < n, asked_broken  # stopped at an early look
            state["broken"] = False
            out = CliRunner().invoke(main, ["schedule", "run-now", "-c", cfg_path, "nightly"], catch_exceptions=False)
            assert out.exit_code == 0, out.output
            assert 0 < len(cand.requests) - asked_broken < n, len(cand.requests) - asked_broken
        titles = [p["blocks"][0]["text"]["text"] for p in receiver.posts]
        assert sum("Quality regression" in t for t in titles) == 1, titles
        assert sum(t.startswith("✅ Resolved") for t in titles) == 1, titles
        engine = open_engine(load_config(tmp_path / "evalsvc.yaml").store_url())
        with Session(engine) as s:
            runs = s.execute(select(Run.variant_name, Run.slot)).all()
        assert all(slot.startswith("gate:seq:") for v, slot in runs if v == "cand")
        assert any(not slot.startswith("gate:") for v, slot in runs if v == "base")  # the baseline still runs whole
        history = CliRunner().invoke(main, ["schedule", "history", "-c", cfg_path]).output
        assert history.count("nightly") == 2, history
    finally:
        receiver.close()


@pytest.mark.parametrize(("schedule", "executor", "says"), [
    ("{name: n, cron: '0 3 * * *', sequential: true, compare: false}", "", "set compare: true, or drop sequential"),
    ("{name: n, cron: '0 3 * * *', sequential: true}", "executor: {type: ray}\n", "use the local executor"),
])
def test_a_sequential_schedule_it_cannot_run_is_a_config_error_saying_what_to_do(
        tmp_path: Path, schedule: str, executor: str, says: str) -> None:
    write_config(tmp_path, f"""\
        store: sqlite:///store.db
        schedules: [{schedule}]
        variants:
          - {{name: base, family: f, endpoint: {{base_url: "http://127.0.0.1:9", model: b}}}}
        """ + executor)
    with pytest.raises(Exception, match=re.escape(says)):
        load_config(tmp_path / "evalsvc.yaml")


def test_a_sequential_firing_cut_off_by_its_endpoint_resumes_its_gate_when_fired_again_asking_no_case_twice(
        tmp_path: Path) -> None:
    from evalsvc.service.schedule import fire

    n = 400
    write_suite(tmp_path / "suites", "echo", "\n".join(
        f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}' for i in range(n)))
    state = {"down_after": 120, "answered": set()}

    def behaviour(number: int, body: dict[str, Any]) -> Any:
        if state["down_after"] is not None and number > state["down_after"]:
            return 500, {}, b"the server is gone"
        state["answered"].add(_number(body))
        return None

    with FakeEndpoint() as base, FakeEndpoint() as cand:
        cand.behaviour = behaviour
        write_config(tmp_path, f"""\
            store: sqlite:///store.db
            baselines: {{f: base}}
            max_retries: 0
            gate: {{sequential: {{looks: 5}}}}
            schedules: [{{name: nightly, cron: '0 3 * * *', sequential: true}}]
            variants:
              - {{name: base, family: f, endpoint: {{base_url: "{base.base_url}", model: b}}}}
              - {{name: cand, family: f, endpoint: {{base_url: "{cand.base_url}", model: c}}}}
            """)
        cfg = load_config(tmp_path / "evalsvc.yaml")
        spec = cfg.schedules[0]
        first = fire(cfg, str(tmp_path / "evalsvc.yaml"), spec, "2026-12-01T03:00Z")
        assert ("cand", "echo", "failed") in first["runs"], first
        before, asked_before = set(state["answered"]), len(cand.requests)
        state["down_after"] = None
        again = fire(cfg, str(tmp_path / "evalsvc.yaml"), spec, "2026-12-01T03:00Z")
        assert not any(status == "failed" for *_, status in again["runs"]), again
        resent = [_number(b) for b in cand.requests[asked_before:]]
        assert resent and not set(resent) & before, sorted(set(resent) & before)  # no answered case asked again
    engine = open_engine(cfg.store_url())
    with Session(engine) as s:
        slots = {slot for v, slot in s.execute(select(Run.variant_name, Run.slot)) if v == "cand"}
    assert len(slots) == 1 and next(iter(slots)).startswith("gate:seq:")  # the same gate, resumed
