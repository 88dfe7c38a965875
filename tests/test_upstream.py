"""Temperature-0 outputs that move under an unchanged fingerprint raise 'upstream change suspected'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalsvc.config import load_config
from evalsvc.engine.runner import Runner
from evalsvc.store.db import open_engine
from evalsvc.suites import resolve
from tests.fake_endpoint import FakeEndpoint, answer_from_prompt


def _run(project: Path):
    cfg = load_config(project / "evalsvc.yaml")
    return Runner(cfg, open_engine(cfg.store_url()), progress=False).run(resolve(cfg.suites_dir, ["echo"])[0], cfg.variants[0])


def test_same_outputs_raise_nothing(echo_project: Path, fake: FakeEndpoint) -> None:
    first, second = _run(echo_project), _run(echo_project)
    assert first.upstream_change is None and second.upstream_change is None


def test_swapped_model_behind_the_same_endpoint_is_flagged_apart_from_quality(echo_project: Path, fake: FakeEndpoint) -> None:
    _run(echo_project)

    def swapped(body: dict[str, Any]) -> str:
        text = answer_from_prompt(body)
        return text.upper() if text.endswith(("1", "4")) else text

    fake.reply = swapped
    second = _run(echo_project)
    assert second.status == "succeeded" and second.metrics["pass"] == 1.0  # quality unchanged
    assert second.upstream_change is not None
    assert "2 of 6 temperature-0 outputs differ" in second.upstream_change and "c1" in second.upstream_change


def test_a_case_that_errored_in_one_run_is_no_upstream_change(echo_project: Path, fake: FakeEndpoint) -> None:
    config = echo_project / "evalsvc.yaml"
    config.write_text(config.read_text().replace("concurrency: 2", "concurrency: 2\nmax_error_rate: 0.5"))
    fake.behaviour = lambda k, body: (500, {}, b"boom") if "say 3" in str(body) else None
    first = _run(echo_project)
    assert first.status == "succeeded" and first.n_errored == 1
    fake.behaviour = None
    second = _run(echo_project)  # c3 answered now: the run's outputs hash differently, yet no shared output moved
    assert second.status == "succeeded" and second.n_errored == 0 and second.upstream_change is None
    fake.reply = lambda body: answer_from_prompt(body) + "!" if "say 3" in str(body) else answer_from_prompt(body)
    third = _run(echo_project)
    assert third.upstream_change is not None and "1 of 6 temperature-0 outputs differ" in third.upstream_change
    assert "(e.g. c3)" in third.upstream_change
