"""`harness:` in a suite header: one lm-eval task instead of JSONL cases."""

from __future__ import annotations

from pydantic import Field

from evalsvc.config.base import Strict


class HarnessSpec(Strict):
    task: str = Field(description="task name: a YAML in 'include', or one from lm-eval's registry")
    include: str | None = Field(None, description="folder of task YAMLs, relative to the suite header")
    num_fewshot: int | None = Field(None, ge=0)
    limit: int | None = Field(None, ge=1, description="only the first N documents")
