"""`dashboard:` in evalsvc.yaml, and the rule every store URL in the file obeys."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from evalsvc.config.base import Strict


class DashboardConfig(Strict):
    """`evalsvc dashboard` (see README: the dashboard)."""

    store: str | None = Field(None, description="URL of a read-only role for the dashboard (`evalsvc db readonly-role`); "
                              "EVALSVC_DASHBOARD_STORE overrides it; default: the store itself, opened read-only")
    port: int = Field(8501, ge=1, le=65535)
    stale_after_hours: float = Field(48.0, gt=0, description="flag a variant x suite whose newest succeeded run is older")
    cache_ttl_s: int = Field(60, ge=0, description="seconds a page's query results are reused")

    @field_validator("store")
    @classmethod
    def _no_inline_password(cls, url: str | None) -> str | None:
        return None if url is None else url_without_password(url)


_DB_URL = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\+[A-Za-z0-9_]+)?://")


def url_without_password(url: str) -> str:
    """The URL itself, refused when it is no database URL or carries a password (secrets never live in the file).

    The parse is SQLAlchemy's URL form (dialect[+driver]://user:password@host/db), read without importing it.
    """
    try:
        password = urlsplit(url).password if _DB_URL.match(url) else None
    except ValueError:
        password = None
        url = ""
    if not _DB_URL.match(url):
        raise ValueError(f"not a database URL: {url!r} (e.g. sqlite:///evalsvc.db or postgresql+psycopg://host/db)")
    if password:
        raise ValueError("the URL contains a password; set the whole URL in an environment variable instead "
                         "(EVALSVC_STORE, EVALSVC_DASHBOARD_STORE)")
    return url
