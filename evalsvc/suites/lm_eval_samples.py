"""lm-eval's per-sample records (``--log_samples`` lines, or ``simple_evaluate``'s ``samples``) as evalsvc case results.

Both a harness suite run by evalsvc (``engine.harness``) and an lm-eval output imported from elsewhere
(``importers.lm_eval_output``) read them here, so the two give the same case id, output and scores for
the same document.
"""

from __future__ import annotations

import json
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




def samples_of(raw: list[dict[str, Any]], metrics: list[str], scored_by_loglikelihood: bool = False) -> list[Sample]:
    """One sample per document: the first filter's result (the one lm-eval lists first). A loglikelihood task's output
    is its per-request log-likelihoods as JSON ({"loglikelihoods": [...], "greedy": [...]}, one per choice for a
    multiple-choice task), so they can be checked against a reference and an upstream change shows in them."""
    out: dict[int, Sample] = {}
    first_filter = raw[0]["filter"] if raw else None
    for s in raw:
        if s["filter"] != first_filter or s["doc_id"] in out:
            continue
        doc = s["doc"]
        case_id = str(doc.get("id", f"doc-{s['doc_id']}")) if isinstance(doc, dict) else f"doc-{s['doc_id']}"
        scores = {m: float(s[m]) for m in metrics if isinstance(s.get(m), int | float)}
        binary = [v for m, v in scores.items() if m in BINARY_METRICS]
        if binary:
            scores["pass"] = float(all(v >= 1.0 for v in binary))
        if scored_by_loglikelihood:
            pairs = [r[0] if isinstance(r, list | tuple) and r and isinstance(r[0], list | tuple) else r
                     for r in s.get("filtered_resps") or [x[0] for x in s.get("resps") or []]]
            output = json.dumps({"loglikelihoods": [float(p[0]) for p in pairs], "greedy": [bool(p[1]) for p in pairs]})
        else:
            output = s["resps"][0][0] if s.get("resps") else ""
        doc = doc if isinstance(doc, dict) else {"doc": doc}
        if output == NULL_ANSWER:
            out[s["doc_id"]] = Sample(case_id, "", {}, doc, error=f"NullContent: {NULL_CAUSE}")
            continue
        out[s["doc_id"]] = Sample(case_id, str(output), scores, doc)
    return [out[k] for k in sorted(out)]
