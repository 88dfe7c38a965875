"""Alerts: one message when a problem starts, one when it clears, quality and endpoints kept apart.

A *condition* is a problem identified by a key (``regression:<candidate>:<baseline>``,
``endpoint:<variant>``, ``upstream:<variant>:<suite>``, ``drift:<variant>:<suite>:<metric>``).
``Alerter.sync`` is told which conditions fire now and which keys were checked; it opens an alert
(and sends one message) the first time a key fires, stays quiet while it keeps firing, and resolves
it (one more message) when a checked key stops firing. Alert state lives in the store, so restarts
neither repeat nor lose alerts; a message a sink failed to deliver is retried by the running service
(``retry_undelivered``, with backoff) and on the next sync.

Sinks are a Protocol with a registry (``@sink``); the built-in Slack sink posts Block Kit through
slack-sdk's ``WebhookClient`` and honours 429 Retry-After up to RETRY_AFTER_CAP_S (a longer one is left to
the service's retries). The webhook URL comes only from the environment or a secret file and is never logged or
stored; one that is not an http(s) URL turns the sink off with a message that does not quote it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlencode, urlsplit

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from evalsvc.config import AlertsConfig
from evalsvc.store.schema import Alert, utcnow

log = logging.getLogger(__name__)
Kind = Literal["regression", "endpoint", "upstream", "drift", "judge"]
DECIDED = ("succeeded", "failed")  # run statuses an endpoint or upstream condition is decided by
RETRY_AFTER_CAP_S = 60.0  # a 429's Retry-After longer than this is not waited for in a firing: the service retries
RETRY_BASE_S, RETRY_MAX_S = 30.0, 1800.0  # backoff of the service's retries of undelivered alerts


@dataclass(frozen=True)
class Condition:
    key: str
    kind: Kind
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """What a sink is asked to deliver."""

    state: Literal["open", "resolved"]
    kind: Kind
    summary: str
    detail: dict[str, Any]


class AlertSink(Protocol):
    def send(self, event: Event) -> None: ...


_SINKS: dict[str, Callable[..., AlertSink]] = {}


def sink(name: str) -> Callable[[Callable[..., AlertSink]], Callable[..., AlertSink]]:
    def register(factory: Callable[..., AlertSink]) -> Callable[..., AlertSink]:
        _SINKS[name] = factory
        return factory

    return register


class _Redact(logging.Filter):
    """slack-sdk logs the full webhook URL (a secret) with its requests: cut it out of every record."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.secret in message:
            record.msg, record.args = message.replace(self.secret, "<slack webhook>"), ()
        return True


