"""`evalsvc --help` imports click and the command modules, nothing heavy; each command is loaded by name when asked for.

Deterministic checks on what is imported, not timings (bench/cli_startup.py measures those; docs/performance.md).
"""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from evalsvc.cli import COMMANDS, main
from evalsvc.cli.options import DEFAULT_CONFIG
from evalsvc.config import DEFAULT_CONFIG as CONFIG_DEFAULT
from tests.conftest import ROOT

HEAVY = {"pydantic", "pydantic_core", "yaml", "sqlalchemy", "alembic", "apscheduler", "pandas", "numpy", "scipy", "httpx",
         "tqdm", "lm_eval", "datasets", "streamlit", "prometheus_client", "slack_sdk"}


def _modules_after(argv: list[str]) -> set[str]:
    code = ("import sys; from evalsvc.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} | {m for m in sys.modules if m.startswith('evalsvc')})),"
            " file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return set(out.stderr.split())


def test_help_imports_no_config_schema_store_engine_or_data_library() -> None:
    loaded = _modules_after(["--help"])
    assert "click" in loaded and "evalsvc.cli.evaluate" in loaded  # the help really listed the commands
    assert loaded & HEAVY == set()
    assert not {m for m in loaded if m.startswith(("evalsvc.config", "evalsvc.store", "evalsvc.engine", "evalsvc.service"))}


def test_a_commands_own_help_imports_none_of_them_either() -> None:
    assert _modules_after(["gate", "--help"]) & HEAVY == set()


def test_every_registered_command_loads_under_its_name_and_help_lists_them_all() -> None:
    top = CliRunner().invoke(main, ["--help"]).output
    with click.Context(main) as ctx:
        for name in COMMANDS:
            command = main.get_command(ctx, name)
            assert isinstance(command, click.Command) and command.name == name
            assert f"  {name} " in top


def test_a_mistyped_command_suggests_the_near_names_of_commands_not_loaded_yet() -> None:
    out = subprocess.run([sys.executable, "-m", "evalsvc.cli", "gat"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2 and "Did you mean 'gate'?" in out.stderr


def test_the_cli_default_config_name_is_the_configs() -> None:
    assert DEFAULT_CONFIG == CONFIG_DEFAULT
