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
    """Check the store opens read-only, then replace this process with ``streamlit run`` on the packaged app."""
    cfg = load_config(config_path)
    open_readonly(dashboard_url(cfg)).dispose()  # fail here, with the reason, rather than in the browser
    app = Path(importlib.util.find_spec("evalsvc.dashboard").origin).parent / "app.py"  # shipped in the package
    env = {**os.environ, "EVALSVC_CONFIG": str(Path(config_path).resolve())}
    argv = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless=true", f"--server.address={address}",
            f"--server.port={port or cfg.dashboard.port}", "--browser.gatherUsageStats=false", "--client.toolbarMode=viewer",
            "--server.fileWatcherType=none"]
    echo(f"dashboard: http://{address}:{port or cfg.dashboard.port}/ (Ctrl-C stops it)")
    os.execvpe(argv[0], argv, env)
