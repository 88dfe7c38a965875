"""The ``evalsvc`` command line.

Exit codes (shared by every command): 0 ok, 1 regression, 2 could not evaluate
(bad config or suite, endpoint or store failure, failed run), 3 inconclusive.

Commands are registered by name as ``"module:attr"`` strings and imported when first asked for
(click's lazy group pattern). The command modules import click and nothing heavy at their top: the config
schema, the store and the engine are imported inside each command, so ``evalsvc --help`` starts in a
fraction of the time a command that reads evalsvc.yaml takes (docs/performance.md).
"""

from __future__ import annotations

import importlib
import signal
import sys

import click

from evalsvc.errors import EvalsvcError

COMMANDS = {
    "run": "evalsvc.cli.evaluate:run",
    "results": "evalsvc.cli.evaluate:results",
    "arena": "evalsvc.cli.evaluate:arena",
    "gate": "evalsvc.cli.evaluate:gate",
    "drift": "evalsvc.cli.evaluate:drift_cmd",
    "init": "evalsvc.cli.admin:init",
    "db": "evalsvc.cli.admin:db",
    "dashboard": "evalsvc.cli.admin:dashboard",
    "suites": "evalsvc.cli.admin:suites_group",
    "variants": "evalsvc.cli.admin:variants_cmd",
    "models": "evalsvc.cli.admin:models",
    "serve": "evalsvc.cli.schedule:serve",
    "fire": "evalsvc.cli.schedule:fire",
    "schedule": "evalsvc.cli.schedule:schedule_group",
    "runs": "evalsvc.cli.browse:runs_group",
    "cases": "evalsvc.cli.browse:cases",
    "export": "evalsvc.cli.browse:export",
    "import": "evalsvc.cli.imports:import_group",
}


class _Group(click.Group):
    """Loads each command from ``COMMANDS`` on first use, and turns evalsvc's own errors into one clear message
    and exit code 2 (no traceback)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, _, attr = COMMANDS[cmd_name].partition(":")
            command = getattr(importlib.import_module(module), attr)
            if not isinstance(command, click.Command) or command.name != cmd_name:
                raise RuntimeError(f"COMMANDS[{cmd_name!r}] = {COMMANDS[cmd_name]!r} is not the click command {cmd_name!r}")
            self.add_command(command)
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.exceptions.NoSuchCommand as exc:  # suggest near names among the commands not loaded yet too
            raise click.exceptions.NoSuchCommand(exc.command_name, possibilities=self.list_commands(ctx), ctx=ctx) from None

    def invoke(self, ctx: click.Context):
        # SIGTERM unwinds like Ctrl-C, so managed model servers are stopped, not orphaned
        signal.signal(signal.SIGTERM, _terminate)
        try:
            return super().invoke(ctx)
        except EvalsvcError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def main() -> None:
    """Evaluate LLM variants and catch quality regressions, with results in a time-series store.

    \b
    Typical first steps:
      evalsvc init                 write a starter evalsvc.yaml (--demo: the local SmolLM2 one)
      evalsvc suites validate      check every suite in suites/
      evalsvc run                  all suites x all variants, into the store
      evalsvc results              latest score of each variant on each suite

    A run is (suite version x variant fingerprint x slot). Editing a suite or a
    variant's checkpoint/serving/sampling starts a new series; re-running a
    crashed or interrupted run resumes it and sends only the missing requests.
    """
