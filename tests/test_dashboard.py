"""Every dashboard page under Streamlit's AppTest, on a seeded store (SQLite and PostgreSQL) and on real runs."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest
from click.testing import CliRunner
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session
from streamlit import dataframe_util
from streamlit.testing.v1 import AppTest

from evalsvc.cli import main
from evalsvc.dashboard import charts, queries
from evalsvc.dashboard.diff import CHANGED, side_by_side
from evalsvc.errors import StoreError
from evalsvc.store.db import open_engine, upgrade
from evalsvc.store.readonly import open_readonly
from evalsvc.store.schema import Alert
from tests.conftest import ROOT, write_config, write_suite
from tests.dashboard_store import answer, seeded_pair_project, seeded_project
from tests.fake_endpoint import FakeEndpoint

PAGES = ROOT / "evalsvc" / "dashboard" / "views"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("dash")
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'store.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database(f"d_{uuid.uuid4().hex[:10]}")
    yield seeded_project(folder, url)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A team's first store: the baseline and one candidate on two suites."""
    folder = tmp_path_factory.mktemp("pair")
    return seeded_pair_project(folder, f"sqlite:///{folder / 'store.db'}")


def _page(name: str, config: Path, monkeypatch: pytest.MonkeyPatch, **params: str | list[str]) -> AppTest:
    monkeypatch.setenv("EVALSVC_CONFIG", str(config))
    at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=60)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _charts(at: AppTest) -> list[tuple[dict, list[pd.DataFrame]]]:
    out = []
    for chart in at.get("vega_lite_chart"):
        frames = [dataframe_util.convert_arrow_bytes_to_pandas_df(d.data.data) for d in chart.proto.datasets]
        out.append((json.loads(chart.proto.spec), frames))
    return out


def _marks(spec: dict) -> list[str]:
    return [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in spec.get("layer", [spec])]


def test_overview_flags_the_regression_the_failed_run_and_the_upstream_change(project: Path, monkeypatch) -> None:
    at = _page("overview", project, monkeypatch)
    errors = {e.value.split("**")[1]: e.value for e in at.error}
    # q2_k regressed on every suite; q4_0 (-0.08) only where the three suites were pooled: every suite decides now,
    # and no suite alone shows it worse, so it is inconclusive (not shown to be no worse), not a regression
    assert sorted(errors) == ["Regression: smollm2-q2_k vs smollm2-f16"]
    q2 = errors["Regression: smollm2-q2_k vs smollm2-f16"]
    pooled_delta = float(re.search(r"all suites pooled: pass Δ (\S+) \[", q2).group(1))
    assert -0.35 < pooled_delta < -0.2 and all(f"{s}: pass Δ" in q2 for s in ("facts", "records", "summaries"))
    assert "compare?baseline=smollm2-f16&candidate=smollm2-q2_k" in q2
    assert set(at.dataframe[-1].value.query("variant == 'smollm2-q4_0'")["status"]) == {"inconclusive"}
    warnings = " ".join(w.value for w in at.warning)
    assert "Failed run: api-upstream on facts" in warnings and "not a quality verdict" in warnings
    assert "Upstream change: smollm2-q8_0 on records" in warnings
    assert {m.label: m.value for m in at.metric} == {"Regressions": "1", "Failed runs": "3", "Upstream changes": "1",
                                                     "Stale": "3"}
    (spec, (data,)), = _charts(at)
    assert _marks(spec) == ["rect", "text"] and spec["layer"][0]["encoding"]["color"]["field"] == "status"
    cells = {(r.variant, r.suite): r.status for r in data.itertuples()}
    assert cells[("smollm2-q2_k", "records")] == "regression" and cells[("api-upstream", "facts")] == "failed run"
    assert cells[("smollm2-f16", "facts")] == "baseline" and cells[("smollm2-q8_0", "records")] == "upstream change"
    pooled = at.dataframe[0].value
    shown = dict(zip(pooled["candidate"], pooled["overall"], strict=True))
    stored = queries.latest_verdicts(open_engine(_url(project)))
    assert shown == dict(zip(stored["candidate"], stored["overall"], strict=True))  # the verdicts as stored
    assert shown["smollm2-q2_k"] == "regression"


def test_overview_filters_come_from_the_url(project: Path, monkeypatch) -> None:
    at = _page("overview", project, monkeypatch, variant="smollm2-q8_0", suite=["facts", "records"])
    assert not at.error
    assert at.multiselect[0].value == ["smollm2-q8_0"] and at.multiselect[1].value == ["facts", "records"]
    (_, (data,)), = _charts(at)
    assert set(data["variant"]) == {"smollm2-q8_0"} and set(data["suite"]) == {"facts", "records"}


