"""Async client for OpenAI-compatible endpoints, with error classes that drive retries.

Classification (see ``errors.py``): 429 is rate-limited and waits for Retry-After
(up to ``max_backoff_s``: a server asking for longer fails the request at once rather
than stall the run for an hour); 5xx, timeouts and dropped connections are transient and
retried with exponential backoff and jitter; a 2xx body that is not an OpenAI response
(``serving/response.py`` checks it whole) is malformed, retried the same way; a body past
the size its ``max_tokens`` allows is cut off and not retried; other 4xx are fatal. A
request that still fails makes its case *errored*; it is never scored.
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
    MalformedResponseError,
    RateLimitedError,
    ResponseTooLargeError,
    TransientEndpointError,
)
from evalsvc.serving.response import parse, size_cap


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
        cap = size_cap(body)
        try:
            async with asyncio.timeout(self.timeout_s):  # httpx's timeouts are per read: a slow drip never trips them
                async with self._http.stream("POST", self.base_url + path, json=body) as resp:
                    # an error's body only explains it: its first bytes, whatever its size or encoding
                    raw = await _read_capped(resp, cap) if resp.status_code < 300 else await _read_head(resp)
        except httpx.TimeoutException as exc:
            raise TransientEndpointError(f"timed out: {type(exc).__name__}") from None
        except TimeoutError:
            raise TransientEndpointError(f"timed out: no whole response within {self.timeout_s:g} s") from None
        except httpx.TransportError as exc:
            raise TransientEndpointError(f"connection failed: {type(exc).__name__}: {_reason(exc)}") from None
        except httpx.DecodingError as exc:  # a Content-Encoding the body does not match
            raise MalformedResponseError(f"the body could not be decoded (Content-Encoding: "
                                         f"{resp.headers.get('content-encoding')}): {_reason(exc)}") from None
        except httpx.HTTPError as exc:  # anything else httpx raises about this request (a redirect loop, ...)
            raise TransientEndpointError(f"request failed: {type(exc).__name__}: {_reason(exc)}") from None
        latency = (time.perf_counter() - started) * 1000
        shown = self._shown(raw.decode("utf-8", "replace"))
        if resp.status_code == 429:
            raise RateLimitedError("rate limited (HTTP 429)", retry_after=parse_retry_after(resp.headers.get("retry-after")))
        if resp.status_code >= 500 or resp.status_code == 408:  # 408: the server gave up waiting; worth another try
            raise TransientEndpointError(f"HTTP {resp.status_code}: {shown[:200]}", status=resp.status_code)
        if resp.status_code >= 400:
            raise FatalEndpointError(f"HTTP {resp.status_code}: {shown[:300]}", status=resp.status_code)
        try:
            answer = parse(raw, self.api)
        except MalformedResponseError as exc:
            raise MalformedResponseError(self._shown(str(exc)), status=resp.status_code) from None
        if answer.text is None:  # a refusal or tool call with no text is no answer to score
            raise FatalEndpointError(f"the endpoint returned no content (content: null, finish_reason: "
                                     f"{answer.finish_reason})")
        if answer.finish_reason == "content_filter":
            raise FatalEndpointError("the endpoint's content filter withheld the answer (finish_reason: content_filter)")
        return Completion(
            text=storable(answer.text),
            latency_ms=latency,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            finish_reason=answer.finish_reason,
            raw=answer.data,
        )


async def _read_capped(resp: httpx.Response, cap: int) -> bytes:
    """The decoded body, or ``ResponseTooLargeError`` as soon as it runs past ``cap`` bytes (decoded, so a small
    compressed body that inflates to gigabytes is stopped too)."""
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap and "content-encoding" not in resp.headers:
        raise ResponseTooLargeError(_too_large(f"declares {int(declared)} bytes", cap), status=resp.status_code)
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise ResponseTooLargeError(_too_large(f"ran past {cap} bytes", cap), status=resp.status_code)
        chunks.append(chunk)
    return b"".join(chunks)


ERROR_BODY_BYTES = 4096  # of an error answer's body, kept for its message (which shows at most 300 characters)


async def _read_head(resp: httpx.Response) -> bytes:
    head = b""
    try:
        async for chunk in resp.aiter_bytes():
            head += chunk
            if len(head) >= ERROR_BODY_BYTES:
                break
    except httpx.DecodingError:
        pass  # the status says what went wrong
    return head[:ERROR_BODY_BYTES]


def _too_large(what: str, cap: int) -> str:
    return (f"response too large: the body {what}, more than the {cap} bytes the request's max_tokens allows "
            "(cut off unread; an answer this size is no answer to a request with that max_tokens)")
