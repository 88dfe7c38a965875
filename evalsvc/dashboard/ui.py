"""What every dashboard page shares: the config, a read-only engine, cached queries and URL filters.

Filters live in the query string (``?suite=records&variant=smollm2-q2_k``), so any view can be
linked from a Slack alert or a CI summary; widgets start from the URL and write their value back.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from datetime import date
from typing import Any
from urllib.parse import urlencode

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from evalsvc.config import DEFAULT_CONFIG, Config, load_config
from evalsvc.dashboard import queries
from evalsvc.errors import EvalsvcError
from evalsvc.store.readonly import dashboard_url, open_readonly

CONFIG_ENV = "EVALSVC_CONFIG"
STATUS_COLOURS = {"regression": "#d62728", "failed run": "#7f7f7f", "upstream change": "#9467bd", "inconclusive": "#ff9f0e",
                  "pass": "#2ca02c", "improvement": "#1f77b4", "baseline": "#dbdb8d", "no verdict": "#c7c7c7"}


@st.cache_resource(show_spinner=False)
def _engine(url: str) -> Engine:
    return open_readonly(url)


def config() -> Config:
    path = os.environ.get(CONFIG_ENV, DEFAULT_CONFIG)
    try:
        return load_config(path)
    except EvalsvcError as exc:
        st.error(f"cannot load the config: {exc}")
        st.stop()
        raise


def engine(cfg: Config) -> tuple[Engine, str]:
    url = dashboard_url(cfg)
    try:
        return _engine(url), url
    except EvalsvcError as exc:
        st.error(str(exc))
        st.stop()
        raise


_CACHED: dict[int, Callable[..., Any]] = {}


def query(cfg: Config, name: str, *args: Any, **kwargs: Any) -> Any:
    """Run ``queries.<name>`` on the dashboard's engine, reusing a result for ``dashboard.cache_ttl_s`` seconds."""
    ttl = cfg.dashboard.cache_ttl_s
    if ttl not in _CACHED:
        @st.cache_data(ttl=ttl, show_spinner=False)
        def cached(url: str, name: str, args: tuple, kwargs: tuple) -> Any:
            return getattr(queries, name)(_engine(url), *args, **dict(kwargs))

        _CACHED[ttl] = cached
    _, url = engine(cfg)
    return _CACHED[ttl](url, name, args, tuple(sorted(kwargs.items())))


def pick(label: str, key: str, options: Sequence[str], default: str | None = None, container: Any = None) -> str | None:
    """A selectbox that starts from ``?key=`` and writes its choice back to the URL."""
    where = container or st.sidebar
    options = list(options)
    if not options:
        return None
    wanted = st.query_params.get(key, default)
    choice = where.selectbox(label, options, index=options.index(wanted) if wanted in options else 0, key=f"pick_{key}")
    st.query_params[key] = choice
    return choice


def pick_many(label: str, key: str, options: Sequence[str], container: Any = None) -> list[str]:
    """A multiselect from ``?key=a&key=b`` (empty: all), written back to the URL."""
    where = container or st.sidebar
    wanted = [v for v in st.query_params.get_all(key) if v in options]
    chosen = where.multiselect(label, list(options), default=wanted, key=f"many_{key}", placeholder="all")
    if chosen:
        st.query_params[key] = chosen
    elif key in st.query_params:
        del st.query_params[key]
    return chosen


def link(page: str, **params: str) -> str:
    """A relative link to another page with its filters set (works behind any base URL)."""
    return f"{page}?{urlencode(params)}" if params else page


def fmt_delta(delta: float, low: float, high: float) -> str:
    return "" if delta is None or delta != delta else f"{delta:+.3f} [{low:+.3f}, {high:+.3f}]"


def code_span(text: str) -> str:
    """Untrusted text (a model's token) as a Markdown code span: nothing in it is read as Markdown, whatever backticks
    it holds (CommonMark: a span's fence is a run of backticks longer than any inside it, padded by a space)."""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"


TIME_FORMAT = "%Y-%m-%d %H:%M UTC"
HEADERS = {"delta_ci": "Δ [interval]", "ci_low": "Interval low", "ci_high": "Interval high", "n": "n",
           "n_needed": "n needed", "flips_down": "Flips pass → fail", "flips_up": "Flips fail → pass",
           "compared_at": "Compared", "win_rate_vs_anchor": "Win rate vs anchor", "win_ci_low": "Win rate low",
           "win_ci_high": "Win rate high", "tokens_per_s_ratio": "Tokens/s ratio", "latency_p50_ratio": "Latency p50 ratio",
           "latency_p95_ratio": "Latency p95 ratio", "duration_s": "Duration (s)", "n_cases": "Cases", "n_ok": "OK",
           "n_errored": "Errored", "id": "ID", "run_id": "Run", "run_ts": "Run time", "run_time": "Run time",
           "sent_to": "Sent to", "last_run": "Last run", "last_status": "Last run status", "case_id": "Case", "h": "Threshold h",
           "kld_ci": "kld [interval]", "kld_max": "kld bound (gate)", "first_divergence": "First divergence (tokens)"}


def header(column: str) -> str:
    """A column's name as a reader wants it: ``last_run`` -> "Last run"."""
    if column in HEADERS:
        return HEADERS[column]
    text = str(column).replace("_", " ")
    return text[:1].upper() + text[1:]


def when(value: Any) -> str:
    """A time as ``YYYY-MM-DD HH:MM UTC`` (a naive time from the store is UTC already); blank for none."""
    if value is None or value is pd.NaT or (isinstance(value, float) and value != value):
        return ""
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.strftime(TIME_FORMAT)


def _is_time(column: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(column):
        return True
    present = column.dropna()
    return column.dtype == object and not present.empty and all(isinstance(v, date) for v in present)


def readable(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The columns shown, with every time as ``YYYY-MM-DD HH:MM UTC`` and every missing text blank."""
    out = frame[list(columns)] if columns is not None else frame
    out = out.copy()
    for name in out.columns:
        if _is_time(out[name]):
            out[name] = out[name].map(when)
        elif pd.api.types.is_float_dtype(out[name]) and out[name].dropna().map(float.is_integer).all() and \
                out[name].isna().any():  # counts with a gap read 60, not 60.000
            out[name] = out[name].astype("Int64")
        elif not pd.api.types.is_numeric_dtype(out[name]) and not pd.api.types.is_bool_dtype(out[name]):
            out[name] = out[name].map(lambda v: "" if v is None or (isinstance(v, float) and v != v) else v)
    return out


def table(frame: pd.DataFrame, columns: Sequence[str] | None = None, where: Any = None, **widths: str) -> None:
    """A table as every page shows one: headers in words, times in one format (UTC), empty cells blank (not "None"),
    fractions to 3 decimals; ``widths`` sets a column's width ("small", "medium", "large")."""
    shown = readable(frame, columns)
    config = {c: (st.column_config.NumberColumn(header(c), width=widths.get(c), format="%.3f")  # type: ignore[arg-type]
                  if pd.api.types.is_float_dtype(shown[c]) else
                  st.column_config.Column(header(c), width=widths.get(c)))  # type: ignore[arg-type]
              for c in shown.columns}
    (where or st).dataframe(shown, hide_index=True, width="stretch", column_config=config, placeholder="")
