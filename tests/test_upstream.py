"""Temperature-0 outputs that move under an unchanged fingerprint, beyond the series' own output noise, raise
'upstream change suspected'."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evalsvc.config import load_config
from evalsvc.engine.runner import Runner
from evalsvc.engine.upstream import excess_p
from evalsvc.store.db import open_engine
from evalsvc.suites import resolve
from tests.conftest import write_config, write_suite
from tests.fake_endpoint import FakeEndpoint, answer_from_prompt
from tests.test_alerts import Receiver


def _run(project: Path):
    cfg = load_config(project / "evalsvc.yaml")
    return Runner(cfg, open_engine(cfg.store_url()), progress=False).run(resolve(cfg.suites_dir, ["echo"])[0], cfg.variants[0])


def _project(tmp_path: Path, fake: FakeEndpoint, n: int = 60, extra: str = "") -> Path:
    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(n))
    write_suite(tmp_path / "suites", "echo", cases)
    write_config(tmp_path, f"""\
        store: sqlite:///store.db
        max_error_rate: 0.5
        {extra}
        variants: [{{name: fake, family: fake, endpoint: {{base_url: "{fake.base_url}", model: fake}}}}]
        """)
    return tmp_path


def test_the_excess_test_is_fishers_exact_test() -> None:
    from scipy.stats import fisher_exact

    rng = np.random.default_rng(2)
    for _ in range(200):
        n1, n0 = int(rng.integers(1, 120)), int(rng.integers(1, 800))
        x1, x0 = int(rng.integers(0, n1 + 1)), int(rng.integers(0, n0 + 1))
        expected = fisher_exact([[x1, n1 - x1], [x0, n0 - x0]], alternative="greater")[1]
        assert excess_p(x1, n1, x0, n0) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_same_outputs_raise_nothing(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:
        project = _project(tmp_path, fake)
        runs = [_run(project) for _ in range(3)]
    assert all(r.upstream_change is None for r in runs)


def test_swapped_model_behind_the_same_endpoint_is_flagged_apart_from_quality(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:
        project = _project(tmp_path, fake)
        first, second = _run(project), _run(project)  # the series learns its output noise: none

        def swapped(body: dict[str, Any]) -> str:
            text = answer_from_prompt(body)
            return text.upper() if text.endswith(("1", "4")) else text

        fake.reply = swapped
        third = _run(project)
    assert first.upstream_change is None and second.upstream_change is None
    assert third.status == "succeeded" and third.metrics["pass"] == 1.0  # quality unchanged
    assert third.upstream_change is not None
    assert "12 of 60 temperature-0 outputs differ" in third.upstream_change and "against 0 of 60" in third.upstream_change


def test_a_case_that_errored_in_one_run_is_no_moved_output(tmp_path: Path) -> None:
    from sqlalchemy.orm import Session

    from evalsvc.store.schema import Run

    with FakeEndpoint() as fake:
        project = _project(tmp_path, fake)
        fake.behaviour = lambda k, body: (500, {}, b"boom") if "say 3" == body["messages"][-1]["content"] else None
        _run(project)
        fake.behaviour = None
        second = _run(project)  # c3 answered now: the run's outputs hash differently, yet no shared output moved
    engine = open_engine(f"sqlite:///{project / 'store.db'}")
    with Session(engine) as s:
        run = s.get(Run, second.run_id)
        assert run is not None and (run.outputs_compared, run.outputs_moved) == (59, 0)
    assert second.upstream_change is None


def _noisy(night: dict[str, int], swapped: dict[str, bool]) -> Any:
    """A nondeterministic server: on each run, a fixed pseudo-random 5% of the outputs get a different wording
    (deterministic per run and case, so the test is too); after the swap 40% of the outputs are new."""
    def reply(body: dict[str, Any]) -> str:
        text = answer_from_prompt(body)
        key = hashlib.sha256(f"{night['n']}:{text}".encode()).digest()[0]
        if swapped["on"] and hashlib.sha256(text.encode()).digest()[0] < 0.4 * 256:
            return text + " (new model)"
        return text + " ~" if key < 0.05 * 256 else text
    return reply


def twenty_nights_then_a_swap(tmp_path: Path, fake: FakeEndpoint, night: dict[str, int], swapped: dict[str, bool],
                              n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]], Path]:
    """A nightly schedule fired 20 times at ``fake`` (``night["n"]`` the night), then once more after the swap:
    the Slack posts of the 20 quiet nights, those of the night of the swap, and the project."""
    from evalsvc.service.schedule import fire

    receiver = Receiver()
    try:
        (tmp_path / "hook").write_text(receiver.url)
        project = _project(tmp_path, fake, n=n, extra="alerts: {slack: {webhook_file: hook}}\n        "
                           "drift: {alerts: false}\n        schedules: [{name: nightly, cron: '0 2 * * *'}]")
        cfg = load_config(project / "evalsvc.yaml")
        for k in range(1, 21):
            night["n"] = k
            fire(cfg, str(project / "evalsvc.yaml"), cfg.schedules[0], f"2026-11-{k:02d}T02:00Z")
        quiet = list(receiver.posts)
        swapped["on"], night["n"] = True, 21
        fire(cfg, str(project / "evalsvc.yaml"), cfg.schedules[0], "2026-11-21T02:00Z")
        return quiet, receiver.posts[len(quiet):], project
    finally:
        receiver.close()


def test_stable_output_noise_raises_no_upstream_alert_in_20_firings_and_a_swap_raises_one(tmp_path: Path) -> None:
    night, swapped = {"n": 0}, {"on": False}
    with FakeEndpoint(reply=_noisy(night, swapped)) as fake:
        quiet, posts, _ = twenty_nights_then_a_swap(tmp_path, fake, night, swapped, n=100)
    assert quiet == [], [p["text"] for p in quiet]
    assert [p["text"] for p in posts] == ["fake answers differently on echo"]
    assert "temperature-0 outputs differ" in json.dumps(posts[0])