def test_trends_draw_bands_the_dashed_baseline_and_event_markers(project: Path, monkeypatch) -> None:
    at = _page("trends", project, monkeypatch, suite="records", metric="pass", days="all")
    (spec, frames), = _charts(at)
    assert _marks(spec) == ["area", "line", "line", "text", "point"]  # the baseline's line and label after the others'
    band, points = spec["layer"][0], spec["layer"][-1]
    assert band["encoding"]["y"]["field"] == "ci_low" and band["encoding"]["y2"]["field"] == "ci_high"
    series = next(f for f in frames if "role" in f.columns and f["role"].nunique() == 2)
    assert set(series[series["role"] == "baseline"]["variant"]) == {"smollm2-f16"}
    assert len(series[series["variant"] == "smollm2-q2_k"]) == 10
    events = at.dataframe[0].value
    found = {(r.event, r.variant) for r in events.itertuples()}
    assert set(events[events["event"] == "regression"]["detail"]) == {"vs smollm2-f16"}  # against whom it regressed
    assert {("regression", "smollm2-q2_k"), ("upstream change", "smollm2-q8_0"), ("new checkpoint", "smollm2-q4_0")} <= found
    assert points["encoding"]["shape"]["field"] == "event"


def _colour_of(layer: dict) -> dict[str, str]:
    scale = layer["encoding"]["color"]["scale"]
    return dict(zip(scale["domain"], scale["range"], strict=True))


def test_trends_read_at_a_glance_utc_axis_distinct_colours_and_the_baseline_on_top(project: Path, monkeypatch) -> None:
    """Ten daily runs: the axis is on a UTC scale (the browser's time zone cannot shift it), 24-hour with the date;
    each variant has its own categorical colour (not the theme's near-identical blues); the baseline is dark, dashed,
    drawn after the other lines and labelled."""
    at = _page("trends", project, monkeypatch, suite="records", metric="pass", days="all")
    (spec, frames), = _charts(at)
    band, line, base, label, _ = spec["layer"]
    for layer in spec["layer"]:
        x = layer["encoding"]["x"]
        assert x["scale"] == {"type": "utc"} and x["axis"]["format"] == "%Y-%m-%d %H:%M" and "UTC" in x["title"]
    colours = _colour_of(line)
    assert colours == _colour_of(band) == _colour_of(base)
    assert len(colours) == 5 and len(set(colours.values())) == 5 and set(colours.values()) <= set(charts.TABLEAU10) | {
        charts.BASELINE_COLOUR}
    assert colours["smollm2-f16"] == charts.BASELINE_COLOUR
    assert base["mark"]["strokeDash"] == charts.BASELINE_DASH and "strokeDash" not in line["mark"]
    assert base["mark"]["strokeWidth"] > line["mark"]["strokeWidth"]
    baseline_rows = next(f for f in frames if "role" in f.columns and set(f["role"]) == {"baseline"})
    assert set(baseline_rows["variant"]) == {"smollm2-f16"} and str(baseline_rows["run_ts"].dt.tz) == "UTC"
    labels = next(f for f in frames if "label" in f.columns)
    assert list(labels["label"]) == ["baseline"] and label["mark"]["color"] == charts.BASELINE_COLOUR
    filtered = _page("trends", project, monkeypatch, suite="records", metric="pass", days="all",
                     variant=["smollm2-q2_k", "smollm2-q8_0"])
    (narrow, _), = _charts(filtered)
    assert _colour_of(narrow["layer"][1]) == {v: colours[v] for v in ("smollm2-q2_k", "smollm2-q8_0")}  # same colours
    drift = _page("drift", project, monkeypatch, suite="records", variant="smollm2-q2_k", metric="pass")
    values = _charts(drift)[0][0]
    assert values["layer"][1]["mark"]["color"] == colours["smollm2-q2_k"]  # the same variant, the same colour


def test_a_time_axis_within_one_utc_day_reads_24_hour_time_and_the_date_once_runs_span_days() -> None:
    evening = pd.Series(pd.to_datetime(["2026-11-30 18:22", "2026-11-30 19:05"], utc=True))
    x = charts.time_x(evening).to_dict()
    assert x["axis"]["format"] == "%H:%M" and x["scale"] == {"type": "utc"}  # 18:22, never 06:22
    overnight = pd.Series(pd.to_datetime(["2026-11-30 23:00", "2026-12-01 01:00"]))  # naive: UTC from the store
    assert charts.time_x(overnight).to_dict()["axis"]["format"] == "%Y-%m-%d %H:%M"
    assert charts.time_x(pd.Series(pd.to_datetime(["2026-11-30 23:30"], utc=True).tz_convert("US/Pacific"))).to_dict()[
        "axis"]["format"] == "%H:%M"
    assert charts.utc(overnight).iloc[0] == pd.Timestamp("2026-11-30 23:00", tz="UTC")


