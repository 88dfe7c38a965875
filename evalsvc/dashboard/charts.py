"""Altair (Vega-Lite) charts for the pages; each takes a query's frame and returns a chart spec.

Read at a glance: time axes are UTC on a ``utc`` scale (the browser's own time zone never shifts them), 24-hour, with
the date once the runs span more than one UTC day; variants take fixed categorical colours by name (the same colour on
every page, whatever the filters; Streamlit's theme would give near-identical blues); baselines are dark, dashed,
drawn on top and labelled.

Sized for two variants as for eight: Streamlit's theme fits a chart's axes, title and legend into its height, so a
short chart (two rows of a heat map) squeezed its plot to nothing and clipped its legend. Each chart here gives the
height of its plot alone (``_sized``: so many pixels a row) and lets the axes and legend add to it; every legend
lists all the values its colours can take (the baseline's and "inconclusive" too), not only those on screen.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import altair as alt
import pandas as pd

from evalsvc.dashboard.ui import STATUS_COLOURS

MARKER_SHAPES = {"regression": "triangle-down", "upstream change": "diamond", "new checkpoint": "square"}
TABLEAU10 = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]
TABLEAU20 = ["#4e79a7", "#a0cbe8", "#f28e2b", "#ffbe7d", "#59a14f", "#8cd17d", "#b6992d", "#f1ce63", "#499894", "#86bcb6",
             "#e15759", "#ff9d9a", "#79706e", "#bab0ac", "#d37295", "#fabfd2", "#b07aa1", "#d4a6c8", "#9d7660", "#d7b5a6"]
BASELINE_COLOUR = "#262626"
BASELINE_DASH = [6, 3]
RUN_STATUS_COLOURS = {"succeeded": "#59a14f", "failed": "#e15759", "running": "#4e79a7", "cancelled": "#79706e",
                      "planned": "#bab0ac"}
EVENT_COLOURS = {"alarm down": "#d62728", "alarm up": "#2ca02c", "acknowledged": "#7f7f7f", "reference pinned": "#1f77b4",
                 "upstream change": "#9467bd"}
TIME_TITLE = "run time (UTC)"
VERDICT_COLOURS = {k: STATUS_COLOURS[k] for k in ("regression", "inconclusive", "pass", "improvement")}
Y_AXIS_PX = 48  # the y-axis labels' width in charts drawn one above the other (Drift), so their time axes line up
ROW_PX = 44  # one row of a heat map or forest plot: room for its label and its interval
FIT_WIDTH = alt.AutoSizeParams(type="fit-x", contains="padding")


def _sized(chart: alt.TopLevelMixin, plot_height: int) -> alt.TopLevelMixin:
    """The chart as wide as the page, its plot ``plot_height`` pixels high, and its axes, title and legends beside or
    below it (never squeezed into that height)."""
    return chart.properties(height=plot_height, autosize=FIT_WIDTH)


def _legend(title: str) -> alt.Legend:
    return alt.Legend(title=title, orient="bottom", direction="horizontal", columns=4, symbolOpacity=1, labelLimit=200)


def _band_axis(**kwargs: object) -> alt.Axis:
    """A nominal axis that prints every label (Vega would drop every other one where it thinks they overlap)."""
    return alt.Axis(labelOverlap=False, labelLimit=240, **kwargs)


def variant_colours(variants: Iterable[str], baselines: Collection[str] = ()) -> dict[str, str]:
    """A colour per variant name: tableau10 (tableau20 past ten variants) in the order of the store's sorted names, so
    a variant keeps its colour on every page and under any filter; a baseline is dark grey."""
    names = sorted(set(variants) | set(baselines))
    palette = TABLEAU10 if len(names) <= len(TABLEAU10) else TABLEAU20
    return {n: BASELINE_COLOUR if n in baselines else palette[i % len(palette)] for i, n in enumerate(names)}


def _scale(shown: Iterable[str], colours: dict[str, str]) -> alt.Scale:
    """An explicit domain and range for the values shown; a value missing from ``colours`` takes the next tableau10."""
    domain = sorted({str(v) for v in shown})
    spare = iter(c for c in TABLEAU10 * 2 if c not in colours.values())
    return alt.Scale(domain=domain, range=[colours.get(v) or next(spare, TABLEAU10[0]) for v in domain])


def utc(times: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC (a naive value from the store is UTC already)."""
    out = pd.to_datetime(times)
    return out.dt.tz_localize("UTC") if out.dt.tz is None else out.dt.tz_convert("UTC")


