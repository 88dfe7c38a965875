"""Serving: how a variant is reached (an endpoint, or a server evalsvc starts and stops), and the client that asks it."""

from evalsvc.serving.base import Served, ServingBackend, backend, serve

__all__ = ["Served", "ServingBackend", "backend", "serve"]
