"""Teacher forcing: the candidate's next-token distributions on every token of the baseline's answer.

Comparing two generated answers (``stats.divergence.compare_answers``) sees only the positions up to their first
difference: after it the two models predict from different contexts. An engine that scores a given continuation sees
them all. vLLM's completions API does (its ``prompt_logprobs`` extension: the top alternatives of every prompt token,
and the prompt's own token whatever its rank), so the candidate is asked for the baseline's prompt followed by the
baseline's answer, and its distribution at each answer position is compared with the baseline's stored one
(``stats.divergence.compare_forced``: ``kld`` over every token and top-1 agreement).

The prompt and the answer are sent as token ids, so the answer's positions are known exactly: the prompt as the chat
API would template it (vLLM's ``/tokenize`` with ``messages`` and ``add_generation_prompt``), the answer as the
baseline's tokens joined and tokenized without special tokens. Where that gives other tokens than the baseline's own
(another tokenizer, or a generation that was not the canonical tokenization of its text), the positions do not match
and the case is not compared: it is reported, never guessed. Only vLLM serves both ``/tokenize`` and
``prompt_logprobs`` (``supports``); llama.cpp's server returns no prompt log-probabilities that can be trusted, and
chat-only APIs none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from evalsvc.config.variants import VariantConfig
from evalsvc.errors import FatalEndpointError, MalformedResponseError, TransientEndpointError
from evalsvc.serving import Served, logprobs
from evalsvc.stats.divergence import CaseDivergence, Token, compare_forced, from_stored
from evalsvc.store.schema import CaseResult
from evalsvc.suites import Suite


def supports(variant: VariantConfig) -> bool:
    """Whether the variant's engine scores a given continuation: evalsvc's vLLM backend (``local.engine: vllm``)."""
    return variant.local is not None and variant.local.engine == "vllm"


@dataclass
class Forced:
    """Per case, the teacher-forced comparison; ``skipped``: the cases not compared, each with why."""

    cases: dict[str, CaseDivergence] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


class Scorer:
    """One served candidate's teacher-forced scoring (``k`` alternatives per position), one request at a time."""

    def __init__(self, served: Served, k: int, timeout_s: float = 120.0) -> None:
        self.served, self.k = served, k
        self.root = served.base_url.rstrip("/").removesuffix("/v1")  # vLLM serves /tokenize beside /v1
        headers = {"Authorization": f"Bearer {served.api_key}"} if served.api_key else {}
        self._http = httpx.Client(timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self._http.close()

    def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = self._http.post(url, json=body)
        except httpx.HTTPError as exc:
            raise TransientEndpointError(f"teacher forcing: {type(exc).__name__} on {url}") from None
        if resp.status_code >= 400:
            cls = TransientEndpointError if resp.status_code >= 500 else FatalEndpointError
            raise cls(f"teacher forcing: HTTP {resp.status_code} from {url}: {resp.text[:300]}", status=resp.status_code)
        data = resp.json()
        if not isinstance(data, dict):
            raise MalformedResponseError(f"teacher forcing: {url} answered {type(data).__name__}, not an object")
        return data

    def _tokens(self, body: dict[str, Any]) -> list[int]:
        ids = self._post(self.root + "/tokenize", {"model": self.served.model, **body}).get("tokens")
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise MalformedResponseError("teacher forcing: /tokenize answered no list of token ids (vLLM's tokenize API)")
        return ids

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt's tokens as the variant's API sends it (chat: templated, with the assistant turn opened)."""
        if self.served.api == "chat":
            return self._tokens({"messages": messages, "add_generation_prompt": True})
        return self._tokens({"prompt": "\n\n".join(m["content"] for m in messages)})

    def score(self, messages: list[dict[str, str]], answer: Sequence[Token]) -> list[Token]:
        """The candidate's top-k at each position of ``answer`` (the baseline's tokens), scored after ``messages``."""
        prompt = self.prompt_ids(messages)
        ids = self._tokens({"prompt": "".join(t.token for t in answer), "add_special_tokens": False})
        data = self._post(self.served.base_url.rstrip("/") + "/completions",
                          {"model": self.served.model, "prompt": prompt + ids, **logprobs.forced_params(self.k)})
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise MalformedResponseError("teacher forcing: the completion has no choices[0]")
        return from_stored(logprobs.compact_prompt(choices[0].get("prompt_logprobs"), prompt + ids, len(prompt)))


def score_cases(scorer: Scorer, cases: Iterable[tuple[str, list[dict[str, str]], Sequence[Any]]]) -> Forced:
    """Each ``(case id, the candidate's messages, the baseline's stored log-probabilities)`` scored by teacher forcing.

    An empty answer has nothing to score; an answer whose tokens the candidate's tokenizer does not give back is not
    compared (module docstring). Both are kept in ``skipped`` with the reason.
    """
    out = Forced()
    for case_id, messages, stored in cases:
        base = from_stored(stored)
        if not base:
            out.skipped[case_id] = "the baseline's answer has no tokens"
            continue
        forced = scorer.score(messages, base)
        if [t.token for t in forced] != [t.token for t in base]:
            out.skipped[case_id] = (f"the candidate's tokenizer splits the baseline's answer into {len(forced)} tokens "
                                    f"other than its {len(base)}: the positions do not match")
            continue
        out.cases[case_id] = compare_forced(base, forced)
    return out


def score_run(session: Session, scorer: Scorer, suite: Suite, variant: VariantConfig, base_run_id: int) -> Forced:
    """Every ok answer of the baseline's run of ``suite`` that stored log-probabilities (its first sample: at
    temperature 0 a case has one answer), scored by the candidate ``variant`` after its own messages for the case."""
    rows = session.execute(select(CaseResult.case_id, CaseResult.logprobs).where(
        CaseResult.run_id == base_run_id, CaseResult.status == "ok", CaseResult.sample_index == 0,
        CaseResult.logprobs.is_not(None)))
    stored = {case_id: value for case_id, value in rows}
    return score_cases(scorer, ((case.id, suite.messages(case, variant.system_prompt), stored[case.id])
                                for case in suite.cases if case.id in stored))
