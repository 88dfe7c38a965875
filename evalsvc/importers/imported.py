"""What a reader makes of a results file: one run of one task, its cases and the identities the file carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from evalsvc.checks.base import MetricSpec
from evalsvc.errors import UserInputError
from evalsvc.identity import content_hash


class ImportFileError(UserInputError):
    """A results file made elsewhere does not parse: names the file, line and field."""


@dataclass(frozen=True)
class ImportedCase:
    case_id: str
    spec: dict[str, Any]  # the case's content as the file has it (lm-eval's doc)
    output: str | None
    scores: dict[str, float] | None
    sample_index: int = 0  # a repeated draw of the case (an epoch)
    error: str | None = None  # the case got no answer: stored as an errored case, never scored


@dataclass
class ImportedRun:
    source: str  # the tool and its version that made and scored it, e.g. "lm-eval 0.4.13" (stored as the run's scorer)
    file: str
    suite_name: str
    suite_identity: dict[str, Any]  # what makes the task: hashed into the suite version
    variant_identity: dict[str, Any]  # what the file says about the model: hashed into the variant fingerprint
    metrics: dict[str, MetricSpec]
    cases: list[ImportedCase]
    created_at: datetime  # when the evaluation ran: the run's place in the time series
    file_hash: str  # of the file(s) read: the run's slot is import:<file_hash>, so importing it again changes nothing
    error: str | None = None  # the tool's own run failed or was cancelled: stored as a failed run
    header: dict[str, Any] = field(default_factory=dict)  # shown with the suite (task name, version, file)

    @property
    def suite_version(self) -> str:
        return content_hash({"imported_suite": self.suite_identity})


def variant_fingerprint(name: str, family: str, quantization: str | None, identity: dict[str, Any]) -> str:
    """An imported variant's fingerprint: the name, family and quantization given on the command line and the
    model identity the file carries; importing more files of the same model under the same name extends its series."""
    return content_hash({"imported_variant": {"name": name, "family": family, "quantization": quantization, **identity}})