def time_x(times: pd.Series, field: str = "run_ts", span: pd.Series | None = None) -> alt.X:
    """A UTC time axis in 24-hour time, with the date when the times fall on more than one UTC day; with ``span``, the
    axis runs from its first to its last time (two charts of one series share their x-axis)."""
    days = utc(times).dt.floor("D").nunique() if len(times) else 0
    fmt = "%Y-%m-%d %H:%M" if days > 1 else "%H:%M"
    scale = alt.Scale(type="utc")
    if span is not None and len(span):
        ends = utc(pd.Series(span))
        scale = alt.Scale(type="utc", domain=[_datetime(ends.min()), _datetime(ends.max())])
    return alt.X(f"{field}:T", title=TIME_TITLE, scale=scale, axis=alt.Axis(format=fmt, labelOverlap=True))


def _datetime(t: pd.Timestamp) -> alt.DateTime:
    """A UTC time as Vega-Lite's DateTime (the form a temporal scale's domain takes)."""
    return alt.DateTime(year=t.year, month=t.month, date=t.day, hours=t.hour, minutes=t.minute, seconds=t.second, utc=True)


def _when(frame: pd.DataFrame, field: str = "run_ts") -> pd.DataFrame:
    """The frame with its times in UTC and a ``when`` text for tooltips (Vega would print a tooltip's time locally)."""
    if frame.empty or field not in frame:
        return frame
    times = utc(frame[field])
    return frame.assign(**{field: times, "when": times.dt.strftime("%Y-%m-%d %H:%M UTC")})


def status_matrix(frame: pd.DataFrame) -> alt.Chart:
    """Variants x suites, coloured by status, labelled with the delta of the verdict's metric."""
    data = frame.assign(label=frame["delta"].map(lambda d: "" if pd.isna(d) else f"{d:+.2f}"),
                        flag=frame["stale"].map(lambda s: "stale" if s else ""))
    colour = alt.Color("status:N", scale=alt.Scale(domain=list(STATUS_COLOURS), range=list(STATUS_COLOURS.values())),
                       legend=_legend("status"))
    tooltip = ["variant", "suite", "status", "verdict", "metric", "delta", "ci_low", "ci_high", "last_run", "last_status",
               "stale"]
    base = alt.Chart(data).encode(x=alt.X("suite:N", title=None, axis=_band_axis(orient="top", labelAngle=0)),
                                  y=alt.Y("variant:N", title=None, axis=_band_axis()))
    cells = base.mark_rect(stroke="white").encode(color=colour, tooltip=tooltip)
    text = base.mark_text(fontSize=13).encode(text="label:N")
    return _sized((cells + text).properties(title="latest verdict vs baseline"), ROW_PX * data["variant"].nunique())


def trend(points: pd.DataFrame, marks: pd.DataFrame, metric: str, baselines: Collection[str],
          colours: dict[str, str]) -> alt.LayerChart:
    """Each variant's series with its interval band in its own colour; the baselines dark, dashed, on top and labelled;
    event markers over all."""
    data = _when(points.assign(role=points["variant"].map(lambda v: "baseline" if v in baselines else "variant")))
    x = time_x(data["run_ts"])
    scale = _scale(data["variant"], colours)
    colour = alt.Color("variant:N", scale=scale,  # full-strength swatches, not as faint as the bands
                       legend=alt.Legend(title="variant", symbolOpacity=1, symbolType="circle", labelLimit=240))
    tooltip = ["variant", alt.Tooltip("when:N", title=TIME_TITLE), "value:Q", "ci_low:Q", "ci_high:Q", "n:Q", "fingerprint:N"]
    y = alt.Y("value:Q", title=metric)
    band = alt.Chart(data).mark_area(opacity=0.15).encode(x=x, y=alt.Y("ci_low:Q", title=metric), y2="ci_high:Q",
                                                          color=colour)
    others = data[data["role"] == "variant"]
    line = alt.Chart(others).mark_line(point=True, strokeWidth=2).encode(x=x, y=y, color=colour, tooltip=tooltip)
    layers = [band, line]
    base = data[data["role"] == "baseline"]
    if not base.empty:
        layers.append(alt.Chart(base).mark_line(point=True, strokeWidth=3, strokeDash=BASELINE_DASH).encode(
            x=x, y=y, color=colour, tooltip=tooltip))
        last = base.sort_values("run_ts").groupby("variant").tail(1)
        last = last.assign(label="baseline" if len(last) == 1 else "baseline " + last["variant"])
        layers.append(alt.Chart(last).mark_text(align="right", dy=-12, fontWeight="bold", color=BASELINE_COLOUR).encode(
            x=x, y=y, text="label:N"))
    if not marks.empty:
        placed = _when(marks.assign(run_ts=utc(marks["run_ts"])).merge(data[["run_ts", "variant", "value"]],
                                                                       on=["run_ts", "variant"], how="left"))
        placed["value"] = placed["value"].fillna(points["value"].min() if not points.empty else 0.0)
        layers.append(alt.Chart(placed).mark_point(size=160, filled=True, opacity=0.9).encode(
            x=x, y="value:Q", shape=alt.Shape("event:N", scale=alt.Scale(domain=list(MARKER_SHAPES),
                                                                          range=list(MARKER_SHAPES.values()))),
            color=alt.value("black"), tooltip=["event", "variant", alt.Tooltip("when:N", title=TIME_TITLE), "detail"]))
    return _sized(alt.layer(*layers).resolve_scale(color="shared"), 380)


