"""`evalsvc drift` on series written by real runs (stand-in endpoint whose quality drops)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from evalsvc.cli import main
from tests.conftest import write_config, write_suite
from tests.fake_endpoint import FakeEndpoint


def test_a_variant_that_gets_worse_alarms_down_and_exits_1(tmp_path: Path) -> None:
    state = {"broken": False}

    def reply(body: dict[str, Any]) -> str:
        i = int(re.findall(r"\d+", body["messages"][-1]["content"])[0])
        return "no idea" if state["broken"] and i % 3 == 0 else f"answer {i}"

    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(90))
    write_suite(tmp_path / "suites", "s", cases)
    with FakeEndpoint(reply=reply) as fake:
        write_config(tmp_path, f"""\
            store: sqlite:///store.db
            variants: [{{name: v, family: f, endpoint: {{base_url: "{fake.base_url}", model: m}}}}]
            """)
        cfg = str(tmp_path / "evalsvc.yaml")
        runner = CliRunner()
        for slot in range(9):
            state["broken"] = slot >= 6
            assert runner.invoke(main, ["run", "-c", cfg, "--slot", f"2026-11-{slot + 1:02d}T00:00Z"]).exit_code == 0
            if slot == 5:
                calm = runner.invoke(main, ["drift", "-c", cfg])
        out = runner.invoke(main, ["drift", "-c", cfg])
    assert calm.exit_code == 0 and "in control" in calm.output
    assert out.exit_code == 1, out.output
    assert re.search(r"v\s+s\s+pass\s+9\s+0\.667\s+.*ALARM down since 2026-11-0[789]", out.output)


@contextmanager
def _served(tmp_path: Path, n: int = 100, extra: str = "") -> Iterator[tuple[str, dict[str, float], FakeEndpoint]]:
    """A project whose endpoint answers the first rate x n of the n cases right (``state["rate"]``), served meanwhile."""
    state = {"rate": 1.0}

    def reply(body: dict[str, Any]) -> str:
        i = int(re.findall(r"\d+", body["messages"][-1]["content"])[0])
        return f"answer {i}" if i < state["rate"] * n else "no idea"

    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(n))
    write_suite(tmp_path / "suites", "s", cases)
    with FakeEndpoint(reply=reply) as fake:
        write_config(tmp_path, f"""\
            store: sqlite:///store.db
            variants: [{{name: v, family: f, endpoint: {{base_url: "{fake.base_url}", model: m}}}}]
            """ + extra)
        yield str(tmp_path / "evalsvc.yaml"), state, fake


def _run_nights(cfg: str, state: dict[str, float], rates: list[float], first: int = 1, variant: str = "v") -> None:
    for night, rate in enumerate(rates, start=first):
        state["rate"] = rate
        out = CliRunner().invoke(main, ["run", "-c", cfg, "-v", variant, "--slot", f"2026-11-{night:02d}T00:00Z"])
        assert out.exit_code == 0, out.output


def _nights(tmp_path: Path, rates: list[float], n: int = 100) -> str:
    """One scheduled-style run a night against an endpoint that answers the first rate x n of the n cases right."""
    with _served(tmp_path, n) as (cfg, state, _):
        _run_nights(cfg, state, rates)
    return cfg


def test_an_improvement_does_not_hide_a_later_collapse(tmp_path: Path) -> None:
    """8 nightly runs at 0.70, 4 at 0.85, 8 at 0.40: the rise alarms up, the detector restarts there, and the
    collapse after it alarms down: exit 1, naming the drop (the first alarm used to freeze the series: exit 0)."""
    out = CliRunner().invoke(main, ["drift", "-c", _nights(tmp_path, [0.70] * 8 + [0.85] * 4 + [0.40] * 8)])
    assert out.exit_code == 1, out.output
    assert re.search(r"v\s+s\s+pass\s+20\s+0\.400\s+.*ALARM down since 2026-11-1[3-9]", out.output), out.output
    assert "up 2026-11-09" in out.output or "up 2026-11-10" in out.output  # the rise is reported too, as history


def test_an_acknowledged_drop_stops_failing_and_a_pinned_reference_starts_the_series_again(tmp_path: Path) -> None:
    cfg = _nights(tmp_path, [0.9] * 6 + [0.6] * 4)
    runner = CliRunner()
    before = runner.invoke(main, ["drift", "-c", cfg])
    nothing = runner.invoke(main, ["drift", "ack", "v/s/rouge1", "-c", cfg])
    acked = runner.invoke(main, ["drift", "ack", "v/s", "-c", cfg, "--note", "new tokenizer, expected", "--by", "ana"])
    after = runner.invoke(main, ["drift", "-c", cfg])
    pinned = runner.invoke(main, ["drift", "ack", "v/s", "-c", cfg, "--reference", "2026-11-07"])
    fresh = runner.invoke(main, ["drift", "-c", cfg])
    assert before.exit_code == 1 and "ALARM down since 2026-11-07" in before.output
    assert nothing.exit_code != 0 and "no such series" in nothing.output
    assert acked.exit_code == 0 and "acknowledged by ana" in acked.output
    assert after.exit_code == 0 and "acknowledged by ana: new tokenizer, expected" in after.output
    assert pinned.exit_code == 0 and "reference pinned at 2026-11-07" in pinned.output
    assert fresh.exit_code == 0 and "warming up (4/6)" in fresh.output  # the 4 runs since the pin: a new reference


def test_a_small_drop_on_a_deterministic_endpoint_is_read_with_the_cases_own_spread(tmp_path: Path) -> None:
    """Temperature-0 answers that never move: a pass rate over these fixed cases varies far less than a fresh binomial
    draw would, so 8 nights at 0.70 then 4 at 0.62 alarm down; read with the binomial bound, as before, they did not."""
    out = CliRunner().invoke(main, ["drift", "-c", _nights(tmp_path, [0.70] * 8 + [0.62] * 4)])
    assert out.exit_code == 1, out.output
    assert re.search(r"v\s+s\s+pass\s+12\s+0\.620\s+.*ALARM down since 2026-11-(09|1[0-2])", out.output), out.output


DROP = [0.70] * 8 + [0.66] * 6  # at alpha the fixed-case detector alarms down on night 13; at alpha/2 on 14, at alpha/6 never


def test_the_cli_and_the_service_check_a_series_at_its_familys_level_and_agree(tmp_path: Path) -> None:
    """The quality family is v x s x pass (evalsvc.yaml), so the pass series is scanned at alpha however many other
    series a check looks at: `evalsvc drift -m pass`, `evalsvc drift` (speed too) and the service's check after a
    firing all alarm down on night 13, and the firing raises the drift alert. (The service used to share alpha across
    every metric of the firing, 6 series, where this drop never alarms, while the CLI alarmed.)"""
    with _served(tmp_path, extra="schedules: [{name: nightly, cron: '0 0 * * *'}]\n") as (cfg, state, _):
        _run_nights(cfg, state, DROP[:-1])
        state["rate"] = DROP[-1]
        fired = CliRunner().invoke(main, ["fire", "nightly", "-c", cfg, "--slot", "2026-11-14T00:00Z"])
    one = CliRunner().invoke(main, ["drift", "-c", cfg, "-m", "pass"])
    every = CliRunner().invoke(main, ["drift", "-c", cfg])
    assert fired.exit_code == 0 and "alert: drift:v:s:pass" in fired.output, fired.output
    for out in (one, every):
        assert out.exit_code == 1, out.output
        assert re.search(r"v\s+s\s+pass\s+14\s+0\.660\s+.*ALARM down since 2026-11-13", out.output), out.output
    assert "tokens_per_s" in every.output and "tokens_per_s" not in one.output


def test_a_stored_alarm_and_its_acknowledgement_stay_when_the_family_grows(tmp_path: Path) -> None:
    """`evalsvc drift` stores the night-13 alarm and it is acknowledged; then a second variant joins the config and
    runs, so the family doubles and each series' level halves. Rescanned at alpha/2 the alarm would sit on night 14,
    where the acknowledgement (matched by the alarm's time) no longer held: exit 1. The stored alarm stays on night 13
    and its acknowledgement names its run: exit 0."""
    with _served(tmp_path) as (cfg, state, fake):
        _run_nights(cfg, state, DROP)
        first = CliRunner().invoke(main, ["drift", "-c", cfg])
        acked = CliRunner().invoke(main, ["drift", "ack", "v/s", "-c", cfg, "--note", "known", "--by", "ana"])
        text = Path(cfg).read_text().replace("variants: [", f'variants: [{{name: w, family: f, endpoint: '
                                             f'{{base_url: "{fake.base_url}", model: m2}}}}, ')
        Path(cfg).write_text(text)
        _run_nights(cfg, state, [0.9, 0.9], first=15, variant="w")
    after = CliRunner().invoke(main, ["drift", "-c", cfg, "-m", "pass"])
    assert first.exit_code == 1 and "ALARM down since 2026-11-13" in first.output, first.output
    assert acked.exit_code == 0 and "acknowledged by ana" in acked.output, acked.output
    assert after.exit_code == 0, after.output
    assert re.search(r"v\s+s\s+pass\s+14\s+.*acknowledged by ana: known \(ALARM down since 2026-11-13", after.output)
    assert re.search(r"w\s+s\s+pass\s+2\s+.*warming up", after.output), after.output


def test_a_judges_canary_failure_rate_is_never_watched_as_a_variants_series(tmp_path: Path) -> None:
    """A judged run stores its judge's canary failure rate as a point of the variant's run. Six nights at 0/13, then
    one canary let through: that is the judge's series (judge alerts), never a variant's quality: `evalsvc drift`
    lists no such series and stays in control, and asking for it says it is not watched."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from evalsvc.config import load_config
    from evalsvc.service.runs import open_store
    from evalsvc.store.schema import MetricPoint, Run
    from evalsvc.verdicts.series import load

    cfg = _nights(tmp_path, [0.9] * 7)
    engine = open_store(load_config(cfg))
    with Session(engine) as s, s.begin():
        for k, run in enumerate(s.scalars(select(Run).order_by(Run.created_at))):
            s.add(MetricPoint(run_id=run.id, metric="judge_canary_failure_rate", run_ts=run.created_at,
                              suite_name=run.suite_name, suite_version=run.suite_version, variant_name=run.variant_name,
                              variant_fingerprint=run.variant_fingerprint, kind="continuous", higher_is_better=False,
                              value=1 / 13 if k == 6 else 0.0, n=13, ci_low=None, ci_high=None))
    every = CliRunner().invoke(main, ["drift", "-c", cfg])
    asked = CliRunner().invoke(main, ["drift", "-c", cfg, "-m", "judge_canary_failure_rate"])
    assert every.exit_code == 0 and "canary" not in every.output and "in control" in every.output, every.output
    assert asked.exit_code != 0 and "no series of this metric is watched" in asked.output, asked.output
    assert not [x for x in load(engine) if x.metric.endswith("_canary_failure_rate")]


def test_a_small_drop_in_a_score_over_fixed_cases_is_read_with_each_cases_run_to_run_noise(tmp_path: Path) -> None:
    """ROUGE-1 over 100 fixed cases whose answers keep 10 to 20 of their 20 reference words (the cases' levels spread
    by about 0.1) and each night drop one more word at random half the time (the run mean moves by about 0.0015).
    From night 9, 15 of the cases lose 2 more words: the mean falls by about 0.01, 6 run-to-run SDs but only 1 SE of a
    fresh draw of cases. Read with each case's run-to-run variance it alarms down within 3 nights; read as fresh draws
    (as every continuous series was before) it did not. Each point stores its per-case SD."""
    import hashlib

    from sqlalchemy import select

    from evalsvc.config import load_config
    from evalsvc.service.runs import open_store
    from evalsvc.store.schema import MetricPoint

    state = {"night": 0}

    def coin(*key: object) -> float:
        return int(hashlib.sha256("|".join(map(str, key)).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    def reply(body: dict[str, Any]) -> str:
        i = int(re.findall(r"\d+", body["messages"][-1]["content"])[0])
        keep = 10 + i % 11 - (coin(i, state["night"]) < 0.5) - 2 * (state["night"] >= 9 and i % 20 < 3)
        return " ".join(f"w{i}x{j}" for j in range(keep))

    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "references": ["{" ".join(f"w{i}x{j}" for j in range(20))}"], '
                      f'"checks": [{{"type": "rouge", "rouge_types": ["rouge1"]}}]}}' for i in range(100))
    write_suite(tmp_path / "suites", "s", cases)
    with FakeEndpoint(reply=reply) as fake:
        write_config(tmp_path, f"""\
            store: sqlite:///store.db
            variants: [{{name: v, family: f, endpoint: {{base_url: "{fake.base_url}", model: m}}}}]
            drift: {{metrics: [rouge1], speed_metrics: []}}
            """)
        cfg = str(tmp_path / "evalsvc.yaml")
        for night in range(1, 12):
            state["night"] = night
            out = CliRunner().invoke(main, ["run", "-c", cfg, "--slot", f"2026-11-{night:02d}T00:00Z"])
            assert out.exit_code == 0, out.output
            if night == 8:
                calm = CliRunner().invoke(main, ["drift", "-c", cfg])
    out = CliRunner().invoke(main, ["drift", "-c", cfg])
    assert calm.exit_code == 0 and "in control" in calm.output, calm.output
    assert out.exit_code == 1, out.output
    assert re.search(r"v\s+s\s+rouge1\s+11\s+.*ALARM down since 2026-11-(09|10|11)", out.output), out.output
    from sqlalchemy.orm import Session

    with Session(open_store(load_config(cfg))) as session:
        sds = session.scalars(select(MetricPoint.sd).where(MetricPoint.metric == "rouge1")).all()
    assert len(sds) == 11 and all(sd is not None and 0.05 < sd < 0.2 for sd in sds)


def test_an_acknowledgement_stored_before_it_named_the_run_still_matches_its_alarm_by_time(tmp_path: Path) -> None:
    """Marks written before acknowledgements named the alarm's run (run_id empty) match the alarm by its run time."""
    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from evalsvc.config import load_config
    from evalsvc.service.runs import open_store
    from evalsvc.store.schema import DriftMark

    cfg = _nights(tmp_path, [0.9] * 6 + [0.6] * 4)
    acked = CliRunner().invoke(main, ["drift", "ack", "v/s", "-c", cfg, "--note", "known", "--by", "ana"])
    with Session(open_store(load_config(cfg))) as s, s.begin():
        s.execute(update(DriftMark).values(run_id=None))
    after = CliRunner().invoke(main, ["drift", "-c", cfg, "-m", "pass"])
    assert acked.exit_code == 0 and "(run " in acked.output, acked.output
    assert after.exit_code == 0 and "acknowledged by ana: known (ALARM down since 2026-11-07" in after.output, after.output