class Undelivered(RuntimeError):
    """A sink could not deliver now; ``retry_after``: the receiver asked to wait this long (seconds) first."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(headers: Any) -> float | None:
    for key, value in dict(headers or {}).items():
        if key.lower() == "retry-after":
            value = value[0] if isinstance(value, (list, tuple)) and value else value
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


def _capped_rate_limit_handler(max_retries: int, cap_s: float) -> Any:
    """slack-sdk's 429 handler, but a Retry-After over ``cap_s`` is not slept through (a firing is not held for
    hours): the send fails at once and the service retries the alert after that wait."""
    from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

    class Capped(RateLimitErrorRetryHandler):
        def _can_retry(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> bool:
            if response is None or response.status_code != 429:
                return False
            wait = _retry_after(response.headers)
            return wait is None or wait <= cap_s

    return Capped(max_retry_count=max_retries)


@sink("slack")
class SlackSink:
    def __init__(self, url: str, max_retries: int = 3) -> None:
        from slack_sdk.webhook import WebhookClient

        self._url = url
        quiet = logging.getLogger("evalsvc.alerts.slack")
        quiet.setLevel(logging.WARNING)  # its DEBUG/INFO lines carry request bodies and the URL
        quiet.addFilter(_Redact(url))
        self._client = WebhookClient(url, timeout=15, logger=quiet,
                                     retry_handlers=[_capped_rate_limit_handler(max_retries, RETRY_AFTER_CAP_S)])

    def send(self, event: Event) -> None:
        try:
            resp = self._client.send(text=event.summary, blocks=blocks(event))
        except Exception as exc:  # urllib's messages quote the URL, a secret: say what failed, never where
            raise Undelivered(f"{type(exc).__name__}: {str(exc).replace(self._url, '<slack webhook>')}") from None
        if resp.status_code != 200:
            raise Undelivered(f"Slack webhook answered HTTP {resp.status_code}: {str(resp.body)[:200]}",
                              _retry_after(resp.headers) if resp.status_code == 429 else None)


def _valid_webhook(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


_ICON = {("open", "regression"): "🔴 Quality regression", ("open", "endpoint"): "🟠 Endpoint failing",
         ("open", "upstream"): "🟣 Upstream change suspected", ("open", "drift"): "🟡 Drift",
         ("open", "judge"): "🟤 Judge drifting"}


def blocks(event: Event) -> list[dict[str, Any]]:
    """Block Kit for one event: a header, the facts as fields, and a link to the dashboard view."""
    title = f"✅ Resolved: {event.summary}" if event.state == "resolved" else f"{_ICON[(event.state, event.kind)]}: {event.summary}"
    d = event.detail
    fields = [f"*{label}:* {d[key]}" for key, label in (("variant", "Variant"), ("baseline", "Baseline"), ("suite", "Suite"),
                                                      ("metric", "Metric"), ("delta", "Delta [CI]"), ("flips", "Flips ↓/↑"),
                                                      ("cause", "Cause")) if d.get(key) is not None]
    out: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": title[:150]}}]
    if fields:
        out.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f[:2000]} for f in fields[:10]]})
    if d.get("regressed"):
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": "*Regressed:* " + ", ".join(d["regressed"])[:2900]}})
    if d.get("top_flips"):
        lines = "\n".join(f"• `{c}`" for c in d["top_flips"][:5])
        out.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Top cases that flipped pass → fail:*\n{lines}"}})
    if d.get("link"):
        out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"<{d['link']}|Open in the dashboard>"}]})
    return out


def build_sinks(cfg: AlertsConfig | None) -> dict[str, AlertSink]:
    if cfg is None or cfg.slack is None:
        return {}
    url = cfg.slack.url()
    if not url:
        log.warning("alerts.slack is configured but %s is not set: Slack alerts are off", cfg.slack.webhook_env)
        return {}
    if not _valid_webhook(url):  # the message must not quote it: a webhook URL is a secret even when mangled
        where = cfg.slack.webhook_file or cfg.slack.webhook_env
        log.error("the Slack webhook in %s is not an http(s) URL (does it lack its https:// scheme?): Slack alerts are "
                  "off until it is fixed; alerts are kept and the open ones are sent then", where)
        return {}
    return {"slack": _SINKS["slack"](url, cfg.slack.max_retries)}


def view_link(base: str | None, page: str, **params: str) -> str | None:
    """A link to a dashboard page with its filters in the query string (the dashboard reads them)."""
    return f"{base.rstrip('/')}/{page}?{urlencode(params)}" if base else None


_delivering = threading.Lock()  # one delivery pass at a time in a process: a firing's and the retry loop's never
# both send the same undelivered message


class Alerter:
    def __init__(self, engine: Engine, sinks: dict[str, AlertSink]) -> None:
        self.engine, self.sinks = engine, sinks
        self._waits: dict[tuple[int, str], tuple[int, float]] = {}  # (alert, sink) -> (failures, not before)

    def retry_undelivered(self) -> list[Event]:
        """What `evalsvc serve` calls between firings: send what is still undelivered, each (alert, sink) after its
        backoff (doubling from RETRY_BASE_S up to RETRY_MAX_S, and never before a 429's Retry-After)."""
        return self._deliver(backoff=True)

    def sync(self, firing: Iterable[Condition], checked: Iterable[str]) -> list[Event]:
        """Open new conditions, resolve checked keys that stopped firing, deliver what is undelivered."""
        firing = {c.key: c for c in firing}
        checked = set(checked) | set(firing)
        now = utcnow()
        with Session(self.engine) as s, s.begin():
            open_alerts = {a.key: a for a in s.scalars(select(Alert).where(Alert.status == "open"))}
            for key, cond in firing.items():
                if key in open_alerts:
                    open_alerts[key].last_seen_at = now
                else:
                    s.add(Alert(key=key, kind=cond.kind, status="open", summary=cond.summary, detail=cond.detail,
                                opened_at=now, last_seen_at=now, delivered={}))
            for key, alert in open_alerts.items():
                if key in checked and key not in firing:
                    alert.status, alert.resolved_at = "resolved", now
        return self._deliver()

    def retired_keys(self, configured: set[str]) -> list[str]:
        """Open alerts about variants that are no longer configured: checking them resolves them."""
        with Session(self.engine) as s:
            return [a.key for a in s.scalars(select(Alert).where(Alert.status == "open"))
                    if a.detail.get("variant") not in configured]

    def _deliver(self, backoff: bool = False) -> list[Event]:
        with _delivering:
            return self._deliver_now(backoff)

    def _deliver_now(self, backoff: bool) -> list[Event]:
        """Send what each sink has not had, outside any transaction (a slow webhook holds no store connection), then
        record what went out. A sink that has never seen an alert that is already resolved (a sink configured after
        it) is not sent its history: it gets the alerts open now, and what happens from now on."""
        with Session(self.engine) as s, s.begin():
            todo = []
            for alert in s.scalars(select(Alert).order_by(Alert.id)):
                delivered = dict(alert.delivered or {})
                for name in self.sinks:
                    if name not in delivered and alert.status == "resolved":
                        delivered[name] = {"open": "skipped: before this sink", "resolved": "skipped: before this sink"}
                        continue
                    done = dict(delivered.get(name) or {})
                    delivered[name] = done
                    states = ["open"] + (["resolved"] if alert.status == "resolved" else [])
                    todo += [(alert.id, name, Event(state, alert.kind, alert.summary, alert.detail))  # type: ignore[arg-type]
                             for state in states if state not in done]
                alert.delivered = delivered
        sent: list[Event] = []
        outcome: dict[int, dict[str, dict[str, str]]] = {}
        failed: set[tuple[int, str]] = set()
        now = time.monotonic()
        for alert_id, name, event in todo:
            if (alert_id, name) in failed:  # keep an alert's messages in order: no "resolved" before its "open"
                continue
            if backoff and self._waits.get((alert_id, name), (0, 0.0))[1] > now:
                continue
            try:
                self.sinks[name].send(event)
            except Exception as exc:  # delivery is retried by the service, and on the next sync
                log.warning("alert %s (%s) not delivered to %s: %s", alert_id, event.state, name, exc)
                failed.add((alert_id, name))
                n = self._waits.get((alert_id, name), (0, 0.0))[0] + 1
                wait = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (n - 1))
                self._waits[(alert_id, name)] = (n, now + max(wait, getattr(exc, "retry_after", None) or 0.0))
                continue
            self._waits.pop((alert_id, name), None)
            outcome.setdefault(alert_id, {}).setdefault(name, {})[event.state] = utcnow().isoformat()
            sent.append(event)
        if outcome:
            with Session(self.engine) as s, s.begin():
                for alert_id, by_sink in outcome.items():
                    row = s.get(Alert, alert_id)
                    if row is None:
                        continue
                    delivered = dict(row.delivered or {})
                    for name, states in by_sink.items():
                        delivered[name] = {**dict(delivered.get(name) or {}), **states}
                    row.delivered = delivered
        return sent


