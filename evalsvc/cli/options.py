"""Options shared by evalsvc's commands."""

import click

# evalsvc.config.DEFAULT_CONFIG, named again so that building the commands (`evalsvc --help`) imports no config
# schema; tests/test_cli.py keeps the two equal
DEFAULT_CONFIG = "evalsvc.yaml"

CONFIG_OPTION = click.option("--config", "-c", "config_path", default=DEFAULT_CONFIG, show_default=True,
                             type=click.Path(dir_okay=False), help="evalsvc.yaml to read.")
