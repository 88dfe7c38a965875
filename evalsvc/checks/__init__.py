"""Checks: everything that turns one output into metric values, the LLM judge check included.

Built-ins and plugins register through one registry (``evalsvc.checks.base``).
"""

from evalsvc.checks.base import Case, Check, MetricSpec, UnknownCheck, build_check, check, metric_specs, registry, score_output

__all__ = ["Case", "Check", "MetricSpec", "UnknownCheck", "build_check", "check", "metric_specs", "registry", "score_output"]
