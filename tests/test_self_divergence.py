"""A temperature-0 run's self-divergence from the previous run of its series (top-k KL of its next-token
distributions), against the series' own noise: a model swapped behind the same URL is flagged as an upstream change
even where its answers stay the same."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session

from evalsvc.stats.self_divergence import MIN_HISTORY, MIN_KLD, excess
from evalsvc.store.db import open_engine
from evalsvc.store.schema import Run
from tests.fake_endpoint import FakeEndpoint, answer_from_prompt, word_logprobs
from tests.test_upstream import _project, _run, twenty_nights_then_a_swap

# -- the rule on a series of self-divergences ---------------------------------------------------------------------------


def test_the_series_only_learns_before_its_minimum_history() -> None:
    assert excess(5.0, [0.001] * (MIN_HISTORY - 1), 0.01) is None


def test_a_lognormal_series_is_flagged_at_the_level_of_the_unwidened_bound_and_less_at_the_default() -> None:
    """Under the model (log self-divergence normal, independent runs) the one-sided prediction bound is exceeded with
    probability exactly ``level``: 4000 seeded draws of 8-run histories land within binomial error of 0.05; the
    widened default flags fewer."""
    rng = np.random.default_rng(7)
    flags, widened = 0, 0
    for _ in range(4000):
        draws = np.exp(rng.normal(math.log(0.01), 0.4, 9))
        found = excess(float(draws[-1]), [float(v) for v in draws[:-1]], 0.05, widen=1.0)
        default = excess(float(draws[-1]), [float(v) for v in draws[:-1]], 0.05)
        assert found is not None and default is not None
        flags, widened = flags + found.flagged, widened + default.flagged
    assert abs(flags / 4000 - 0.05) < 3 * math.sqrt(0.05 * 0.95 / 4000)
    assert widened < flags / 2


def test_a_deterministic_series_flags_a_rise_past_the_floor_only() -> None:
    zeros = [0.0] * 10
    quiet, moved = excess(MIN_KLD / 2, zeros, 0.001), excess(MIN_KLD * 2, zeros, 0.001)
    assert quiet is not None and not quiet.flagged
    assert moved is not None and moved.flagged


def test_a_value_inside_the_series_noise_is_not_flagged_and_a_hundredfold_one_is() -> None:
    history = [0.002, 0.003, 0.0025, 0.0018, 0.0031, 0.0022]
    inside, swap = excess(0.0035, history, 0.00125), excess(0.2, history, 0.00125)
    assert inside is not None and not inside.flagged and inside.bound > 0.0035
    assert swap is not None and swap.flagged


# -- runs: stored self-divergence, and the flag through the service's alerts --------------------------------------------


def test_a_run_stores_its_self_divergence_from_the_previous_run_of_its_series(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:
        fake.logprobs = word_logprobs
        project = _project(tmp_path, fake, n=20)
        first, second = _run(project), _run(project)
        fake.logprobs = functools.partial(word_logprobs, sureness=0.6)
        third = _run(project)
    engine = open_engine(f"sqlite:///{project / 'store.db'}")
    expected = 0.8 * math.log(0.8 / 0.6) + 0.1 * math.log(0.05 / 0.1) + 0.1 * math.log(0.1 / 0.2)
    with Session(engine) as s:
        runs = [s.get(Run, o.run_id) for o in (first, second, third)]
        assert runs[0] is not None and (runs[0].self_kld, runs[0].self_kld_cases) == (None, None)
        assert runs[1] is not None and (runs[1].self_kld, runs[1].self_kld_cases) == (0.0, 20)
        assert runs[2] is not None and runs[2].self_kld == pytest.approx(expected, rel=1e-3)
    assert third.upstream_change is None  # one earlier self-divergence: the series is still learning its noise


def test_a_deterministic_server_swapped_for_one_with_the_same_answers_is_flagged_on_its_first_run(tmp_path: Path) -> None:
    """Identical log-probabilities every run: a history of zeros, no spread to learn; the floor decides."""
    with FakeEndpoint() as fake:
        fake.logprobs = word_logprobs
        project = _project(tmp_path, fake, n=20)
        steady = [_run(project) for _ in range(MIN_HISTORY + 1)]
        fake.logprobs = functools.partial(word_logprobs, sureness=0.6)
        swapped = _run(project)
    assert all(o.upstream_change is None for o in steady)
    assert swapped.metrics["pass"] == 1.0 and swapped.upstream_change is not None
    assert "self-divergence 0.0915 nats" in swapped.upstream_change and "temperature-0 outputs differ" not in swapped.upstream_change


def _jittered(night: dict[str, int], swapped: dict[str, bool]) -> tuple[Any, Any]:
    """A stable nondeterministic server: each run, every token's log-probabilities carry a small random jitter and a
    pseudo-random 3% of the answers are worded differently (seeded by run and case, so the test is deterministic).
    The swap answers the same words from a shifted distribution (chosen token 0.6 instead of 0.8)."""
    def seed(*parts: object) -> int:
        return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")

    def reply(body: dict[str, Any]) -> str:
        text = answer_from_prompt(body)
        return text + " ~" if seed(night["n"], text) % 100 < 3 else text

    def logprobs(body: dict[str, Any], text: str) -> dict[str, Any]:
        rng = np.random.default_rng(seed(night["n"], text, "lp"))
        sure = 0.6 if swapped["on"] else 0.8
        content = []
        for w in text.split(" "):
            chosen = min(0.95, sure * math.exp(rng.normal(0, 0.03)))
            alt = [(1 - chosen) / 4 * math.exp(rng.normal(0, 0.2)) for _ in range(2)]
            content.append({"token": w, "logprob": math.log(chosen), "top_logprobs": [
                {"token": w, "logprob": math.log(chosen)}, {"token": "x", "logprob": math.log(alt[0])},
                {"token": "y", "logprob": math.log(alt[1])}]})
        return {"content": content}

    return reply, logprobs


def test_a_stable_nondeterministic_server_is_not_flagged_in_20_firings_and_a_same_answer_swap_is_on_its_first(
        tmp_path: Path) -> None:
    night, swapped = {"n": 0}, {"on": False}
    reply, logprobs = _jittered(night, swapped)
    with FakeEndpoint(reply=reply) as fake:
        fake.logprobs = logprobs
        quiet, posts, project = twenty_nights_then_a_swap(tmp_path, fake, night, swapped, n=60)
    assert quiet == [], [p["text"] for p in quiet]
    assert [p["text"] for p in posts] == ["fake answers differently on echo"]
    assert "self-divergence" in json.dumps(posts[0])
    engine = open_engine(f"sqlite:///{project / 'store.db'}")
    with Session(engine) as s:
        runs = s.query(Run).order_by(Run.id).all()
        assert len(runs) == 21 and all(r.upstream_change is None for r in runs[:20])
        noise = [r.self_kld for r in runs[1:20] if r.self_kld is not None]
        assert len(noise) == 19
        assert 0 < min(noise) and max(noise) < 2 * min(noise), noise  # a small, stable divergence, never 0
        assert runs[20].self_kld is not None and runs[20].self_kld > 5 * max(noise)
        assert runs[20].upstream_change is not None and "self-divergence" in runs[20].upstream_change
