"""Serving backends: how evalsvc reaches a variant's OpenAI-compatible endpoint.

A variant with ``endpoint:`` is reached as is. A variant with ``local:`` is served by
the backend registered for its engine, which starts a server, waits until it answers,
and stops it when the work is done. Plugins add engines with ``@backend``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from evalsvc.config import VariantConfig
from evalsvc.errors import ConfigError


@dataclass(frozen=True)
class Served:
    """Where to send requests for one variant while it is being served."""

    base_url: str
    model: str
    api: str = "chat"
    api_key: str | None = None
    health: Callable[[], str | None] | None = None  # managed servers: why the server died, or None

    def failure(self) -> str | None:
        """Why a managed server is gone (exit code and log tail), or None while it runs or when unmanaged."""
        return self.health() if self.health else None


class ServingBackend(Protocol):
    def serve(self, variant: VariantConfig, log_dir: Path) -> AbstractContextManager[Served]: ...


_BACKENDS: dict[str, Callable[[], ServingBackend]] = {}
# Built-in backends register with @backend when their module is first needed, as a plugin's do.
BUILTINS = {"llama.cpp": "evalsvc.serving.llamacpp", "vllm": "evalsvc.serving.vllm"}


def backend(engine: str) -> Callable[[Callable[[], ServingBackend]], Callable[[], ServingBackend]]:
    def register(factory: Callable[[], ServingBackend]) -> Callable[[], ServingBackend]:
        _BACKENDS[engine] = factory
        return factory

    return register


@contextmanager
def serve(variant: VariantConfig, log_dir: Path) -> Iterator[Served]:
    """Yield the endpoint of ``variant``, starting and stopping a managed server if it has one."""
    if variant.endpoint is not None:
        ep = variant.endpoint
        yield Served(ep.base_url, ep.model, ep.api, ep.api_key())
        return
    assert variant.local is not None
    engine = variant.local.engine
    if engine in BUILTINS and engine not in _BACKENDS:
        importlib.import_module(BUILTINS[engine])  # registers it, as a plugin module would
    if engine not in _BACKENDS:
        raise ConfigError(f"variants.{variant.name}.local.engine", f"no serving backend for '{engine}'",
                          f"known engines: {', '.join(sorted(_BACKENDS.keys() | BUILTINS.keys()))}")
    with _BACKENDS[engine]().serve(variant, log_dir) as served:
        yield served
