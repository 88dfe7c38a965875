"""Altair (Vega-Lite) charts for the pages; each takes a query's frame and returns a chart spec."""

from __future__ import annotations

import altair as alt
import pandas as pd

from evalsvc.dashboard.ui import STATUS_COLOURS

MARKER_SHAPES = {"regression": "triangle-down", "upstream change": "diamond", "new checkpoint": "square"}


def status_matrix(frame: pd.DataFrame) -> alt.Chart:
    """Variants x suites, coloured by status, labelled with the delta of the verdict's metric."""
    data = frame.assign(label=frame["delta"].map(lambda d: "" if pd.isna(d) else f"{d:+.2f}"),
                        flag=frame["stale"].map(lambda s: "stale" if s else ""))
    colour = alt.Color("status:N", scale=alt.Scale(domain=list(STATUS_COLOURS), range=list(STATUS_COLOURS.values())),
                       legend=alt.Legend(title="status"))
    tooltip = ["variant", "suite", "status", "verdict", "metric", "delta", "ci_low", "ci_high", "last_run", "last_status",
               "stale"]
    base = alt.Chart(data).encode(x=alt.X("suite:N", title=None, axis=alt.Axis(orient="top", labelAngle=0)),
                                  y=alt.Y("variant:N", title=None))
    cells = base.mark_rect(stroke="white").encode(color=colour, tooltip=tooltip)
    text = base.mark_text(fontSize=13).encode(text="label:N")
    return (cells + text).properties(height=60 + 44 * data["variant"].nunique(), title="latest verdict vs baseline")


def trend(points: pd.DataFrame, marks: pd.DataFrame, metric: str, baseline: str | None) -> alt.LayerChart:
    """Each variant's series with its interval band; the baseline drawn dashed; event markers on top."""
    data = points.assign(role=points["variant"].map(lambda v: "baseline" if v == baseline else "variant"))
    x = alt.X("run_ts:T", title="run time (UTC)")
    colour = alt.Color("variant:N")
    band = alt.Chart(data).mark_area(opacity=0.15).encode(x=x, y=alt.Y("ci_low:Q", title=metric), y2="ci_high:Q",
                                                          color=colour)
    line = alt.Chart(data).mark_line(point=True).encode(
        x=x, y=alt.Y("value:Q", title=metric), color=colour,
        strokeDash=alt.StrokeDash("role:N", scale=alt.Scale(domain=["baseline", "variant"], range=[[6, 3], [1, 0]]),
                                  legend=alt.Legend(title="line")),
        strokeWidth=alt.condition(alt.datum.role == "baseline", alt.value(3), alt.value(1.5)),
        tooltip=["variant", "run_ts:T", "value:Q", "ci_low:Q", "ci_high:Q", "n:Q", "fingerprint:N"])
    layers = [band, line]
    if not marks.empty:
        placed = marks.merge(points[["run_ts", "variant", "value"]], on=["run_ts", "variant"], how="left")
        placed["value"] = placed["value"].fillna(points["value"].min() if not points.empty else 0.0)
        layers.append(alt.Chart(placed).mark_point(size=160, filled=True, opacity=0.9).encode(
            x=x, y="value:Q", shape=alt.Shape("event:N", scale=alt.Scale(domain=list(MARKER_SHAPES),
                                                                          range=list(MARKER_SHAPES.values()))),
            color=alt.value("black"), tooltip=["event", "variant", "run_ts:T", "detail"]))
    return alt.layer(*layers).resolve_scale(color="shared").properties(height=380)


def deltas(metrics: pd.DataFrame) -> alt.LayerChart:
    """Each metric's delta with its interval, against its -margin line: left of the line is a regression."""
    data = metrics.assign(row=metrics["scope"] + " / " + metrics["metric"], neg_margin=-metrics["margin"])
    y = alt.Y("row:N", title=None, sort=None)
    colour = alt.Color("verdict:N", scale=alt.Scale(domain=list(STATUS_COLOURS), range=list(STATUS_COLOURS.values())))
    bars = alt.Chart(data).mark_rule(strokeWidth=3).encode(x=alt.X("ci_low:Q", title="Δ (candidate − baseline), oriented"),
                                                           x2="ci_high:Q", y=y, color=colour)
    dots = alt.Chart(data).mark_point(filled=True, size=80).encode(x="delta:Q", y=y, color=colour,
                                                                   tooltip=["scope", "metric", "delta", "ci_low", "ci_high",
                                                                            "margin", "verdict", "n"])
    margin = alt.Chart(data).mark_tick(color="red", thickness=2, size=18).encode(x="neg_margin:Q", y=y)
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(color="grey").encode(x="x:Q")
    return alt.layer(bars, dots, margin, zero).properties(height=max(120, 36 * len(data)))


