"""Error classification and retry behaviour of the endpoint client (fault injection)."""

from __future__ import annotations

import asyncio
import gzip
import json
import time

import pytest

from evalsvc.errors import (
    FatalEndpointError,
    MalformedResponseError,
    RateLimitedError,
    ResponseTooLargeError,
    TransientEndpointError,
)
from evalsvc.serving.endpoint import EndpointClient, parse_retry_after
from evalsvc.serving.response import size_cap
from tests.fake_endpoint import MALFORMED, FakeEndpoint, answer

BODY = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


def _complete(fake: FakeEndpoint, body: dict | None = None, **kw):
    async def go():
        client = EndpointClient(fake.base_url, "fake", backoff_s=0.01, **kw)
        try:
            return await client.complete(body or BODY)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_server_errors_are_retried_until_success(fake: FakeEndpoint) -> None:
    fake.behaviour = lambda n, body: (502, {}, b"bad gateway") if n <= 2 else None
    assert _complete(fake, max_retries=3).text == "echo: hi"
    assert len(fake.requests) == 3


def test_retries_are_bounded_and_the_last_cause_is_kept(fake: FakeEndpoint) -> None:
    fake.behaviour = lambda n, body: (500, {}, b"kaput")
    with pytest.raises(TransientEndpointError, match="HTTP 500: kaput"):
        _complete(fake, max_retries=2)
    assert len(fake.requests) == 3


def test_429_waits_for_retry_after(fake: FakeEndpoint) -> None:
    fake.behaviour = lambda n, body: (429, {"Retry-After": "1"}, b"slow down") if n == 1 else None
    started = time.monotonic()
    assert _complete(fake, max_retries=1).text == "echo: hi"
    assert time.monotonic() - started >= 1.0


def test_client_errors_are_fatal_and_not_retried(fake: FakeEndpoint) -> None:
    fake.behaviour = lambda n, body: (401, {}, b'{"error": "bad key"}')
    with pytest.raises(FatalEndpointError, match="401"):
        _complete(fake, max_retries=5)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("payload", [b"not json", b'{"choices": []}', b'{"choices": [{"message": {}}]}', b"\xff\xfe{"])
def test_garbled_bodies_are_malformed_responses_and_retried(fake: FakeEndpoint, payload: bytes) -> None:
    fake.behaviour = lambda n, body: (200, {}, payload)
    with pytest.raises(MalformedResponseError, match="unexpected response"):
        _complete(fake, max_retries=1)
    assert len(fake.requests) == 2


@pytest.mark.parametrize("fault", list(MALFORMED))
def test_an_answer_of_the_wrong_shape_is_a_malformed_response_naming_the_field(fake: FakeEndpoint, fault: str) -> None:
    reply, field = MALFORMED[fault]
    fake.behaviour = lambda n, body: reply
    with pytest.raises(MalformedResponseError, match=field):
        _complete(fake, max_retries=1)
    assert len(fake.requests) == 2  # retried like a transient error: a proxy can garble one answer


def test_text_parts_are_joined_into_the_answer(fake: FakeEndpoint) -> None:
    fake.behaviour = lambda n, body: answer([{"type": "text", "text": "for"}, {"type": "text", "text": "ty-two"}],
                                            usage={"prompt_tokens": 3, "completion_tokens": 2})
    c = _complete(fake, max_retries=0)
    assert (c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason) == ("forty-two", 3, 2, "stop")


def test_a_usage_without_counts_leaves_them_unknown(fake: FakeEndpoint) -> None:
    fake.behaviour = lambda n, body: answer("hi", usage={"total_tokens": 9}, finish_reason=None)
    c = _complete(fake, max_retries=0)
    assert (c.text, c.prompt_tokens, c.completion_tokens, c.finish_reason) == ("hi", None, None, None)


def test_the_size_cap_follows_max_tokens_logprobs_and_choices() -> None:
    small, large = size_cap({"max_tokens": 128}), size_cap({"max_tokens": 4096})
    assert small < large < size_cap({})  # no max_tokens: the most a variant may ask for
    assert size_cap({"max_tokens": 128, "logprobs": True, "top_logprobs": 5}) > small
    assert size_cap({"max_tokens": 128, "n": 3}) > size_cap({"max_tokens": 128})
    assert small < 1 << 20  # a 128-token answer is never a megabyte