def regression_conditions(report: Any, dashboard_url: str | None = None) -> tuple[list[Condition], list[str]]:
    """One condition per candidate/baseline pair, firing while the gate's verdict is regression, resolved by a pass
    (or improvement) only: an inconclusive comparison leaves the alert as it is.

    One alert per regression, not one per metric: the message names every regressed metric
    (primary and per suite), and a new metric joining an open regression does not page again.
    The row the message leads with is the worst regressed primary row, else serving health (more cases unanswered),
    else the worst-case bound: a regression verdict always makes a condition, whichever part decided it.
    """
    key = f"regression:{report.candidate}:{report.baseline}"
    if report.verdict == "inconclusive":  # not shown to be fine: an open regression stays open, none is opened
        return [], []
    if report.verdict != "regression":
        return [], [key]
    primary = [*report.primary, *getattr(report, "pooled", [])]
    regressed = [(scope, c) for scope, c in [*primary, *report.secondary] if c.verdict == "regression"]
    scope, worst = _leading_row(report, primary)
    downs = [f"{f.suite}/{f.case_id}" for f in report.flips if f.direction == "down"]
    detail: dict[str, Any] = {"variant": report.candidate, "baseline": report.baseline, "suite": scope,
                              "regressed": [f"{sc}/{c.metric}" for sc, c in regressed], "top_flips": downs[:5],
                              "link": view_link(dashboard_url, "compare", baseline=report.baseline,
                                                candidate=report.candidate)}
    if worst is None:
        return [Condition(key, "regression", f"{report.candidate} vs {report.baseline}: regressed", detail)], [key]
    detail.update(metric=worst.metric, flips=f"{worst.flips_down} / {worst.flips_up}",
                  delta=f"{worst.delta:+.3f} [{worst.ci_low:+.3f}, {worst.ci_high:+.3f}] (margin {worst.margin:.3f})")
    if scope == "serving health":
        detail["regressed"] = [*detail["regressed"], "serving health"]
    return [Condition(key, "regression", f"{report.candidate} vs {report.baseline}: {worst.metric} regressed",
                      detail)], [key]