def tradeoff(frame: pd.DataFrame) -> alt.LayerChart:
    """Each candidate's quality delta with its interval (y) against its speed ratio to the baseline (x, tokens/s):
    up and right is better; below the dashed -margin line a quality loss beyond the margin."""
    data = frame.assign(neg_margin=-frame["margin"])
    x = alt.X("tokens_per_s_ratio:Q", title="speed: tokens/s of candidate ÷ baseline (right is faster)",
              scale=alt.Scale(zero=False))
    colour = alt.Color("verdict:N", scale=alt.Scale(domain=list(STATUS_COLOURS), range=list(STATUS_COLOURS.values())))
    tooltip = ["candidate", "baseline", "metric", "delta", "ci_low", "ci_high", "margin", "verdict", "tokens_per_s_ratio",
               "latency_p50_ratio", "latency_p95_ratio"]
    bars = alt.Chart(data).mark_rule(strokeWidth=3).encode(x=x, y=alt.Y("ci_low:Q", title="Δ quality (candidate − baseline)"),
                                                           y2="ci_high:Q", color=colour)
    dots = alt.Chart(data).mark_point(filled=True, size=110).encode(x=x, y="delta:Q", color=colour, tooltip=tooltip)
    labels = alt.Chart(data).mark_text(align="left", dx=8, dy=-8).encode(x=x, y="delta:Q", text="candidate:N")
    margin = alt.Chart(data).mark_rule(color="red", strokeDash=[6, 3]).encode(y="mean(neg_margin):Q")
    same = alt.Chart(pd.DataFrame({"x": [1.0]})).mark_rule(color="grey").encode(x="x:Q")
    return alt.layer(bars, dots, labels, margin, same).properties(height=420)


def drift_values(points: pd.DataFrame, events: pd.DataFrame, metric: str) -> alt.LayerChart:
    """A series' run values with their intervals, and its alarms, acknowledgements and upstream flags as markers."""
    x = alt.X("run_ts:T", title="run time (UTC)")
    band = alt.Chart(points).mark_area(opacity=0.15).encode(x=x, y=alt.Y("ci_low:Q", title=metric), y2="ci_high:Q")
    line = alt.Chart(points).mark_line(point=True).encode(x=x, y="value:Q", tooltip=["run_ts:T", "run_id", "value", "ci_low",
                                                                                        "ci_high"])
    layers = [band, line]
    if not events.empty:
        layers.append(alt.Chart(events).mark_rule(strokeDash=[4, 3]).encode(
            x="run_ts:T", color=alt.Color("event:N", legend=alt.Legend(title="event")), tooltip=["run_ts:T", "event", "detail"]))
    return alt.layer(*layers).properties(height=300)


def drift_statistic(points: pd.DataFrame) -> alt.LayerChart:
    """The detector's CUSUM statistic at each run against its threshold h (an alarm where it crosses; restarts there)."""
    x = alt.X("run_ts:T", title="run time (UTC)")
    stat = alt.Chart(points).mark_line(point=True).encode(x=x, y=alt.Y("statistic:Q", title="CUSUM statistic"),
                                                         tooltip=["run_ts:T", "statistic", "threshold"])
    h = alt.Chart(points).mark_rule(color="red", strokeDash=[6, 3]).encode(y="mean(threshold):Q")
    return alt.layer(stat, h).properties(height=200)


def leaderboard(rows: pd.DataFrame) -> alt.LayerChart:
    y = alt.Y("model:N", sort="-x", title=None)
    bars = alt.Chart(rows).mark_rule(strokeWidth=3).encode(x=alt.X("ci_low:Q", title="Bradley-Terry rating",
                                                                    scale=alt.Scale(zero=False)), x2="ci_high:Q", y=y)
    dots = alt.Chart(rows).mark_point(filled=True, size=90).encode(x="rating:Q", y=y,
                                                                   tooltip=["model", "rating", "ci_low", "ci_high", "battles"])
    return alt.layer(bars, dots).properties(height=max(120, 34 * len(rows)))


def win_matrix(frame: pd.DataFrame) -> alt.LayerChart:
    base = alt.Chart(frame).encode(x=alt.X("opponent:N", title="against"), y=alt.Y("model:N", title="model"))
    cells = base.mark_rect().encode(color=alt.Color("win_rate:Q", scale=alt.Scale(domain=[0, 1], scheme="redblue")),
                                    tooltip=["model", "opponent", "win_rate", "battles"])
    text = base.mark_text().encode(text=alt.Text("win_rate:Q", format=".2f"))
    return alt.layer(cells, text).properties(height=max(120, 40 * frame["model"].nunique()))


def durations(runs: pd.DataFrame) -> alt.Chart:
    return alt.Chart(runs).mark_circle(size=50).encode(
        x=alt.X("run_time:T", title="run time (UTC)"), y=alt.Y("duration_s:Q", title="duration (s)"),
        color=alt.Color("status:N"), tooltip=["id", "variant", "suite", "status", "duration_s", "n_errored", "error"]
    ).properties(height=260)
