"""Starting the Streamlit server on the dashboard's app (``evalsvc dashboard``)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import NoReturn

from evalsvc.config import load_config
from evalsvc.store.readonly import dashboard_url, open_readonly


def launch(config_path: str, port: int | None, address: str, echo=print) -> NoReturn:
    """Check the store opens read-only (and sign-in's secrets file, when set), then replace this process with
    ``streamlit run`` on the packaged app.

    With ``dashboard.auth`` Streamlit reads the secrets file (``--secrets.files``) and no other: not a
    ``.streamlit/secrets.toml`` that happens to lie in the current directory.
    """
    cfg = load_config(config_path)
    secrets = cfg.dashboard.auth.secrets_path(Path(config_path).resolve().parent) if cfg.dashboard.auth else None
    open_readonly(dashboard_url(cfg)).dispose()  # fail here, with the reason, rather than in the browser
    app = Path(importlib.util.find_spec("evalsvc.dashboard").origin).parent / "app.py"  # shipped in the package
    env = {**os.environ, "EVALSVC_CONFIG": str(Path(config_path).resolve())}
    argv = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless=true", f"--server.address={address}",
            f"--server.port={port or cfg.dashboard.port}", "--browser.gatherUsageStats=false", "--client.toolbarMode=viewer",
            "--server.fileWatcherType=none", *([f"--secrets.files={secrets}"] if secrets else [])]
    signin = f", sign-in through {secrets}" if secrets else ", no sign-in (dashboard.auth)"
    echo(f"dashboard: http://{address}:{port or cfg.dashboard.port}/{signin} (Ctrl-C stops it)")
    os.execvpe(argv[0], argv, env)
