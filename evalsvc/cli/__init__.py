"""The ``evalsvc`` command line.

Exit codes (shared by every command): 0 ok, 1 regression, 2 could not evaluate
(bad config or suite, endpoint or store failure, failed run), 3 inconclusive. 1 means a regression and nothing
else: click's own usage errors, a missing extra and any unexpected exception exit 2 here (``_Group.invoke``).

Commands are registered by name as ``"module:attr"`` strings and imported when first asked for
(click's lazy group pattern). The command modules import click and nothing heavy at their top: the config
schema, the store and the engine are imported inside each command, so ``evalsvc --help`` starts in a
fraction of the time a command that reads evalsvc.yaml takes (docs/performance.md).
"""

from __future__ import annotations

import importlib
import signal
import sys
import traceback

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

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each command's whole first sentence, wrapped (click cuts it at the line's width with "...")."""
        rows = [(name, cmd.get_short_help_str(limit=300)) for name in self.list_commands(ctx)
                if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        # SIGTERM unwinds like Ctrl-C, so managed model servers are stopped, not orphaned
        signal.signal(signal.SIGTERM, _terminate)
        try:
            return super().invoke(ctx)
        except EvalsvcError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Exit:  # --help, and ctx.exit(): click's own way out, with its code
            raise
        except click.ClickException as exc:  # click exits 1 on its own errors; 1 is the gate's "regression"
            exc.exit_code = 2
            raise
        except click.Abort:  # Ctrl-C while click prompts
            sys.exit(130)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except ModuleNotFoundError as exc:
            extra = missing_extra(exc.name)
            if extra is None:
                _internal_error(exc)
            click.echo(f"error: this command needs the Python package '{exc.name}', which evalsvc installs with its "
                       f"'{extra}' extra\n  fix: pip install 'evalsvc[{extra}]'", err=True)
            sys.exit(2)
        except Exception as exc:  # a bug: never exit 1 (a regression) for it, and say where to report it
            _internal_error(exc)


# the optional dependencies' top-level modules -> the extra in pyproject.toml that installs them
EXTRAS = {"apscheduler": "service", "slack_sdk": "service", "prometheus_client": "service", "streamlit": "dashboard",
          "pandas": "dashboard", "authlib": "dashboard", "psycopg": "postgres", "pyarrow": "export", "ray": "ray",
          "lm_eval": "harness", "evaluate": "harness", "transformers": "harness", "statsmodels": "harness",
          "inspect_ai": "inspect", "llama_cpp": "local"}


def missing_extra(module: str | None) -> str | None:
    """The extra whose install brings ``module`` (a dotted name counts by its top package), None for others."""
    return EXTRAS.get((module or "").partition(".")[0])


def _internal_error(exc: BaseException) -> None:
    traceback.print_exception(exc, file=sys.stderr)
    click.echo(f"error: evalsvc failed unexpectedly ({type(exc).__name__}: {exc}); nothing was decided (exit 2). "
               "Please report it with the traceback above.", err=True)
    sys.exit(2)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="evalsvc", prog_name="evalsvc", message="%(prog)s %(version)s")
def main() -> None:
    """Evaluate LLM variants and catch quality regressions, with results in a time-series store.

    \b
    Typical first steps:
      evalsvc init --quickstart    two endpoints you have, a SQLite store, a sample suite
                                   (without it: the production starter; --demo: local SmolLM2)
      evalsvc suites validate      check every suite, and how many cases a gate needs
      evalsvc gate --candidate X   measure baseline and candidate now and compare them
      evalsvc run                  all suites x all variants, into the store
      evalsvc results              latest score of each variant on each suite

    A run is (suite version x variant fingerprint x slot). Editing a suite or a
    variant's checkpoint/serving/sampling starts a new series; re-running a
    crashed or interrupted run resumes it and sends only the missing requests.
    """
