"""An endpoint's 2xx answer, checked whole against the OpenAI response schema before anything uses it.

A field of the wrong type is a ``MalformedResponseError`` naming the field (never a crash further down, never a
score): ``content`` is text, or a list of text parts (some OpenAI-compatible servers answer so; they are joined);
``usage`` is an object or absent; a token count is a whole number in 0..2^31-1; ``finish_reason`` is text or null;
``logprobs`` is an object or null. The body's size is capped by what the request's ``max_tokens`` allows
(:func:`size_cap`), so a server that streams megabytes for a 128-token answer is stopped before memory runs out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from evalsvc.errors import MalformedResponseError

BASE_BYTES = 64 * 1024  # ids, usage, the model name, a system fingerprint: what every answer carries besides its text
BYTES_PER_TOKEN = 256  # one token's text, JSON-escaped: a long token (a run of 40 "=" or spaces) as \uXXXX escapes
BYTES_PER_LOGPROB = 160  # one log-probability entry: its token, its bytes list and the value
DEFAULT_MAX_TOKENS = 32768  # a request without max_tokens: the most a variant may set (config/variants.py)
MAX_COUNT = 2**31 - 1  # token counts past this are not counts (and do not fit the store's INTEGER columns)


def size_cap(body: dict[str, Any]) -> int:
    """The most bytes (decoded) an answer to ``body`` may take: its text at ``max_tokens`` tokens, their
    log-probabilities where asked for (``top_logprobs`` alternatives each; the completions API's ``logprobs: k``,
    with ``echo`` the prompt's too), and ``n`` choices."""
    tokens = _count(body.get("max_tokens")) or _count(body.get("max_completion_tokens")) or DEFAULT_MAX_TOKENS
    logprobs = body.get("logprobs")
    alternatives = _count(body.get("top_logprobs")) if logprobs is True else _count(logprobs)
    per_token = BYTES_PER_TOKEN + (BYTES_PER_LOGPROB * (1 + (alternatives or 0)) if logprobs else 0)
    if body.get("echo"):  # the prompt comes back (with its log-probabilities): a prompt token costs what an answer's does
        tokens += len(json.dumps(body.get("prompt", ""))) + len(json.dumps(body.get("messages", "")))
    return BASE_BYTES + (_count(body.get("n")) or 1) * tokens * per_token


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


@dataclass(frozen=True)
class Answer:
    """What a checked answer holds: the text and the fields evalsvc stores."""

    text: str | None  # None: no content (a refusal or a tool call), which the client refuses with its cause
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    data: dict[str, Any]


def _bad(field: str, value: object, expected: str) -> MalformedResponseError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:80] + "…"
    return MalformedResponseError(f"unexpected response shape: {field} is {type(value).__name__} {shown}, "
                                  f"not {expected} (the OpenAI response schema)")


def _text(content: object, field: str) -> str | None:
    """The answer's text: a string, or a list of text parts joined; None stays None (no content)."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _bad(field, content, "text or a list of text parts")
    pieces = []
    for i, part in enumerate(content):
        text = part.get("text") if isinstance(part, dict) and part.get("type") in ("text", "output_text") else None
        if not isinstance(text, str):
            raise _bad(f"{field}[{i}]", part, 'a text part ({"type": "text", "text": "..."})')
        pieces.append(text)
    return "".join(pieces)


def _tokens(usage: dict[str, Any], key: str) -> int | None:
    value = usage.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
        raise _bad(f"usage.{key}", value, f"a whole number of tokens in 0..{MAX_COUNT}")
    return value


def parse(raw: bytes, api: str) -> Answer:
    """Check an answer's body whole; ``api`` is "chat" (``message.content``) or "completions" (``text``)."""
    try:
        data = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for bytes that are no UTF-8/16/32
        raise MalformedResponseError(f"unexpected response body ({type(exc).__name__}): {raw[:200]!r}") from None
    if not isinstance(data, dict):
        raise _bad("the body", data, "an object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise MalformedResponseError(f"unexpected response body (no choices): {raw[:200]!r}")
    choice = choices[0]
    if not isinstance(choice, dict):
        raise _bad("choices[0]", choice, "an object")
    if api == "chat":
        message = choice.get("message")
        if not isinstance(message, dict) or "content" not in message:
            raise _bad("choices[0].message", message, "an object with content")
        text = _text(message["content"], "choices[0].message.content")
    else:
        if "text" not in choice:
            raise MalformedResponseError(f"unexpected response body (choices[0] has no text): {raw[:200]!r}")
        text = _text(choice["text"], "choices[0].text")
    finish = choice.get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        raise _bad("choices[0].finish_reason", finish, "text or null")
    if choice.get("logprobs") is not None and not isinstance(choice["logprobs"], dict):
        raise _bad("choices[0].logprobs", choice["logprobs"], "an object or null")
    usage = data.get("usage")
    if usage is None:
        usage = {}
    elif not isinstance(usage, dict):
        raise _bad("usage", usage, "an object")
    return Answer(text, _tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens"), finish, data)
