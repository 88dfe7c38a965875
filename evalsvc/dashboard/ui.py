"""What every dashboard page shares: the config, a read-only engine, cached queries and URL filters.

Filters live in the query string (``?suite=records&variant=smollm2-q2_k``), so any view can be
linked from a Slack alert or a CI summary; widgets start from the URL and write their value back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

import streamlit as st
from sqlalchemy import Engine

from evalsvc.config import DEFAULT_CONFIG, Config, load_config
from evalsvc.dashboard import queries
from evalsvc.errors import EvalsvcError
from evalsvc.store.readonly import dashboard_url, open_readonly

CONFIG_ENV = "EVALSVC_CONFIG"
STATUS_COLOURS = {"regression": "#d62728", "failed run": "#7f7f7f", "upstream change": "#9467bd", "inconclusive": "#ff9f0e",
                  "pass": "#2ca02c", "improvement": "#1f77b4", "baseline": "#bcbd22", "no verdict": "#c7c7c7"}


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
    return f"{delta:+.3f} [{low:+.3f}, {high:+.3f}]"
