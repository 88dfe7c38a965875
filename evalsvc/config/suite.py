"""A suite as the user writes it: the YAML header and one JSONL line per case (see evalsvc.suites)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from evalsvc.config.base import Strict
from evalsvc.config.harness import HarnessSpec
from evalsvc.config.variants import Generation


class Message(Strict):
    role: str = Field(pattern="^(system|user|assistant)$")
    content: str


class CaseSpec(Strict):
    """One line of a suite's JSONL file, as written by the user."""

    id: str = Field(min_length=1, max_length=200)
    input: str | list[Message]
    context: str | list[str] | None = None
    references: list[str] = Field(default_factory=list)
    checks: list[dict[str, Any]] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("input")
    @classmethod
    def _not_empty(cls, v: str | list[Message]) -> str | list[Message]:
        if not v:
            raise ValueError("input is empty: give a prompt string or a list of chat messages")
        return v


class SuiteHeader(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    cases: str | None = Field(None, description="path of the JSONL file, relative to this header")
    harness: HarnessSpec | None = Field(None, description="an lm-eval task instead of JSONL cases")
    prompt_template: str | None = None
    system_prompt: str | None = None
    checks: list[dict[str, Any]] = Field(default_factory=list)
    generation: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _cases_or_harness(self) -> SuiteHeader:
        if (self.cases is None) == (self.harness is None):
            raise ValueError("give exactly one of 'cases' (a JSONL file) or 'harness' (an lm-eval task)")
        return self

    @field_validator("generation")
    @classmethod
    def _known_generation_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        Generation.model_validate(v)
        return v
