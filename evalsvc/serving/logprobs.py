"""Generated tokens' top log-probabilities: how a run asks for them, and the compact form each answer stores.

The stored form (``case_results.logprobs``, read back by ``stats.divergence.from_stored``) is one list per generated
token, ``[token, logprob, [[alternative, logprob], ...]]``, log-probabilities rounded to ``DIGITS`` decimals (a KL
moves by less than 1e-4 nats). The chat API returns ``choices[0].logprobs.content``, the completions API
``tokens`` / ``token_logprobs`` / ``top_logprobs``: both compact alike. Only generated tokens are asked for: prompt
(echo) log-probabilities are wrong on llama.cpp's server and absent from chat APIs.
"""

from __future__ import annotations

import math
from typing import Any

from evalsvc.errors import FatalEndpointError, MalformedResponseError

DIGITS = 4
FLOOR = -100.0  # a -inf or -9999 "impossible" log-probability: e^-100 is 0 for any sum, and JSON holds it


def request_params(api: str, k: int) -> dict[str, Any]:
    """What a request adds to ask for ``k`` alternatives per generated token (nothing for k = 0)."""
    if k <= 0:
        return {}
    return {"logprobs": True, "top_logprobs": k} if api == "chat" else {"logprobs": k}


def refuses(exc: BaseException) -> bool:
    """A 400 that names logprobs: the endpoint does not give log-probabilities (not the request's fault)."""
    return isinstance(exc, FatalEndpointError) and exc.status == 400 and "logprob" in str(exc).lower()


def _lp(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedResponseError(f"unexpected response shape: {field} is {type(value).__name__} {value!r:.80}, "
                                     "not a number (the OpenAI response schema)")
    lp = float(value)
    return FLOOR if math.isnan(lp) else round(min(0.0, max(FLOOR, lp)), DIGITS)


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise MalformedResponseError(f"unexpected response shape: {field} is {type(value).__name__} {value!r:.80}, "
                                     "not text (the OpenAI response schema)")
    return value


def compact(logprobs: object, api: str, k: int | None = None) -> list[list[Any]] | None:
    """The stored form of ``choices[0].logprobs`` (None when the answer has none); a malformed entry is named.

    ``k``: at most the k most probable alternatives are kept per token, whatever the server sent (a server may
    return more than it was asked for), so a stored token is bounded by the setting, not by the server."""
    out = _compact(logprobs, api)
    if out is None or k is None:
        return out
    return [[token, lp, sorted(alts, key=lambda a: -a[1])[:k] if len(alts) > k else alts] for token, lp, alts in out]


def _compact(logprobs: object, api: str) -> list[list[Any]] | None:
    if not isinstance(logprobs, dict):
        return None
    out: list[list[Any]] = []
    if api == "chat":
        content = logprobs.get("content")
        if content is None:
            return None
        if not isinstance(content, list):
            raise MalformedResponseError("unexpected response shape: choices[0].logprobs.content is not a list")
        for i, entry in enumerate(content):
            field = f"choices[0].logprobs.content[{i}]"
            if not isinstance(entry, dict):
                raise MalformedResponseError(f"unexpected response shape: {field} is not an object")
            alts = entry.get("top_logprobs") or []
            if not isinstance(alts, list):
                raise MalformedResponseError(f"unexpected response shape: {field}.top_logprobs is not a list")
            out.append([_text(entry.get("token"), f"{field}.token"), _lp(entry.get("logprob"), f"{field}.logprob"),
                        [[_text(a.get("token") if isinstance(a, dict) else a, f"{field}.top_logprobs[{j}].token"),
                          _lp(a.get("logprob"), f"{field}.top_logprobs[{j}].logprob")] for j, a in enumerate(alts)]])
        return out
    tokens, chosen, tops = logprobs.get("tokens"), logprobs.get("token_logprobs"), logprobs.get("top_logprobs") or []
    if tokens is None:
        return None
    if not (isinstance(tokens, list) and isinstance(chosen, list) and isinstance(tops, list)
            and len(chosen) == len(tokens) and len(tops) in (0, len(tokens))):
        raise MalformedResponseError("unexpected response shape: choices[0].logprobs tokens, token_logprobs and "
                                     "top_logprobs are not lists of one length")
    for i, token in enumerate(tokens):
        field = f"choices[0].logprobs.top_logprobs[{i}]"
        alts = tops[i] if tops else {}
        if not isinstance(alts, dict):
            raise MalformedResponseError(f"unexpected response shape: {field} is not an object")
        out.append([_text(token, f"choices[0].logprobs.tokens[{i}]"),
                    _lp(chosen[i], f"choices[0].logprobs.token_logprobs[{i}]"),
                    [[_text(t, field), _lp(v, f"{field}[{t!r}]")] for t, v in alts.items()]])
    return out


def forced_params(k: int) -> dict[str, Any]:
    """What a completions request adds to score its prompt's tokens with ``k`` alternatives each (vLLM's
    ``prompt_logprobs`` extension) while generating as little as it can (one greedy token, not used)."""
    return {"prompt_logprobs": k, "max_tokens": 1, "temperature": 0}


def compact_prompt(prompt_logprobs: object, ids: list[int], start: int) -> list[list[Any]]:
    """The stored form of the prompt positions ``start`` onwards of vLLM's ``choices[0].prompt_logprobs``.

    vLLM returns one entry per prompt token (None for the first, which nothing predicts), each an object from token id
    to ``{"logprob", "rank", "decoded_token"}`` holding the top alternatives and always the prompt's own token (with
    its rank, however low). The own token and its log-probability are the stored token; every listed entry is an
    alternative, so a token outside the top k that the prompt holds keeps its exact value.
    """
    if not isinstance(prompt_logprobs, list) or len(prompt_logprobs) != len(ids):
        raise MalformedResponseError("unexpected response shape: choices[0].prompt_logprobs is not a list of one entry "
                                     f"per prompt token ({len(ids)}; vLLM's prompt_logprobs extension)")
    out: list[list[Any]] = []
    for i in range(start, len(ids)):
        field = f"choices[0].prompt_logprobs[{i}]"
        entry = prompt_logprobs[i]
        own = entry.get(str(ids[i])) if isinstance(entry, dict) else None
        if not isinstance(own, dict):
            raise MalformedResponseError(f"unexpected response shape: {field} does not list the prompt's token {ids[i]}")
        alts = [[_text(v.get("decoded_token") if isinstance(v, dict) else v, f"{field}[{a}].decoded_token"),
                 _lp(v.get("logprob") if isinstance(v, dict) else v, f"{field}[{a}].logprob")] for a, v in entry.items()]
        out.append([_text(own.get("decoded_token"), f"{field}[{ids[i]}].decoded_token"),
                    _lp(own.get("logprob"), f"{field}[{ids[i]}].logprob"), sorted(alts, key=lambda av: -av[1])])
    return out
