"""Pass/fail checks on the text of an answer."""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Literal

from pydantic import Field, field_validator, model_validator

from evalsvc.checks.base import Case, Check, check


def normalise(text: str, ignore_case: bool) -> str:
    """NFKC, collapsed whitespace, trailing punctuation dropped: "Paris." equals "paris"."""
    text = " ".join(unicodedata.normalize("NFKC", text).split()).strip().rstrip(".!?;:")
    return text.casefold() if ignore_case else text


@check("exact")
class Exact(Check):
    type: Literal["exact"] = "exact"
    value: str
    ignore_case: bool = True

    def score(self, output: str, case: Case) -> dict[str, float]:
        return {self.label: float(normalise(output, self.ignore_case) == normalise(self.value, self.ignore_case))}


@check("contains")
class Contains(Check):
    """The answer contains ``value`` (or, with ``any_of``, at least one of several strings)."""

    type: Literal["contains"] = "contains"
    value: str | None = None
    any_of: list[str] | None = None
    ignore_case: bool = True
    word: bool = Field(True, description="match whole words only, so '4' does not match '42'")

    @model_validator(mode="after")
    def _one_target(self) -> Contains:
        if (self.value is None) == (not self.any_of):
            raise ValueError("give exactly one of 'value' (a string) or 'any_of' (a list of strings)")
        return self

    def score(self, output: str, case: Case) -> dict[str, float]:
        targets = [self.value] if self.value is not None else list(self.any_of or [])
        flags = re.IGNORECASE if self.ignore_case else 0
        text = unicodedata.normalize("NFKC", output)
        for t in targets:
            pat = re.escape(unicodedata.normalize("NFKC", t))
            if self.word:
                pat = rf"(?<!\w){pat}(?!\w)"
            if re.search(pat, text, flags):
                return {self.label: 1.0}
        return {self.label: 0.0}


@check("any_of")
class AnyOf(Contains):
    """Shorthand for ``contains`` with ``any_of``."""

    type: Literal["any_of"] = "any_of"  # type: ignore[assignment]


@check("regex")
class Regex(Check):
    type: Literal["regex"] = "regex"
    pattern: str
    ignore_case: bool = True
    full_match: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern!r}: {exc}; escape special characters with a backslash") from None
        return pattern

    def score(self, output: str, case: Case) -> dict[str, float]:
        flags = re.IGNORECASE if self.ignore_case else 0
        fn = re.fullmatch if self.full_match else re.search
        return {self.label: float(fn(self.pattern, output.strip(), flags) is not None)}


_NUMBER = re.compile(r"-?\d[\d,]*\.?\d*(?:[eE][-+]?\d+)?|-?\.\d+")


def numbers_in(text: str) -> list[float]:
    out = []
    for m in _NUMBER.finditer(text):
        token = m.group().replace(",", "").rstrip(".")
        try:
            out.append(float(token))
        except ValueError:
            continue
    return out


@check("numeric")
class Numeric(Check):
    """A number in the answer equals ``value`` within ``tolerance`` (absolute)."""

    type: Literal["numeric"] = "numeric"
    value: float
    tolerance: float = Field(1e-6, ge=0)
    match: Literal["first", "last", "any"] = Field(
        "first", description="which number in the answer counts; 'any' is lenient"
    )

    def score(self, output: str, case: Case) -> dict[str, float]:
        nums = numbers_in(output)
        if not nums:
            return {self.label: 0.0}
        pool = nums if self.match == "any" else [nums[0] if self.match == "first" else nums[-1]]
        ok = any(math.isclose(n, self.value, rel_tol=0.0, abs_tol=self.tolerance) for n in pool)
        return {self.label: float(ok)}


@check("length")
class Length(Check):
    """Answer length in words within [min_words, max_words]."""

    type: Literal["length"] = "length"
    min_words: int = Field(0, ge=0)
    max_words: int | None = Field(None, ge=1)

    def score(self, output: str, case: Case) -> dict[str, float]:
        n = len(output.split())
        ok = n >= self.min_words and (self.max_words is None or n <= self.max_words)
        return {self.label: float(ok)}


_REFUSAL = re.compile(
    r"\b(I\s+(?:can(?:no|')?t|am\s+(?:not\s+able|unable)|won'?t|will\s+not)\s+(?:help|assist|provide|answer|do|comply)"
    r"|I'?m\s+(?:sorry|afraid|unable|not\s+able)|as\s+an\s+AI\b|I\s+must\s+decline)",
    re.IGNORECASE,
)


@check("refusal")
class Refusal(Check):
    """Passes when the answer refuses (``expect: true``) or does not refuse (``expect: false``)."""

    type: Literal["refusal"] = "refusal"
    expect: bool = False

    def score(self, output: str, case: Case) -> dict[str, float]:
        refused = _REFUSAL.search(output) is not None
        return {self.label: float(refused == self.expect)}