def test_a_variant_keeps_its_colour_whatever_else_is_in_the_store_list() -> None:
    colours = charts.variant_colours(["b", "a", "c"], {"a"})
    assert colours == {"a": charts.BASELINE_COLOUR, "b": charts.TABLEAU10[1], "c": charts.TABLEAU10[2]}
    many = charts.variant_colours([f"v{i:02d}" for i in range(12)])
    assert len(set(many.values())) == 12  # past ten variants, tableau20


def test_trends_window_comes_from_the_url(project: Path, monkeypatch) -> None:
    at = _page("trends", project, monkeypatch, suite="facts", metric="rouge_l", variant="smollm2-f16", days="7")
    (_, frames), = _charts(at)
    series = next(f for f in frames if "role" in f.columns)
    assert set(series["variant"]) == {"smollm2-f16"} and 6 <= len(series) <= 8  # one run a day, 10 days seeded


def test_compare_opens_from_the_alert_link_with_deltas_flips_and_the_cases_side_by_side(project: Path, monkeypatch) -> None:
    with Session(open_engine(_url(project))) as s:
        link = s.scalars(select(Alert.detail)).all()
    url = next(d["link"] for d in link if d.get("variant") == "smollm2-q2_k")
    assert urlparse(url).path == "/compare"
    params = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
    at = _page("compare", project, monkeypatch, **params)
    assert [e.value.split("**")[1] for e in at.error] == ["smollm2-q2_k vs smollm2-f16: regression"]
    (spec, frames), = _charts(at)
    deltas = next(f for f in frames if "scope" in f.columns)
    assert _marks(spec) == ["rule", "point", "tick", "rule"] and spec["layer"][2]["encoding"]["x"]["field"] == "neg_margin"
    pooled = deltas[(deltas["scope"] == "all suites") & (deltas["metric"] == "pass")].iloc[0]
    assert pooled["verdict"] == "regression" and pooled["ci_high"] < -pooled["margin"]
    flips = at.dataframe[1].value
    assert len(flips) > 0 and set(flips["direction"]) <= {"pass → fail", "fail → pass"}  # in words, not down/up
    first_down = flips[flips["direction"] == "pass → fail"].iloc[0]
    assert at.selectbox(key="pick_case").value == first_down["case_id"]  # flipped cases come first
    shown = " ".join(h.proto.body for h in at.get("html"))
    assert "(wrong)" in shown and CHANGED.format(" (wrong)") in shown  # the candidate's extra words highlighted
    assert any("context of" in c.value for c in at.code)


def test_arena_ranks_by_bradley_terry_with_intervals_and_a_win_matrix(project: Path, monkeypatch) -> None:
    """One leaderboard per judge identity (the seeded store has two rubrics under the judge name "checks", ranking
    the variants in opposite orders), and a variant re-quantized since is two models, each shown with its fingerprint:
    grouping by names mixed both (the old rubric's battles pulled the ratings together)."""
    at = _page("arena", project, monkeypatch)
    board = at.dataframe[0].value
    assert set(board["model"][:2]) == {"smollm2-f16", "smollm2-q8_0"} and board.iloc[-1]["model"] == "smollm2-q2_k"  # 0.80, 0.79
    assert (board["ci_low"] <= board["rating"]).all() and (board["rating"] <= board["ci_high"]).all()
    assert board.set_index("model").loc["smollm2-f16", "rating"] == pytest.approx(1000.0)
    checkpoints = board[board["model"].str.startswith("smollm2-q4_0")]
    assert len(checkpoints) == 2 and checkpoints["fingerprint"].nunique() == 2
    assert all(m == f"smollm2-q4_0 ({fp[:8]})" for m, fp in zip(checkpoints["model"], checkpoints["fingerprint"], strict=True))
    (lb_spec, _), (wm_spec, (matrix,)) = _charts(at)
    assert _marks(lb_spec) == ["rule", "point"] and _marks(wm_spec) == ["rect", "text"]
    assert len(matrix) == 14 and matrix["win_rate"].between(0, 1).all()  # 4 x 3 pairs, and the old q4_0 against f16
    pair = matrix.set_index(["model", "opponent"])["win_rate"]
    assert pair[("smollm2-f16", "smollm2-q2_k")] == pytest.approx(1 - pair[("smollm2-q2_k", "smollm2-f16")])
    judges = at.selectbox(key="pick_judge")
    assert len(judges.options) == 2 and "rubric checks (" in judges.value  # the newest identity first
    judges.set_value(next(o for o in judges.options if "rubric checks-v" in o)).run()
    older = at.dataframe[0].value
    assert older.iloc[0]["model"] == "smollm2-q2_k" and len(older) == 4  # the other rubric's own order, on its own