def deltas(metrics: pd.DataFrame) -> alt.LayerChart:
    """Each metric's delta with its interval, against its -margin line: left of the line is a regression."""
    data = metrics.assign(row=metrics["scope"] + " / " + metrics["metric"], neg_margin=-metrics["margin"])
    y = alt.Y("row:N", title=None, sort=None, axis=_band_axis())
    colour = alt.Color("verdict:N", scale=alt.Scale(domain=list(VERDICT_COLOURS), range=list(VERDICT_COLOURS.values())),
                       legend=_legend("verdict"))
    bars = alt.Chart(data).mark_rule(strokeWidth=3).encode(x=alt.X("ci_low:Q", title="Δ (candidate − baseline), oriented"),
                                                           x2="ci_high:Q", y=y, color=colour)
    dots = alt.Chart(data).mark_point(filled=True, size=80).encode(x="delta:Q", y=y, color=colour,
                                                                   tooltip=["scope", "metric", "delta", "ci_low", "ci_high",
                                                                            "margin", "verdict", "n"])
    margin = alt.Chart(data).mark_tick(color="red", thickness=2, size=18).encode(x="neg_margin:Q", y=y)
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(color="grey").encode(x="x:Q")
    return _sized(alt.layer(bars, dots, margin, zero), ROW_PX * max(len(data), 2))


def tradeoff(frame: pd.DataFrame, y: str = "delta") -> alt.LayerChart:
    """Each candidate's quality delta with its interval (y) against its speed ratio to the baseline (x, tokens/s):
    up and right is better; below the dashed -margin line a quality loss beyond the margin. With ``y="kld"`` its kld
    from the baseline instead (down is better), with the kld bound where ``gate.margins`` sets one."""
    kld = y == "kld"
    data = frame.assign(line=frame["kld_max"] if kld else -frame["margin"])
    low, high, title = ("kld_low", "kld_high", "kld from the baseline (nats; lower is closer)") if kld else \
        ("ci_low", "ci_high", "Δ quality (candidate − baseline)")
    x = alt.X("tokens_per_s_ratio:Q", title="speed: tokens/s of candidate ÷ baseline (right is faster)",
              scale=alt.Scale(zero=False))
    colour = alt.Color("verdict:N", scale=alt.Scale(domain=list(VERDICT_COLOURS), range=list(VERDICT_COLOURS.values())),
                       legend=_legend("verdict"))
    tooltip = ["candidate", "baseline", *((["kld", "kld_low", "kld_high", "kld_max"]) if kld else
                                          ["metric", "delta", "ci_low", "ci_high", "margin"]),
               "verdict", "tokens_per_s_ratio", "latency_p50_ratio", "latency_p95_ratio"]
    bars = alt.Chart(data).mark_rule(strokeWidth=3).encode(x=x, y=alt.Y(f"{low}:Q", title=title), y2=f"{high}:Q",
                                                           color=colour)
    dots = alt.Chart(data).mark_point(filled=True, size=110).encode(x=x, y=f"{y}:Q", color=colour, tooltip=tooltip)
    labels = alt.Chart(data).mark_text(align="left", dx=8, dy=-8).encode(x=x, y=f"{y}:Q", text="candidate:N")
    layers = [bars, dots, labels]
    if data["line"].notna().any():  # the margin (or the kld bound): past it the candidate fails its gate on this axis
        layers.append(alt.Chart(data[data["line"].notna()]).mark_rule(color="red", strokeDash=[6, 3]).encode(
            y="mean(line):Q"))
    same = alt.Chart(pd.DataFrame({"x": [1.0]})).mark_rule(color="grey").encode(x="x:Q")
    return _sized(alt.layer(*layers, same), 420)


