"""Suites: what to ask and how to score it, loaded from files, validated and content-hashed."""

from evalsvc.checks.base import Case
from evalsvc.suites.loader import Cases, Suite, discover, load_suite, resolve

__all__ = ["Case", "Cases", "Suite", "discover", "load_suite", "resolve"]
