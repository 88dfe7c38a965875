"""`dashboard:` in evalsvc.yaml, and the rule every store URL in the file obeys."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, field_validator, model_validator

from evalsvc.config.base import Strict
from evalsvc.errors import ConfigError

# What Streamlit's st.login needs under [auth] (one OIDC provider, its keys right in [auth]), and where each comes from.
AUTH_KEYS = {
    "redirect_uri": "the dashboard's own URL ending in /oauth2callback, registered with the provider as a redirect URI "
                    "(e.g. http://localhost:8501/oauth2callback)",
    "cookie_secret": "a long random string that signs the sign-in cookie "
                     "(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
    "client_id": "the client id of the app registered at your OIDC provider",
    "client_secret": "the client secret of that app registration",
    "server_metadata_url": "the provider's discovery document (e.g. https://accounts.google.com/.well-known/openid-configuration)",
}
MIN_COOKIE_SECRET = 32  # characters; the cookie it signs is the whole proof of who is signed in


class DashboardAuth(Strict):
    """`dashboard.auth`: sign-in through Streamlit's OIDC support; the provider's secrets live in their own file."""

    secrets_file: Path = Field(description="TOML file with Streamlit's [auth] section (redirect_uri, cookie_secret, "
                               "client_id, client_secret, server_metadata_url); relative paths start at evalsvc.yaml's folder")
    allow_users: list[str] = Field(default_factory=list, description="email addresses that may sign in (any case)")
    allow_domains: list[str] = Field(default_factory=list, description="email domains whose every address may sign in "
                                     "(example.com: anyone@example.com, not anyone@sub.example.com)")

    @field_validator("allow_users")
    @classmethod
    def _emails(cls, users: list[str]) -> list[str]:
        out = [u.strip().lower() for u in users]
        for u in out:
            local, at, domain = u.rpartition("@")
            if not at or not local or "@" in local or not domain or any(c.isspace() for c in u):
                raise ValueError(f"{u!r} is not an email address; write it as name@example.com")
        return out

    @field_validator("allow_domains")
    @classmethod
    def _domains(cls, domains: list[str]) -> list[str]:
        out = [d.strip().lower() for d in domains]
        for d in out:
            if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", d):
                raise ValueError(f"{d!r} is not a domain; write it as example.com (no '@', no wildcard: a domain matches "
                                 "exactly, so list each subdomain)")
        return out

    @model_validator(mode="after")
    def _someone(self) -> DashboardAuth:
        if not self.allow_users and not self.allow_domains:
            raise ValueError("allow_users and allow_domains are both empty, so nobody could see the dashboard; list who may "
                             "(allow_users: [you@example.com]) or their email domain (allow_domains: [example.com])")
        return self

    def allows(self, email: Any, verified: Any = None) -> bool:
        """Whether a signed-in user with this email (and the provider's ``email_verified`` claim) may see the pages.

        An address the provider says it has not verified is refused: anyone can type someone else's address there.
        """
        if not isinstance(email, str) or unverified(verified):
            return False
        email = email.strip().lower()
        local, at, domain = email.rpartition("@")
        if not at or not local:
            return False
        return email in self.allow_users or domain in self.allow_domains

    def secrets_path(self, config_dir: Path) -> Path:
        """The secrets file's absolute path, once it is shown to hold everything st.login needs.

        Checked when the dashboard starts (and by the app), not whenever evalsvc.yaml is read: a CI runner that only
        gates needs no dashboard secrets.
        """
        path = self.secrets_file if self.secrets_file.is_absolute() else config_dir / self.secrets_file
        where = f"dashboard.auth.secrets_file {path}"
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(where, "file not found", "create it with Streamlit's [auth] section (docs/dashboard.md: "
                              "Sign-in), or fix the path (a relative path starts at evalsvc.yaml's folder)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(where, f"cannot read it ({getattr(exc, 'strerror', None) or exc})",
                              "make it a readable UTF-8 TOML file (readable by the dashboard's user only)") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(where, f"not valid TOML: {exc}", "fix the TOML syntax (key = \"value\" lines under [auth])") from None
        auth = data.get("auth")
        if not isinstance(auth, dict):
            raise ConfigError(where, "it has no [auth] section",
                              f"add [auth] with {', '.join(AUTH_KEYS)} (docs/dashboard.md: Sign-in)")
        for key, what in AUTH_KEYS.items():
            if not isinstance(auth.get(key), str) or not auth[key].strip():
                raise ConfigError(where, f"[auth] has no {key}" if key not in auth else f"[auth] {key} is not a non-empty string",
                                  f"set {key} = \"...\" under [auth]: {what}")
        if not auth["redirect_uri"].endswith("/oauth2callback") or not _is_http(auth["redirect_uri"]):
            raise ConfigError(where, f"[auth] redirect_uri {auth['redirect_uri']!r} is not an http(s) URL ending in /oauth2callback",
                              f"set it to {AUTH_KEYS['redirect_uri']}")
        if not _is_http(auth["server_metadata_url"]):
            raise ConfigError(where, f"[auth] server_metadata_url {auth['server_metadata_url']!r} is not an http(s) URL",
                              f"set it to {AUTH_KEYS['server_metadata_url']}")
        if len(auth["cookie_secret"]) < MIN_COOKIE_SECRET:
            raise ConfigError(where, f"[auth] cookie_secret is shorter than {MIN_COOKIE_SECRET} characters",
                              f"use {AUTH_KEYS['cookie_secret']}")
        return path


def unverified(verified: Any) -> bool:
    """The provider's ``email_verified`` claim says no (some providers send the string "false")."""
    return verified is False or str(verified).lower() == "false"


def _is_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


class DashboardConfig(Strict):
    """`evalsvc dashboard` (see README: the dashboard)."""

    store: str | None = Field(None, description="URL of a read-only role for the dashboard (`evalsvc db readonly-role`); "
                              "EVALSVC_DASHBOARD_STORE overrides it; default: the store itself, opened read-only")
    port: int = Field(8501, ge=1, le=65535)
    stale_after_hours: float = Field(48.0, gt=0, description="flag a variant x suite whose newest succeeded run is older")
    cache_ttl_s: int = Field(60, ge=0, description="seconds a page's query results are reused")
    auth: DashboardAuth | None = Field(None, description="require sign-in (OIDC through Streamlit); None: anyone who can "
                                       "reach the port sees the pages (docs/dashboard.md: Sign-in)")

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
        parts = urlsplit(url) if _DB_URL.match(url) else None
        password = parts and (parts.password or any(k.lower() == "password" for k, _ in parse_qsl(parts.query)))
    except ValueError:
        password = None
        url = ""
    if not _DB_URL.match(url):
        raise ValueError(f"not a database URL: {url!r} (e.g. sqlite:///evalsvc.db or postgresql+psycopg://host/db)")
    if password:
        raise ValueError("the URL contains a password (user:password@host, or ?password=); set the whole URL in an "
                         "environment variable instead (EVALSVC_STORE, EVALSVC_DASHBOARD_STORE)")
    return url
