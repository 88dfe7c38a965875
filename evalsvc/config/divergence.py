"""`divergence:` in evalsvc.yaml: the log-probabilities a run asks for, for the divergence from the baseline."""

from __future__ import annotations

from pydantic import Field

from evalsvc.config.base import Strict


class DivergenceConfig(Strict):
    """How many top log-probabilities each generated token is asked with (docs/divergence.md).

    Not part of the variant fingerprint: asking for log-probabilities does not change the answers.
    """

    top_logprobs: int = Field(5, ge=0, le=20, description="alternatives asked per generated token (chat: logprobs: "
                              "true, top_logprobs: K; completions: logprobs: K) and stored with each answer; 0 asks for "
                              "none. OpenAI's chat API allows at most 20, its completions API 5")
