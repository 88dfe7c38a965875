"""The base of every user-facing model: unknown keys are errors, not silently ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    """Base for every user-facing model: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")
