"""Async client for OpenAI-compatible endpoints, with error classes that drive retries.

Classification (see ``errors.py``): 429 is rate-limited and waits for Retry-After
(up to ``max_backoff_s``: a server asking for longer fails the request at once rather
than stall the run for an hour); 5xx, timeouts, dropped connections and unparsable
bodies are transient and retried with exponential backoff and jitter; other 4xx are
fatal. A request that still fails makes its case *errored*; it is never scored.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from evalsvc.config import Config
    from evalsvc.serving.base import Served

from evalsvc.errors import (
    EndpointError,
    FatalEndpointError,
    RateLimitedError,
    TransientEndpointError,
)


@dataclass
class Completion:
    text: str
    latency_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    raw: dict[str, Any]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date, RFC 9110 10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _reason(exc: BaseException) -> str:
    """The first message down the exception chain: a reset seen through anyio reaches httpx as a bare ``ReadError()``."""
    link: BaseException | None = exc
    while link is not None:
        if str(link):
            return str(link) if link is exc else f"{type(link).__name__}: {link}"
        link = link.__cause__ or link.__context__
    return "no detail"


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """NUL (PostgreSQL text cannot hold it) and lone surrogates (not encodable as UTF-8) become U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text)


class EndpointClient:
    """One variant's endpoint; share one instance per run so connections are pooled."""

    def __init__(self, base_url: str, model: str, *, api: str = "chat", api_key: str | None = None,
                 timeout_s: float = 120.0, max_retries: int = 4, backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, concurrency: int = 4) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api = api
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self._secret = api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            headers=headers,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.requests_sent = 0

    @classmethod
    def for_served(cls, served: Served, cfg: Config) -> EndpointClient:
        """A client for a served variant with the config's timeout, retries and concurrency."""
        return cls(served.base_url, served.model, api=served.api, api_key=served.api_key, timeout_s=cfg.request_timeout_s,
                   max_retries=cfg.max_retries, max_backoff_s=cfg.max_backoff_s, concurrency=cfg.concurrency)

    async def aclose(self) -> None:
        await self._http.aclose()

    def body(self, messages: list[dict[str, str]], params: dict[str, Any]) -> dict[str, Any]:
        """The request body; also what the response cache keys on."""
        body: dict[str, Any] = {"model": self.model, **params}
        if self.api == "chat":
            body["messages"] = messages
        else:
            body["prompt"] = "\n\n".join(m["content"] for m in messages)
        return body

    async def complete(self, body: dict[str, Any]) -> Completion:
        """Send with retries; raises the last EndpointError when retries are exhausted."""
        attempt = 0
        while True:
            try:
                return await self._once(body)
            except EndpointError as exc:
                if not exc.retryable or attempt >= self.max_retries:
                    raise
                delay = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
                if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
                    if exc.retry_after > self.max_backoff_s:
                        raise RateLimitedError(f"{exc}; the server asks to wait {exc.retry_after:.0f} s (Retry-After), "
                                               f"more than the {self.max_backoff_s:.0f} s evalsvc waits: re-run later",
                                               retry_after=exc.retry_after) from None
                    delay = max(delay, exc.retry_after)
                attempt += 1
                await asyncio.sleep(delay)

    def _shown(self, body_text: str) -> str:
        """An error body as it may be stored and printed: an endpoint that echoes the API key must not leak it."""
        return body_text.replace(self._secret, "***") if self._secret else body_text

    async def _once(self, body: dict[str, Any]) -> Completion:
        path = "/chat/completions" if self.api == "chat" else "/completions"
        started = time.perf_counter()
        self.requests_sent += 1
        try:
            async with asyncio.timeout(self.timeout_s):  # httpx's timeouts are per read: a slow drip never trips them
                resp = await self._http.post(self.base_url + path, json=body)
        except httpx.TimeoutException as exc:
            raise TransientEndpointError(f"timed out: {type(exc).__name__}") from None
        except TimeoutError:
            raise TransientEndpointError(f"timed out: no whole response within {self.timeout_s:g} s") from None
        except httpx.TransportError as exc:
            raise TransientEndpointError(f"connection failed: {type(exc).__name__}: {_reason(exc)}") from None
        latency = (time.perf_counter() - started) * 1000
        if resp.status_code == 429:
            raise RateLimitedError("rate limited (HTTP 429)", retry_after=parse_retry_after(resp.headers.get("retry-after")))
        if resp.status_code >= 500 or resp.status_code == 408:  # 408: the server gave up waiting; worth another try
            raise TransientEndpointError(f"HTTP {resp.status_code}: {self._shown(resp.text)[:200]}", status=resp.status_code)
        if resp.status_code >= 400:
            raise FatalEndpointError(f"HTTP {resp.status_code}: {self._shown(resp.text)[:300]}", status=resp.status_code)
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = choice["message"]["content"] if self.api == "chat" else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise TransientEndpointError(f"unexpected response body ({type(exc).__name__}): "
                                         f"{self._shown(resp.text)[:200]!r}") from None
        if text is None:  # a refusal or tool call with no text is no answer to score
            raise FatalEndpointError(f"the endpoint returned no content (content: null, finish_reason: "
                                     f"{choice.get('finish_reason')})")
        if choice.get("finish_reason") == "content_filter":
            raise FatalEndpointError("the endpoint's content filter withheld the answer (finish_reason: content_filter)")
        usage = data.get("usage") or {}
        return Completion(
            text=storable(text),
            latency_ms=latency,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            finish_reason=choice.get("finish_reason"),
            raw=data,
        )