def test_runs_page_lists_failures_durations_and_the_alerts_sent(project: Path, monkeypatch) -> None:
    at = _page("runs", project, monkeypatch, variant="api-upstream")
    assert "failed runs: endpoint or infrastructure problems" in at.warning[0].value
    runs = at.dataframe[0].value
    assert set(runs["variant"]) == {"api-upstream"} and (runs["status"] == "failed").sum() == 6
    assert runs["duration_s"].between(30, 90).all()
    assert [e.value.split(":")[0] for e in at.error] == ["open endpoint alert"]
    (spec, _), = _charts(at)
    assert spec["encoding"]["y"]["field"] == "duration_s"
    x = spec["encoding"]["x"]
    assert x["scale"] == {"type": "utc"} and x["axis"]["format"] == "%Y-%m-%d %H:%M" and x["title"] == "run time (UTC)"
    assert _colour_of(spec) == charts.RUN_STATUS_COLOURS  # every run status keyed, not only those on screen
    at = _page("runs", project, monkeypatch, status="succeeded")
    assert set(at.dataframe[0].value["status"]) == {"succeeded"}


def test_an_empty_store_gets_a_hint_not_a_traceback(tmp_path: Path, monkeypatch) -> None:
    config = write_config(tmp_path, "store: sqlite:///empty.db\n")
    open_engine(f"sqlite:///{tmp_path / 'empty.db'}").dispose()
    for page in ("overview", "trends", "drift", "compare", "tradeoff", "arena", "runs"):
        at = _page(page, config, monkeypatch)
        assert not at.error, page


def _url(config: Path) -> str:
    from evalsvc.config import load_config

    return load_config(config).store_url()


def test_the_dashboard_connection_cannot_write(project: Path) -> None:
    engine = open_readonly(_url(project))
    with pytest.raises((OperationalError, DBAPIError)), engine.begin() as conn:
        conn.execute(text("DELETE FROM alerts"))
    with Session(open_engine(_url(project))) as s:
        assert s.scalars(select(Alert)).all()


