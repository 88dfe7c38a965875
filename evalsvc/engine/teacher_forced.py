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

A gate runs it (``force_runs``) after the candidate's runs, while the candidate's server is still up, where
``divergence.mode`` asks for it (``wanted``), and stores each case's result (``store.schema.ForcedCase``), so that the
verdicts and the dashboard read it without asking again, and a gate of the same pair asks only what is missing. An
endpoint error is never fatal: the case is stored as an error with its cause, and the verdicts compare it on the shared
prefix instead, saying so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from evalsvc.config.divergence import DivergenceConfig
from evalsvc.config.variants import VariantConfig
from evalsvc.errors import ConfigError, EndpointError, FatalEndpointError, MalformedResponseError, TransientEndpointError
from evalsvc.serving import Served, logprobs
from evalsvc.stats.divergence import CaseDivergence, Token, compare_forced, from_stored
from evalsvc.store.schema import CaseResult, ForcedCase
from evalsvc.suites import Suite

BREAKER = 3  # endpoint errors in a row after which a run's other cases are not asked (the server is likely gone)


def supports(variant: VariantConfig) -> bool:
    """Whether the variant's engine scores a given continuation: evalsvc's vLLM backend (``local.engine: vllm``)."""
    return variant.local is not None and variant.local.engine == "vllm"


def wanted(divergence: DivergenceConfig, variant: VariantConfig) -> bool:
    """Whether a gate scores the candidate ``variant`` by teacher forcing under ``divergence.mode``: ``auto`` where it
    can, ``teacher_forced`` always (a variant that cannot is a configuration error), ``shared_prefix`` never; and only
    where runs store log-probabilities (``top_logprobs`` 0: the baseline has no answer to score against)."""
    if divergence.mode == "shared_prefix":
        return False
    if supports(variant):
        return divergence.top_logprobs > 0
    if divergence.mode == "teacher_forced":
        served_by = f"local.engine: {variant.local.engine}" if variant.local is not None else "an endpoint"
        raise ConfigError("divergence.mode", f"teacher_forced needs a candidate whose engine scores a given "
                          f"continuation (vLLM's prompt_logprobs), and variant '{variant.name}' is served by {served_by}",
                          f"serve '{variant.name}' with local.engine: vllm, or set divergence.mode: auto (teacher-forced "
                          "where the candidate supports it, else the shared prefix) or shared_prefix")
    return False


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


def _answers(session: Session, run_id: int) -> dict[str, Any]:
    """Each ok case's stored log-probabilities (its first sample: at temperature 0 a case has one answer); a JSON null
    (an answer stored without them) is not SQL NULL, so it is left out here."""
    rows = session.execute(select(CaseResult.case_id, CaseResult.logprobs).where(
        CaseResult.run_id == run_id, CaseResult.status == "ok", CaseResult.sample_index == 0,
        CaseResult.logprobs.is_not(None)))
    return {case_id: value for case_id, value in rows if value is not None}


def force_runs(engine: Engine, served: Served, variant: VariantConfig, k: int,
               pairs: Sequence[tuple[Suite, int, int]]) -> int:
    """Score the served candidate ``variant`` on each ``(suite, baseline run id, candidate run id)``'s baseline
    answers and store every case (``ForcedCase``); returns how many cases were asked. A case already stored ok or
    skipped is not asked again; one stored as an error is. After ``BREAKER`` endpoint errors in a row the run's other
    cases are stored as errors without being asked."""
    scorer = Scorer(served, k)
    asked = 0
    try:
        for suite, base_run_id, cand_run_id in pairs:
            if suite.harness is None:
                asked += _force_run(engine, scorer, suite, variant, base_run_id, cand_run_id)
    finally:
        scorer.close()
    return asked


def _force_run(engine: Engine, scorer: Scorer, suite: Suite, variant: VariantConfig, base_run_id: int,
               cand_run_id: int) -> int:
    key = {"candidate_run_id": cand_run_id, "baseline_run_id": base_run_id}
    with Session(engine) as s:
        done = set(s.scalars(select(ForcedCase.case_id).filter_by(**key).where(ForcedCase.status != "error")))
        stored = _answers(s, base_run_id)
    todo = [(case.id, suite.messages(case, variant.system_prompt), stored[case.id])
            for case in suite.cases if case.id in stored and case.id not in done]
    errors, last, asked = 0, "", 0
    for case_id, messages, answer in todo:
        row = ForcedCase(case_id=case_id, **key)
        if errors >= BREAKER:
            row.status, row.note = "error", f"not asked after {BREAKER} endpoint errors in a row (the last: {last})"
        else:
            asked += 1
            try:
                one = score_cases(scorer, [(case_id, messages, answer)])
            except (EndpointError, ValueError) as exc:  # (ValueError: an answer that is not JSON)
                errors, last = errors + 1, str(exc) or type(exc).__name__
                row.status, row.note = "error", last
            else:
                errors = 0
                _fill(row, one)
        with Session(engine) as s:
            s.merge(row)
            s.commit()
    return asked


def _fill(row: ForcedCase, one: Forced) -> None:
    """A scored case's numbers, or why it was skipped."""
    if row.case_id in one.skipped:
        row.status, row.note = "skipped", one.skipped[row.case_id]
        return
    d = one.cases[row.case_id]
    row.status, row.note = "ok", None  # (over an earlier error's note)
    row.kld, row.top1_agreement, row.delta_p, row.same_output = d.kld, d.top1_agreement, d.delta_p, d.same_output
    row.first_divergence, row.positions = d.first_divergence, d.positions
    row.baseline_token, row.candidate_token = d.baseline_token, d.candidate_token
