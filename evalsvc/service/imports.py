"""``evalsvc import``: results made by lm-eval or inspect_ai, stored as runs of an imported variant.

The whole input is read and checked first (``evalsvc.importers``), so a file that does not parse writes
nothing; each run then goes in one transaction, and one imported before is found and left as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from evalsvc.config import DEFAULT_CONFIG, Config, load_config, store_url
from evalsvc.errors import ConfigError
from evalsvc.importers.imported import ImportedRun
from evalsvc.importers.store import Recorded, record
from evalsvc.store.db import open_engine


def import_runs(read: Callable[[Path], list[ImportedRun]], path: Path, config_path: str, name: str, family: str,
                quantization: str | None, suite: str | None) -> list[Recorded]:
    runs = read(path)
    if suite is not None:
        if len({r.suite_name for r in runs}) > 1:
            raise ConfigError("--suite", f"{path} holds several tasks ({', '.join(sorted({r.suite_name for r in runs}))})",
                              "import one results file at a time to name its suite, or leave --suite out")
        for r in runs:
            r.suite_name = suite
    cfg = _config(config_path)
    if cfg is not None and any(v.name == name for v in cfg.variants):
        raise ConfigError(f"--variant {name}", f"{config_path} configures a variant of that name, whose results come from "
                          "its own runs", "import under another name (e.g. the name with a suffix such as -lm-eval)")
    engine = open_engine(store_url(config_path))
    try:
        return [record(engine, r, name, family, quantization) for r in runs]
    finally:
        engine.dispose()


def _config(config_path: str) -> Config | None:
    """The config when there is one (import needs only a store: EVALSVC_STORE alone will do)."""
    if config_path == DEFAULT_CONFIG and not Path(config_path).exists():
        return None
    return load_config(config_path)
