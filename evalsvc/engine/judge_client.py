"""The judge client: one judge variant, served, asked for verdicts by the judge phase and the arena alike.

It asks (temperature 0, a seed per attempt, log-probabilities where the judge accepts them,
found out by its first answer), re-asks with a nudge when a reply has no valid verdict, and gives up as a judge error,
never a score. Replies are cached under the judge's fingerprint when the judge variant uses
the response cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from evalsvc.checks.judge import JudgeCheck, parse_pair_verdict, prob_weighted
from evalsvc.config import Config, VariantConfig
from evalsvc.errors import FatalEndpointError
from evalsvc.identity import content_hash
from evalsvc.serving.endpoint import EndpointClient
from evalsvc.store import repo

PAIR_MAX_TOKENS = 96
JUDGE_PARAMS: dict[str, Any] = {"temperature": 0.0, "max_tokens": 200, "seed": 0}
NUDGE = "Your reply did not end with a valid final line 'VERDICT: ...'. Reply again and end with exactly that line."
PAIR_NUDGE = ("Your reply did not end with a valid final line. Reply again and end with exactly one line: VERDICT: A, "
              "VERDICT: B or VERDICT: TIE.")


@dataclass
class Verdict:
    value: float | None
    prob: float | None
    reply: str
    error: str | None = None
    prob_note: str | None = None  # why there is no probability-weighted score where the log-probabilities came back


class JudgeClient:
    """One judge variant, served, with its cache and its identity."""

    def __init__(self, cfg: Config, engine: Engine, variant: VariantConfig, client: EndpointClient) -> None:
        self.cfg, self.engine, self.variant, self.client = cfg, engine, variant, client
        self.fingerprint = cfg.fingerprint(variant.name)
        self.logprobs: bool | None = None  # does this judge accept log-probabilities? found out by its first answer
        self._finding_out = asyncio.Lock()

    async def ask(self, messages: list[dict[str, str]], attempt: int, max_tokens: int | None = None) -> dict[str, Any]:
        """One reply (text and log-probabilities, where the judge gives them), from the cache when it holds it.

        Whether the judge accepts ``logprobs`` is found out once per judge: until the first answer settles it, requests
        go one at a time; a 400 with the parameter and an answer without it means the parameter is refused. A 400 both
        ways is this request's fault (an answer too long for the judge's context): it is raised, and settles nothing.
        """
        if self.logprobs is None:
            async with self._finding_out:
                if self.logprobs is None:
                    return await self._find_out(messages, attempt, max_tokens)
        return await self._ask(messages, attempt, max_tokens, self.logprobs)

    async def _find_out(self, messages: list[dict[str, str]], attempt: int, max_tokens: int | None) -> dict[str, Any]:
        try:
            resp = await self._ask(messages, attempt, max_tokens, True)
        except FatalEndpointError as exc:
            if exc.status != 400:
                raise
            try:
                resp = await self._ask(messages, attempt, max_tokens, False)
            except FatalEndpointError:
                raise exc from None
            self.logprobs = False
            return resp
        self.logprobs = True
        return resp

    async def _ask(self, messages: list[dict[str, str]], attempt: int, max_tokens: int | None, logprobs: bool) -> dict[str, Any]:
        params = {**JUDGE_PARAMS, "seed": attempt}
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        if logprobs:
            params |= {"logprobs": True, "top_logprobs": 5}
        body = self.client.body(messages, params)
        key = content_hash({"fp": self.fingerprint, "request": body}, 64)
        if self.variant.use_cache:
            with Session(self.engine) as s:
                hit = repo.cached(s, key)
            if hit is not None:
                return hit
        c = await self.client.complete(body)
        resp = {"text": c.text, "logprobs": c.raw["choices"][0].get("logprobs")}
        if self.variant.use_cache:
            repo.store_cache(self.engine, key, self.fingerprint, resp)
        return resp

    async def grade(self, check: JudgeCheck, question: str, answer: str, references: Sequence[str]) -> Verdict:
        """Ask, re-ask on an unparsable reply, and give up as a judge error (never a score)."""
        messages = check.messages(question, answer, tuple(references))
        reply = ""
        for attempt in range(check.retries + 1):
            resp = await self.ask(messages, attempt)
            reply = resp["text"]
            value = check.parse(reply)
            if value is not None:
                prob, note = (None, None) if check.pass_fail else prob_weighted(resp.get("logprobs"), check.scale, reply)
                return Verdict(value, prob, reply, prob_note=note)
            messages = [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": NUDGE}]
        return Verdict(None, None, reply, f"no valid verdict after {check.retries + 1} tries; last reply: {reply[:200]!r}")

    def identity(self, check: JudgeCheck) -> dict[str, str]:
        return {"judge": self.variant.name, "fingerprint": self.fingerprint, "template": check.template_hash}


    async def ask_pair(self, messages: list[dict[str, str]], tries: int = 3) -> str | None:
        """A pairwise verdict ('first', 'second', 'tie'), asked again while unparsable, with the nudge that says what
        was wrong (as ``grade`` does: at temperature 0 another seed alone gets the same reply); None after ``tries``."""
        for attempt in range(tries):
            reply = (await self.ask(messages, attempt, max_tokens=PAIR_MAX_TOKENS))["text"]
            verdict = parse_pair_verdict(reply)
            if verdict is not None:
                return verdict
            messages = [*messages, {"role": "assistant", "content": reply}, {"role": "user", "content": PAIR_NUDGE}]
        return None