def _leading_row(report: Any, primary: list[tuple[str, Any]]) -> tuple[str | None, Any]:
    """(scope, comparison) that explains a regression verdict: the first regressed primary row (per suite, then
    pooled), else serving health, else the first regressed bound; (None, None) when no row says it."""
    health = getattr(report, "health", None)
    bounds = getattr(report, "bounds", [])
    for scope, c in [*primary, *([("serving health", health)] if health is not None else []), *bounds]:
        if c.verdict == "regression":
            return scope, c
    return None, None


def run_conditions(outcomes: Iterable[Any], dashboard_url: str | None = None) -> tuple[list[Condition], list[str]]:
    """Endpoint and upstream conditions from run outcomes: a failed run is an endpoint problem, never quality."""
    firing, checked = [], []
    for o in outcomes:
        if o.status not in DECIDED:  # its run key is being executed elsewhere (another firing, a second serve): it
            continue  # decides nothing here, least of all that an endpoint recovered
        key = f"endpoint:{o.variant}"
        checked.append(key)
        if o.status == "failed":
            firing.append(Condition(key, "endpoint", f"runs of {o.variant} are failing", {
                "variant": o.variant, "suite": o.suite, "cause": (o.error or "")[:500],
                "link": view_link(dashboard_url, "runs", variant=o.variant)}))
        ukey = f"upstream:{o.variant}:{o.suite}"
        checked.append(ukey)
        if o.upstream_change:
            firing.append(Condition(ukey, "upstream", f"{o.variant} answers differently on {o.suite}", {
                "variant": o.variant, "suite": o.suite, "cause": o.upstream_change[:500],
                "link": view_link(dashboard_url, "trends", variant=o.variant, suite=o.suite)}))
    return firing, checked  # a key that fires for one run stays open even if another run of the batch succeeded


def drift_conditions(findings: Iterable[Any], dashboard_url: str | None = None) -> tuple[list[Condition], list[str]]:
    """One condition per series whose last drift alarm is down and unacknowledged; every series checked is a key, so a
    recovery (a later alarm up) or an acknowledgement resolves it."""
    firing, checked = [], []
    for f in findings:
        key = f"drift:{f.variant}:{f.suite}:{f.metric}"
        checked.append(key)
        if f.regression:
            firing.append(Condition(key, "drift", f"{f.variant} on {f.suite}: {f.metric} drifted down", {
                "variant": f.variant, "suite": f.suite, "metric": f.metric,
                "delta": f"{f.latest:.3f} now, {f.reference:.3f} before", "cause": f.state[:500],
                "link": view_link(dashboard_url, "drift", suite=f.suite, variant=f.variant, metric=f.metric)}))
    return firing, checked


def judge_conditions(findings: Iterable[Any], dashboard_url: str | None = None) -> tuple[list[Condition], list[str]]:
    """One condition per judge identity whose canary failure rate rose; while it is open, the gate does not decide
    that judge's metrics (``verdicts.compare``)."""
    firing, checked = [], []
    for f in findings:
        key = f"judge:{f.fingerprint}"
        checked.append(key)
        if f.regression:
            firing.append(Condition(key, "judge", f"judge {f.judge} is fooled by its canaries more often", {
                "variant": f.judge, "judge": f.judge, "fingerprint": f.fingerprint,
                "cause": f"canary failure rate {f.latest:.0%} now; {f.state}",
                "link": view_link(dashboard_url, "runs")}))
    return firing, checked
