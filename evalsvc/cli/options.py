"""Options shared by evalsvc's commands."""

import click

from evalsvc.config import DEFAULT_CONFIG

CONFIG_OPTION = click.option("--config", "-c", "config_path", default=DEFAULT_CONFIG, show_default=True,
                             type=click.Path(dir_okay=False), help="evalsvc.yaml to read.")