@pytest.mark.parametrize("encoding", ["identity", "gzip"])
def test_a_body_past_the_size_cap_is_cut_off_and_not_retried(fake: FakeEndpoint, encoding: str) -> None:
    """A 128-token request answered with 8 MB: refused without reading it whole; compressed, its decoded size counts."""
    status, headers, data = answer("x" * (8 << 20))
    if encoding == "gzip":
        headers, data = {"content-encoding": "gzip"}, gzip.compress(data)
        assert len(data) < size_cap({"max_tokens": 128})  # small on the wire: only the decoded size can trip the cap
    fake.behaviour = lambda n, body: (status, headers, data)
    with pytest.raises(ResponseTooLargeError, match=r"response too large: .* max_tokens allows"):
        _complete(fake, {**BODY, "max_tokens": 128}, max_retries=3)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("headers", [{}, {"content-encoding": "gzip"}])
def test_an_error_status_with_a_huge_or_undecodable_body_is_classified_by_its_status(fake: FakeEndpoint,
                                                                                      headers: dict[str, str]) -> None:
    """Only the first bytes of an error's body are read (for its message): a 503 with a 2 MB page, or one whose body
    does not decode, is retried as the 5xx it is, not refused as too large or malformed."""
    fake.behaviour = lambda n, body: (503, headers, b"<html>" + b"busy " * 400_000) if n == 1 else None
    assert _complete(fake, {**BODY, "max_tokens": 16}, max_retries=1).text == "echo: hi"
    fake.behaviour = lambda n, body: (503, headers, b"<html>" + b"busy " * 400_000)
    with pytest.raises(TransientEndpointError, match="HTTP 503"):
        _complete(fake, {**BODY, "max_tokens": 16}, max_retries=0)


def test_an_answer_within_the_cap_is_read_whole(fake: FakeEndpoint) -> None:
    fake.reply = lambda body: "y" * 5000  # 5000 characters of a 128-token answer: long, but within what 128 tokens allow
    assert _complete(fake, {**BODY, "max_tokens": 128}).text == "y" * 5000


def test_hang_past_the_timeout_is_transient(fake: FakeEndpoint) -> None:
    fake.delay_s = 1.0
    with pytest.raises(TransientEndpointError, match="timed out"):
        _complete(fake, max_retries=0, timeout_s=0.2)


def test_connection_refused_is_transient() -> None:
    async def go() -> None:
        client = EndpointClient("http://127.0.0.1:9/v1", "m", max_retries=0)
        try:
            await client.complete(BODY)
        finally:
            await client.aclose()

    with pytest.raises(TransientEndpointError, match="connection failed"):
        asyncio.run(go())


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None
    assert RateLimitedError("x", retry_after=2).status == 429


def _answer(content: object, finish_reason: str = "stop") -> tuple[int, dict, bytes]:
    choice = {"index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", "content": content}}
    return 200, {"content-type": "application/json"}, json.dumps({"choices": [choice]}).encode()


def test_no_content_and_a_content_filter_are_errors_with_their_cause_not_wrong_answers(fake: FakeEndpoint) -> None:
    fake.behaviour = lambda n, body: _answer(None, "tool_calls")
    with pytest.raises(FatalEndpointError, match=r"no content \(content: null, finish_reason: tool_calls\)"):
        _complete(fake, max_retries=2)
    fake.behaviour = lambda n, body: _answer("", "content_filter")
    with pytest.raises(FatalEndpointError, match="content filter withheld the answer"):
        _complete(fake, max_retries=2)
    assert len(fake.requests) == 2  # neither is retried: the same request gets the same refusal


def test_a_request_timeout_from_the_server_is_retried(fake: FakeEndpoint) -> None:
    fake.behaviour = lambda n, body: (408, {}, b"request timeout") if n == 1 else None
    assert _complete(fake, max_retries=2).text == "echo: hi"
    assert len(fake.requests) == 2