def drift_values(points: pd.DataFrame, events: pd.DataFrame, metric: str, colour: str = TABLEAU10[0]) -> alt.LayerChart:
    """A series' run values with their intervals (in the variant's colour), and its alarms, acknowledgements and upstream
    flags as markers."""
    points = _when(points)
    span = pd.concat([utc(points["run_ts"]), utc(events["run_ts"])]) if not events.empty else points["run_ts"]
    x = time_x(span, span=span)
    band = alt.Chart(points).mark_area(opacity=0.15, color=colour).encode(
        x=x, y=alt.Y("ci_low:Q", title=metric, axis=alt.Axis(minExtent=Y_AXIS_PX)), y2="ci_high:Q")
    line = alt.Chart(points).mark_line(point=alt.OverlayMarkDef(color=colour, filled=True), color=colour).encode(
        x=x, y="value:Q", tooltip=[alt.Tooltip("when:N", title=TIME_TITLE), "run_id", "value", "ci_low", "ci_high"])
    layers = [band, line]
    if not events.empty:  # alarms drawn last: on top of an upstream flag at the same run
        events = _when(events).sort_values("event", key=lambda e: e.str.startswith("alarm"), kind="stable")
        layers.append(alt.Chart(events).mark_rule(strokeDash=[4, 3], strokeWidth=2).encode(
            x=x, color=alt.Color("event:N", scale=_scale(EVENT_COLOURS, EVENT_COLOURS), legend=_legend("event")),
            tooltip=[alt.Tooltip("when:N", title=TIME_TITLE), "event", "detail"]))
    return _sized(alt.layer(*layers), 300)


def drift_statistic(points: pd.DataFrame, colour: str = TABLEAU10[0], span: pd.Series | None = None) -> alt.LayerChart:
    """The detector's CUSUM statistic at each run against its threshold h (an alarm where it crosses; restarts there),
    on the time axis of ``span`` (the values chart's, so the two line up)."""
    points = _when(points)
    x = time_x(span if span is not None else points["run_ts"], span=span) if not points.empty else alt.X(
        "run_ts:T", title=TIME_TITLE, scale=alt.Scale(type="utc"))
    stat = alt.Chart(points).mark_line(point=alt.OverlayMarkDef(color=colour, filled=True), color=colour).encode(
        x=x, y=alt.Y("statistic:Q", title="CUSUM statistic", axis=alt.Axis(minExtent=Y_AXIS_PX)),
        tooltip=[alt.Tooltip("when:N", title=TIME_TITLE), "statistic", "threshold"])
    h = alt.Chart(points).mark_rule(color="red", strokeDash=[6, 3]).encode(y="mean(threshold):Q")
    return _sized(alt.layer(stat, h), 200)


def leaderboard(rows: pd.DataFrame) -> alt.LayerChart:
    y = alt.Y("model:N", sort="-x", title=None, axis=_band_axis())
    bars = alt.Chart(rows).mark_rule(strokeWidth=3).encode(x=alt.X("ci_low:Q", title="Bradley-Terry rating",
                                                                    scale=alt.Scale(zero=False)), x2="ci_high:Q", y=y)
    dots = alt.Chart(rows).mark_point(filled=True, size=90).encode(x="rating:Q", y=y,
                                                                   tooltip=["model", "rating", "ci_low", "ci_high", "battles"])
    return _sized(alt.layer(bars, dots), ROW_PX * max(len(rows), 2))


def win_matrix(frame: pd.DataFrame) -> alt.LayerChart:
    """Row model's win rate against the column model, a cell each (red below one half, blue above), a row of
    ``ROW_PX`` each: two models are a 2 x 2 grid, not a line."""
    base = alt.Chart(frame).encode(x=alt.X("opponent:N", title="against", axis=_band_axis(orient="top", labelAngle=0)),
                                   y=alt.Y("model:N", title="model", axis=_band_axis()))
    cells = base.mark_rect(stroke="white").encode(
        color=alt.Color("win_rate:Q", scale=alt.Scale(domain=[0, 1], scheme="redblue"),
                        legend=alt.Legend(title="win rate", orient="bottom", direction="horizontal", gradientLength=240)),
        tooltip=["model", "opponent", "win_rate", "battles"])
    text = base.mark_text(fontSize=13).encode(text=alt.Text("win_rate:Q", format=".2f"))
    return _sized(alt.layer(cells, text), ROW_PX * max(frame["model"].nunique(), 2))


def durations(runs: pd.DataFrame) -> alt.Chart:
    data = _when(runs, "run_time")
    return alt.Chart(data).mark_circle(size=50).encode(
        x=time_x(data["run_time"], "run_time"), y=alt.Y("duration_s:Q", title="duration (s)"),
        color=alt.Color("status:N", scale=_scale(RUN_STATUS_COLOURS, RUN_STATUS_COLOURS), legend=alt.Legend(title="status")),
        tooltip=["id", "variant", "suite", "status", alt.Tooltip("when:N", title=TIME_TITLE), "duration_s", "n_errored",
                 "error"]
    ).properties(height=260, autosize=FIT_WIDTH)