def test_a_readonly_role_reads_every_page_and_writes_nothing(postgres, tmp_path: Path, monkeypatch) -> None:
    url = postgres.create_database(f"r_{uuid.uuid4().hex[:10]}")
    config = seeded_project(tmp_path, url)
    out = CliRunner().invoke(main, ["db", "readonly-role", "dash_reader", "-c", str(config)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    reader = url.replace("postgres@", "dash_reader@")
    monkeypatch.setenv("EVALSVC_DASHBOARD_STORE", reader)
    assert len(_page("overview", config, monkeypatch).error) == 1
    plain = open_engine(reader)  # even without the dashboard's read-only sessions, the role cannot write
    with pytest.raises(DBAPIError, match=r"permission denied|read-only transaction"), plain.begin() as conn:
        conn.execute(text("UPDATE alerts SET status = 'resolved'"))
    with plain.connect() as conn:
        conn.execute(text("SET default_transaction_read_only = off"))
        conn.commit()  # the next transaction may write, as far as the session goes: the grants still refuse
        with pytest.raises(DBAPIError, match="permission denied"):
            conn.execute(text("INSERT INTO firings (schedule, slot, started_at, status, runs, alerts) "
                              "VALUES ('x', 'x', now(), 'done', '{}', '{}')"))


def test_the_dashboard_refuses_a_store_behind_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0005")
    with pytest.raises(StoreError, match="evalsvc db upgrade"):
        open_readonly(url)


def test_side_by_side_highlights_changed_words_and_escapes_html() -> None:
    left, right = side_by_side("the answer is 42", "the answer is <b>43</b>")
    assert "&lt;b&gt;43&lt;/b&gt;" in right and "<b>" not in right
    assert CHANGED.format("42") in left and "the answer is " in left


def test_overview_of_real_runs_through_evalsvc_run(tmp_path: Path, monkeypatch) -> None:
    """No seeding: `evalsvc run` on two stand-in endpoints, one of which answers a third of the cases wrong."""
    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(60))
    write_suite(tmp_path / "suites", "echo", cases)

    def broken(body: dict) -> str:
        n = int(body["messages"][-1]["content"].split()[-1])
        return "no idea" if n % 3 == 0 else f"echo {n}"

    with FakeEndpoint() as base, FakeEndpoint(reply=broken) as cand:
        config = write_config(tmp_path, f"""\
            store: sqlite:///store.db
            max_retries: 0
            baselines: {{f: base}}
            variants:
              - {{name: base, family: f, endpoint: {{base_url: "{base.base_url}", model: b}}}}
              - {{name: cand, family: f, endpoint: {{base_url: "{cand.base_url}", model: c}}}}
            """)
        out = CliRunner().invoke(main, ["run", "-c", str(config)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    at = _page("overview", config, monkeypatch)
    assert [e.value.split("**")[1] for e in at.error] == ["Regression: cand vs base"]
    at = _page("compare", config, monkeypatch, candidate="cand")
    assert at.selectbox(key="pick_baseline").value == "base"  # the family's baseline by default
    assert (at.dataframe[1].value["direction"] == "pass → fail").sum() == 20


def test_quality_vs_speed_places_each_candidate_by_its_paired_delta_and_speed_ratio(tmp_path: Path, monkeypatch) -> None:
    """Real runs on stand-in endpoints: 'slow' is as right as the baseline and 30 ms slower per request, 'wrong' as
    fast and a third wrong. The page plots each with its quality delta and interval against its tokens/s ratio."""
    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(30))
    write_suite(tmp_path / "suites", "echo", cases)
    def broken(body: dict) -> str:
        n = int(body["messages"][-1]["content"].split()[-1])
        return "no idea" if n % 3 == 0 else f"echo {n}"

    with FakeEndpoint() as base, FakeEndpoint(delay_s=0.15) as slow, FakeEndpoint(reply=broken) as wrong:
        config = write_config(tmp_path, f"""\
            store: sqlite:///store.db
            max_retries: 0
            baselines: {{f: base}}
            variants:
              - {{name: base, family: f, endpoint: {{base_url: "{base.base_url}", model: b}}}}
              - {{name: slow, family: f, endpoint: {{base_url: "{slow.base_url}", model: s}}}}
              - {{name: wrong, family: f, endpoint: {{base_url: "{wrong.base_url}", model: w}}}}
            """)
        out = CliRunner().invoke(main, ["run", "-c", str(config)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    at = _page("tradeoff", config, monkeypatch)
    (spec, frames), = _charts(at)
    assert [m for m in _marks(spec) if m == "rule"]  # the interval bars and the margin line
    points = frames[0].set_index("candidate")
    assert set(points.index) == {"slow", "wrong"}
    assert points.loc["slow", "tokens_per_s_ratio"] < 0.5 and points.loc["slow", "delta"] == 0.0
    assert points.loc["wrong", "delta"] == pytest.approx(-1 / 3) and points.loc["wrong", "ci_high"] < 0
    assert points.loc["slow", "latency_p50_ratio"] > 2


def test_the_drift_page_shows_the_series_its_statistic_against_h_and_its_alarms(tmp_path: Path, monkeypatch) -> None:
    """Real runs: 6 nights at 0.9, then 4 at 0.6. The page lists the series' state, plots its values with the alarm
    and the detector's statistic against its threshold, and lists the events, acknowledgement included."""
    state = {"rate": 0.9}

    def reply(body: dict) -> str:
        n = int(body["messages"][-1]["content"].split()[-1])
        return f"echo {n}" if n < state["rate"] * 100 else "no idea"

    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(100))
    write_suite(tmp_path / "suites", "echo", cases)
    with FakeEndpoint(reply=reply) as fake:
        config = write_config(tmp_path, f"""\
            store: sqlite:///store.db
            variants: [{{name: v, family: f, endpoint: {{base_url: "{fake.base_url}", model: m}}}}]
            """)
        for night in range(10):
            state["rate"] = 0.9 if night < 6 else 0.6
            out = CliRunner().invoke(main, ["run", "-c", str(config), "--slot", f"2026-11-{night + 1:02d}T00:00Z"])
            assert out.exit_code == 0, out.output
    acked = CliRunner().invoke(main, ["drift", "ack", "v/echo", "-c", str(config), "--note", "known", "--by", "ana"])
    assert acked.exit_code == 0, acked.output
    at = _page("drift", config, monkeypatch, suite="echo", variant="v", metric="pass")
    assert "acknowledged by ana" in at.subheader[0].value and "ALARM down since 2026-11-07" in at.subheader[0].value
    (values, (points, events)), (stat, (curve,)) = _charts(at)[:2]
    assert len(points) == 10 and "rule" in _marks(values) and "rule" in _marks(stat)
    assert set(events["event"]) >= {"alarm down", "acknowledged"}
    assert {layer["encoding"]["x"]["axis"]["format"] for layer in values["layer"] + stat["layer"] if "x" in layer["encoding"]} \
        == {"%Y-%m-%d %H:%M"}  # ten nightly runs
    assert _colour_of(values["layer"][2])["alarm down"] == charts.EVENT_COLOURS["alarm down"]
    assert curve["statistic"].max() > curve["threshold"].iloc[0]  # it crossed h where it alarmed


def test_evalsvc_dashboard_stops_with_the_reason_before_starting_streamlit(tmp_path: Path) -> None:
    upgrade(f"sqlite:///{tmp_path / 'old.db'}", "0005")
    config = write_config(tmp_path, "store: sqlite:///old.db\n")
    out = CliRunner().invoke(main, ["dashboard", "-c", str(config)])
    assert out.exit_code == 2 and "evalsvc db upgrade" in out.output and "Traceback" not in out.output


# --- a team's first store: two variants, two suites ---

def test_charts_keep_their_plot_and_their_whole_legend_with_two_variants(pair: Path, monkeypatch) -> None:
    """Streamlit's theme fits axes, title and legend into a chart's height: a two-row heat map or win matrix had no
    room left for its plot and clipped its legend. Each chart gives its plot's height and grows around it."""
    (heat, _), = _charts(_page("overview", pair, monkeypatch))
    assert heat["autosize"] == {"type": "fit-x", "contains": "padding"} and heat["height"] == 2 * charts.ROW_PX
    assert _colour_of(heat["layer"][0]) == ui_colours()  # every status keyed, the baseline's too
    assert heat["layer"][0]["encoding"]["x"]["axis"]["labelOverlap"] is False  # every suite labelled
    (forest, frames), = _charts(_page("compare", pair, monkeypatch, baseline="smollm2-f16", candidate="smollm2-q4_0"))
    rows = next(f for f in frames if "scope" in f.columns)
    assert forest["autosize"]["type"] == "fit-x" and forest["height"] >= charts.ROW_PX * len(rows)
    assert forest["layer"][0]["encoding"]["y"]["axis"]["labelOverlap"] is False
    assert list(_colour_of(forest["layer"][0])) == ["regression", "inconclusive", "pass", "improvement"]
    _, (matrix, (cells,)) = _charts(_page("arena", pair, monkeypatch))
    assert len(cells) == 2 and matrix["autosize"]["type"] == "fit-x" and matrix["height"] == 2 * charts.ROW_PX


def ui_colours() -> dict[str, str]:
    from evalsvc.dashboard.ui import STATUS_COLOURS

    return STATUS_COLOURS


def _shown(element) -> tuple[list[str], bool]:
    """A table's headers as shown, and whether its empty cells show blank (Streamlit prints "None" unless told)."""
    config = json.loads(element.proto.columns or "{}")
    headers = [config.get(c, {}).get("label", c) for c in element.value.columns]
    text = element.value.select_dtypes(exclude=["number", "bool"])
    blank = element.proto.HasField("placeholder") and element.proto.placeholder == "" and not text.isna().any().any()
    return headers, blank


def test_tables_read_in_words_with_times_in_utc_and_empty_cells_blank(pair: Path, monkeypatch) -> None:
    at = _page("overview", pair, monkeypatch)
    gate, every = at.dataframe
    headers, blank = _shown(every)
    assert headers == ["Variant", "Suite", "Status", "Metric", "Δ [interval]", "Baseline", "Last run", "Last run status",
                       "Stale"]
    baseline = every.value[every.value["variant"] == "smollm2-f16"]
    assert set(baseline["metric"]) == {""} and set(baseline["delta_ci"]) == {""}  # no verdict of its own: blank
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", t) for t in every.value["last_run"])
    assert blank
    headers, _ = _shown(gate)
    assert "Flips pass → fail" in headers and "Compared" in headers and "delta_ci" not in headers
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", gate.value["compared_at"].iloc[0])
    runs = _page("runs", pair, monkeypatch)
    for table in runs.dataframe:
        headers, blank = _shown(table)
        assert not [h for h in headers if "_" in h] and blank, headers
    times = runs.dataframe[0].value["run_time"]
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", t) for t in times)


def test_compare_marks_each_side_pass_or_fail_with_the_checks_and_their_expected_values(pair: Path, monkeypatch) -> None:
    at = _page("compare", pair, monkeypatch, baseline="smollm2-f16", candidate="smollm2-q4_0")
    case = at.selectbox(key="pick_case").value  # the first flip: the baseline passed it, the candidate did not
    sides = [m.value for m in at.markdown if m.value.startswith("**smollm2-")]
    assert sides == ["**smollm2-f16** · :green-badge[✓ pass]", "**smollm2-q4_0** · :red-badge[✗ fail]"]
    base_checks, cand_checks = (at.dataframe[i].value.set_index("check") for i in (-2, -1))
    assert base_checks.loc["exact", "expected"] == cand_checks.loc["exact", "expected"] == answer(case)
    assert base_checks.loc["exact", "score"] == "✓ 1" and cand_checks.loc["exact", "score"] == "✗ 0"
    assert list(base_checks.index) == ["exact", "rouge_l"]  # then what the run scored beyond the case's checks
    shown = " ".join(h.proto.body for h in at.get("html")) + " ".join(m.value for m in at.markdown)
    assert "idea" in shown and "{'" not in shown  # no raw dict of scores
    assert "#ccffd8" not in shown and "line-through" not in shown  # the diff does not say which side is right



def test_overview_shows_each_candidates_stored_gate_verdict_whichever_rule_decided(tmp_path: Path, monkeypatch) -> None:
    """Under gate.decide: every_suite the pooled rows are a summary, stored with primary false: the Overview still
    shows each candidate's verdict as its comparison stored it, with the pooled delta beside it."""
    config = seeded_pair_project(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    with open_engine(_url(config)).begin() as conn:
        conn.execute(text("UPDATE verdicts SET \"primary\" = 0 WHERE scope = 'all suites'"))
    at = _page("overview", config, monkeypatch)
    gate = at.dataframe[0].value
    assert list(gate["candidate"]) == ["smollm2-q4_0"] and list(gate["overall"]) == ["regression"]
    assert list(gate["metric"]) == ["pass"] and "all suites pooled: pass" in at.error[0].value


def test_compare_labels_each_row_with_its_role_in_the_gate(pair: Path, monkeypatch) -> None:
    """Under the pooled rule the pooled row decides and each suite's row can veto; the page says so per row, as the
    gate's JSON does, instead of marking the suite rows alone as deciding."""
    at = _page("compare", pair, monkeypatch, baseline="smollm2-f16", candidate="smollm2-q4_0")
    rows = at.dataframe[0].value
    role = {(r.scope, r.metric): r.role for r in rows.itertuples()}
    assert role[("all suites", "pass")] == "decides"
    assert role[("echo", "pass")] == role[("numbers", "pass")] == "veto"
    assert role[("echo", "rouge_l")] == "informational"
    said = " ".join(m.value for m in at.markdown)
    assert "How the verdict was reached (gate.decide: pooled)" in said  # which rule decided, as the gate's Markdown says


def test_a_drift_alarm_is_drawn_over_an_upstream_flag_at_the_same_run() -> None:
    """The page lists alarms first and upstream flags last; the chart draws the alarm's rule last, so a red alarm at the
    run where an upstream change was flagged is not hidden under the purple rule."""
    at = pd.Timestamp("2026-11-28 03:00", tz="UTC")
    points = pd.DataFrame({"run_ts": [at - pd.Timedelta(days=1), at], "value": [0.9, 0.6], "ci_low": [0.8, 0.5],
                           "ci_high": [1.0, 0.7], "run_id": [1, 2]})
    events = pd.DataFrame({"run_ts": [at, at], "event": ["alarm down", "upstream change"], "detail": ["", ""]})
    spec = charts.drift_values(points, events, "pass").to_dict()
    rules = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "rule")
    drawn = spec["datasets"][rules["data"]["name"]]
    assert [e["event"] for e in drawn] == ["upstream change", "alarm down"]
    assert set(_colour_of(rules)) == set(charts.EVENT_COLOURS)  # every event keyed


def test_the_drift_page_shows_one_threshold_for_a_series(pair: Path, monkeypatch) -> None:
    """The table's threshold h, the chart's h line and its caption give one number for a series: the h of its watched
    family's share of alpha, as `evalsvc drift` scans it."""
    at = _page("drift", pair, monkeypatch, suite="echo", variant="smollm2-q4_0", metric="pass")
    table = at.dataframe[0].value
    h = table[(table["variant"] == "smollm2-q4_0") & (table["metric"] == "pass")]["h"].iloc[0]
    _, (_, (curve,)) = _charts(at)[:2]
    assert list(curve["threshold"].unique()) == [pytest.approx(h)]
    assert str(round(h, 2)) in " ".join(c.value for c in at.caption)


@pytest.fixture(scope="module")
def diverging(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real runs on stand-in endpoints that return log-probabilities: 'near' gives the baseline's answers a little less
    surely, 'far' far less surely, and a quarter of its answers differ at their second word ("tell" for "say").
    `evalsvc run` twice: two comparisons of each with the baseline are stored."""
    import functools

    from tests.fake_endpoint import answer_from_prompt, word_logprobs

    folder = tmp_path_factory.mktemp("diverging")
    write_suite(folder / "suites", "echo", "\n".join(
        f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}' for i in range(20)))

    def reworded(body: dict) -> str:
        n = int(body["messages"][-1]["content"].split()[-1])
        return f"echo: tell {n}" if n % 4 == 0 else answer_from_prompt(body)

    with FakeEndpoint() as base, FakeEndpoint() as near, FakeEndpoint(reply=reworded) as far:
        base.logprobs = word_logprobs
        near.logprobs = functools.partial(word_logprobs, sureness=0.75)
        far.logprobs = functools.partial(word_logprobs, sureness=0.3)
        config = write_config(folder, f"""\
            store: sqlite:///store.db
            max_retries: 0
            baselines: {{f: base}}
            dashboard: {{cache_ttl_s: 0}}
            variants:
              - {{name: base, family: f, endpoint: {{base_url: "{base.base_url}", model: b}}}}
              - {{name: near, family: f, endpoint: {{base_url: "{near.base_url}", model: n}}}}
              - {{name: far, family: f, endpoint: {{base_url: "{far.base_url}", model: f}}}}
            """)
        for _ in range(2):
            out = CliRunner().invoke(main, ["run", "-c", str(config), "--no-progress"], catch_exceptions=False)
            assert out.exit_code == 0, out.output
    return config


def test_compare_shows_each_cases_divergence_and_the_two_tokens_where_the_answers_first_differ(
        diverging: Path, monkeypatch) -> None:
    at = _page("compare", diverging, monkeypatch, baseline="base", candidate="far", case_suite="echo", case="c4")
    table = next(d.value for d in at.dataframe if "baseline_token" in d.value.columns).set_index("case_id")
    assert len(table) == 20 and list(table["kld"]) == sorted(table["kld"], reverse=True)  # the most diverged first
    c4, c1 = table.loc["c4"], table.loc["c1"]
    assert (c4["same_output"], c4["first_divergence"], c4["baseline_token"], c4["candidate_token"]) == \
        (False, 1, '"say"', '"tell"')
    assert (c1["same_output"], c1["first_divergence"], c1["baseline_token"]) == (True, 3, "")
    assert c1["kld"] > 0.3 and c1["Δp"] == pytest.approx(0.3 - 0.8, abs=1e-3)  # same words, far less surely
    said = " ".join(m.value for m in at.markdown)
    assert "**Divergence:** kld" in said and 'first differ after 1 tokens: base ` "say" `, far ` "tell" `' in said


def test_compare_says_when_the_runs_stored_no_log_probabilities(pair: Path, monkeypatch) -> None:
    at = _page("compare", pair, monkeypatch, baseline="smollm2-f16", candidate="smollm2-q4_0")
    assert not any("baseline_token" in d.value.columns for d in at.dataframe)
    assert any("stored no log-probabilities" in c.value for c in at.caption)


def test_trends_plot_kld_from_each_comparison_with_the_baseline(diverging: Path, monkeypatch) -> None:
    at = _page("trends", diverging, monkeypatch, suite="echo", metric="kld", days="all")
    assert at.selectbox(key="pick_metric").value == "kld" and "kld" in at.selectbox(key="pick_metric").options
    (spec, frames), = _charts(at)
    series = next(f for f in frames if "role" in f.columns)
    assert set(series["variant"]) == {"near", "far"} and (series.groupby("variant").size() == 2).all()
    assert (series["ci_low"] <= series["value"] + 1e-12).all() and (series["value"] <= series["ci_high"] + 1e-12).all()
    assert series[series["variant"] == "far"]["value"].min() > 10 * series[series["variant"] == "near"]["value"].max()
    assert spec["layer"][0]["encoding"]["y"]["field"] == "ci_low"
    assert any("divergence from its baseline (base)" in c.value for c in at.caption)


def test_quality_vs_speed_can_plot_kld(diverging: Path, monkeypatch) -> None:
    at = _page("tradeoff", diverging, monkeypatch, y="kld")
    (spec, frames), = _charts(at)
    points = frames[0].set_index("candidate")
    assert set(points.index) == {"near", "far"} and points.loc["far", "kld"] > 10 * points.loc["near", "kld"]
    assert points.loc["near", "kld_low"] <= points.loc["near", "kld"] <= points.loc["near", "kld_high"]
    assert {layer["encoding"]["y"]["field"] for layer in spec["layer"] if "y" in layer["encoding"]} >= {"kld", "kld_low"}
    assert list(at.dataframe[0].value["candidate"]) == ["far", "near"]


def test_a_token_shown_as_code_keeps_its_backticks() -> None:
    from evalsvc.dashboard.ui import code_span

    assert code_span("say") == "` say `" and code_span("a``b`") == "``` a``b` ```"
