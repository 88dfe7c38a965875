"""The environment a model server starts with: this process's, less evalsvc's secrets.

A model server runs code evalsvc does not control (a checkpoint's remote code, an engine's plugins); on a Ray node
its task holds the key to the Ray Jobs API (RAY_AUTH_TOKEN: code on every pod) and the store's URL with its password
(EVALSVC_STORE), which that code could use to submit jobs or rewrite stored results. None of them is the server's
business: what it needs (CUDA, HF_HOME and HF_TOKEN for a hub checkpoint, PATH, proxies) stays.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

SECRET_NAMES = {"RAY_AUTH_TOKEN", "EVALSVC_STORE", "EVALSVC_DASHBOARD_STORE", "PGPASSWORD", "PGPASSFILE", "PGSERVICEFILE",
                "DATABASE_URL"}
SECRET_PATTERN = re.compile(r"_API_KEY$|SECRET|PASSWORD|WEBHOOK|^SLACK_", re.IGNORECASE)
KEPT = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}  # a hub checkpoint is the server's own business


def server_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default: this process's environment) without evalsvc's secrets, plus ``extra``."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k in KEPT or (k not in SECRET_NAMES and not SECRET_PATTERN.search(k))}
    return {**env, **extra}
