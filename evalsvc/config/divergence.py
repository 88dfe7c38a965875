"""`divergence:` in evalsvc.yaml: the log-probabilities a run asks for, for the divergence from the baseline."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from evalsvc.config.base import Strict


class DivergenceConfig(Strict):
    """How many top log-probabilities each generated token is asked with, and how a candidate is compared with its
    baseline (docs/divergence.md).

    Neither is part of the variant fingerprint: asking for log-probabilities, or scoring the baseline's answers
    afterwards, does not change the answers.
    """

    top_logprobs: int = Field(5, ge=0, le=20, description="alternatives asked per generated token (chat: logprobs: "
                              "true, top_logprobs: K; completions: logprobs: K) and stored with each answer; 0 asks for "
                              "none. OpenAI's chat API allows at most 20, its completions API 5")
    mode: Literal["auto", "shared_prefix", "teacher_forced"] = Field(
        "auto", description="how the gate compares the candidate's distributions with the baseline's: teacher_forced "
        "scores the candidate on every token of the baseline's stored answers (a variant served with local.engine: "
        "vllm); shared_prefix compares the two generated answers up to their first difference; auto takes "
        "teacher_forced where the candidate supports it and the baseline's run stored log-probabilities, else "
        "shared_prefix")
