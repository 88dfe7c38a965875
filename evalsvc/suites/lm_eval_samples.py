"""lm-eval's per-sample records (``--log_samples`` lines, or ``simple_evaluate``'s ``samples``) as evalsvc case results.

Both a harness suite run by evalsvc (``engine.harness``) and an lm-eval output imported from elsewhere
(``importers.lm_eval_output``) read them here, so the two give the same case id, output and scores for
the same document.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from evalsvc.suites.harness import BINARY_METRICS

NULL_ANSWER = "\x00evalsvc: the endpoint returned null content\x00"  # what lm-eval puts where an answer was null
NULL_CAUSE = ("the endpoint returned null content (no answer text: a content filter, a reasoning model out of "
              "tokens, or a server fault)")


@dataclass(frozen=True)
class Sample:
    case_id: str
    output: str
    scores: dict[str, float]
    doc: dict[str, Any]
    error: str | None = None  # set for a document that got no answer: stored as an errored case, never scored




class SampleError(ValueError):
    """A record that is not the shape lm-eval writes; ``index`` is its place in the list given to ``samples_of``."""

    def __init__(self, index: int, problem: str) -> None:
        self.index, self.problem = index, problem
        super().__init__(f"sample {index}: {problem}")


def samples_of(raw: list[dict[str, Any]], metrics: list[str], scored_by_loglikelihood: bool = False) -> list[Sample]:
    """One sample per document: the first filter's result (the one lm-eval lists first). A loglikelihood task's output
    is its per-request log-likelihoods as JSON ({"loglikelihoods": [...], "greedy": [...]}, one per choice for a
    multiple-choice task), so they can be checked against a reference and an upstream change shows in them.

    A case's id is its document's ``id`` where every document has a distinct one, else ``doc-<doc_id>`` for all of
    them (a task whose ids repeat would otherwise store two documents as one case). A record of the wrong shape
    (no answer in ``resps``, a log-likelihood that is no number) raises ``SampleError`` naming it."""
    out: dict[int, Sample] = {}
    first_filter = raw[0]["filter"] if raw else None
    kept = [(i, s) for i, s in enumerate(raw) if s["filter"] == first_filter]
    docs: dict[int, Any] = {}
    for _, s in kept:
        docs.setdefault(s["doc_id"], s["doc"])
    ids = [str(d["id"]) for d in docs.values() if isinstance(d, dict) and "id" in d]
    own_ids = len(ids) == len(docs) and len(set(ids)) == len(ids)
    for index, s in kept:
        if s["doc_id"] in out:
            continue
        doc = s["doc"]
        case_id = str(doc["id"]) if own_ids else f"doc-{s['doc_id']}"
        scores = {m: float(s[m]) for m in metrics if isinstance(s.get(m), int | float)}
        binary = [v for m, v in scores.items() if m in BINARY_METRICS]
        if binary:
            scores["pass"] = float(all(v >= 1.0 for v in binary))
        try:
            output = _loglikelihoods(s) if scored_by_loglikelihood else _answer(s)
        except (IndexError, KeyError, TypeError, ValueError) as exc:
            raise SampleError(index, f"field 'resps' is not what lm-eval writes ({type(exc).__name__}: {exc})") from None
        doc = doc if isinstance(doc, dict) else {"doc": doc}
        if output == NULL_ANSWER:
            out[s["doc_id"]] = Sample(case_id, "", {}, doc, error=f"NullContent: {NULL_CAUSE}")
            continue
        out[s["doc_id"]] = Sample(case_id, str(output), scores, doc)
    return [out[k] for k in sorted(out)]


def _answer(s: dict[str, Any]) -> str:
    """The generated text: ``resps`` is one list of answers per request, the first answer of the first request."""
    if not s.get("resps"):
        return ""
    first = s["resps"][0]
    if not isinstance(first, list) or not first or not isinstance(first[0], str):
        raise ValueError(f"resps[0] is {json.dumps(first)[:60]}, not a list holding the answer's text")
    return first[0]


def _loglikelihoods(s: dict[str, Any]) -> str:
    pairs = [r[0] if isinstance(r, list | tuple) and r and isinstance(r[0], list | tuple) else r
             for r in s.get("filtered_resps") or [x[0] for x in s.get("resps") or []]]
    for p in pairs:
        if not isinstance(p, list | tuple) or len(p) < 2 or isinstance(p[0], bool) or not isinstance(p[0], int | float) \
                or not math.isfinite(p[0]):
            raise ValueError(f"{json.dumps(p)[:60]} is not a [log-likelihood, is-greedy] pair")
    return json.dumps({"loglikelihoods": [float(p[0]) for p in pairs], "greedy": [bool(p[1]) for p in pairs]})
