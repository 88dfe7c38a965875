"""ROUGE against references, and ROUGE grounding against the case's context.

ROUGE is Lin (2004), "ROUGE: A Package for Automatic Evaluation of Summaries",
computed by ``evalsvc.checks.fast_rouge``: bit for bit the scores of Google's
``rouge-score`` package (the reference implementation used by ``evaluate``), in a
fraction of its time (docs/performance.md). Grounding reuses ROUGE-N *precision* with
the context as the reference: the share of the answer's n-grams (clipped counts) that occur in the
retrieved text. An answer copied from the context scores 1; an invented one near 0.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import Field

from evalsvc.checks import fast_rouge
from evalsvc.checks.base import Case, Check, MetricSpec, check

RougeType = Literal["rouge1", "rouge2", "rougeL", "rougeLsum"]

# Function words carry no claim: an answer is not "unsupported" for saying "the".
_STOPWORDS = frozenset(
    "a an the and or but of to in on at by for with from as is are was were be been being it its this that these "
    "those there their they them he she his her we you your i me my our not no yes do does did so than then".split()
)


def _tokens(text: str) -> list[str]:
    from rouge_score import tokenize

    return tokenize.tokenize(text, None)


@check("rouge")
class Rouge(Check):
    """F-measure of each ROUGE type against the best-matching reference."""

    type: Literal["rouge"] = "rouge"
    rouge_types: list[RougeType] = Field(default_factory=lambda: ["rouge1", "rouge2", "rougeL"])
    use_stemmer: bool = False
    threshold: float | None = Field(None, ge=0, le=1, description="case passes when the first type's F >= threshold")
    needs = ("references",)

    def _metric(self, rouge_type: str) -> str:
        return f"{self.name}_{rouge_type}" if self.name else rouge_type

    def metrics(self) -> list[MetricSpec]:
        return [MetricSpec(self._metric(t), "continuous") for t in self.rouge_types]

    @property
    def gives_verdict(self) -> bool:
        return self.threshold is not None

    def score(self, output: str, case: Case) -> dict[str, float]:
        if self.rouge_types and "rougeLsum" in self.rouge_types:
            # rougeLsum splits sentences on newlines; nltk's splitter needs data we cannot download.
            output = "\n".join(s.strip() for s in output.replace(". ", ".\n").splitlines())
        best = {t: 0.0 for t in self.rouge_types}
        for res in fast_rouge.score_multi(output, case.references, self.rouge_types, self.use_stemmer):
            for t in self.rouge_types:
                best[t] = max(best[t], res[t].fmeasure)
        return {self._metric(t): v for t, v in best.items()}

    def passed(self, scores: dict[str, float]) -> bool | None:
        if self.threshold is None:
            return None
        return scores[self._metric(self.rouge_types[0])] >= self.threshold


@check("grounding")
class Grounding(Check):
    """How much of the answer is supported by the context (ROUGE-N precision against it).

    Emits ``grounding`` (higher is better) and ``unsupported_rate``: the share of the
    answer's content words (stopwords removed) that never occur in the context.
    """

    type: Literal["grounding"] = "grounding"
    n: int = Field(1, ge=1, le=4)
    threshold: float | None = Field(None, ge=0, le=1)
    needs = ("context",)

    @property
    def _g(self) -> str:
        return self.name or "grounding"

    @property
    def _u(self) -> str:
        return f"{self.name}_unsupported_rate" if self.name else "unsupported_rate"

    def metrics(self) -> list[MetricSpec]:
        return [MetricSpec(self._g, "continuous"), MetricSpec(self._u, "continuous", higher_is_better=False)]

    @property
    def gives_verdict(self) -> bool:
        return self.threshold is not None

    def score(self, output: str, case: Case) -> dict[str, float]:
        answer = _tokens(output)
        context = _tokens(case.context_text)
        if not answer:
            return {self._g: 0.0, self._u: 0.0}
        a_grams = Counter(tuple(answer[i : i + self.n]) for i in range(len(answer) - self.n + 1))
        c_grams = Counter(tuple(context[i : i + self.n]) for i in range(len(context) - self.n + 1))
        total = sum(a_grams.values())
        overlap = sum(min(c, c_grams[g]) for g, c in a_grams.items())
        content = [t for t in answer if t not in _STOPWORDS]
        ctx_vocab = set(context)
        unsupported = sum(1 for t in content if t not in ctx_vocab) / len(content) if content else 0.0
        return {self._g: overlap / total if total else 0.0, self._u: unsupported}

    def passed(self, scores: dict[str, float]) -> bool | None:
        if self.threshold is None:
            return None
        return scores[self._g] >= self.threshold
