"""`alerts:` in evalsvc.yaml: where alert messages go. The webhook URL is a secret: only its source is here."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from evalsvc.config.base import Strict
from evalsvc.errors import ConfigError


class SlackConfig(Strict):
    webhook_env: str = Field("EVALSVC_SLACK_WEBHOOK", description="environment variable holding the webhook URL")
    webhook_file: Path | None = Field(None, description="or a secret file holding it (e.g. a mounted secret)")
    max_retries: int = Field(3, ge=0, le=10, description="retries after HTTP 429, each after its Retry-After")

    def url(self) -> str | None:
        if self.webhook_file is not None:
            try:
                return self.webhook_file.read_text().strip() or None
            except OSError as exc:
                raise ConfigError(f"alerts.slack.webhook_file {self.webhook_file}", f"cannot read it ({exc.strerror})",
                                  "point it at a readable file that holds the webhook URL") from None
        return os.environ.get(self.webhook_env) or None


class AlertsConfig(Strict):
    dashboard_url: str | None = Field(None, description="base URL of `evalsvc dashboard`, linked from every alert")
    slack: SlackConfig | None = None
