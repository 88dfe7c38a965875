"""Who may see the dashboard: with ``dashboard.auth`` set, only a signed-in user on its allow-list.

Sign-in is Streamlit's own OIDC support (``st.login``): Streamlit sends the visitor to the provider, checks the ID
token it returns, and keeps the identity in a cookie signed with ``[auth] cookie_secret``; ``st.user`` reads it. This
module decides from ``st.user`` alone and fails closed: anything but a logged-in user with an allowed address (that
the provider has not marked unverified) stops the script before a page, or a query, runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from evalsvc.config import DEFAULT_CONFIG, Config
from evalsvc.config.dashboard import unverified
from evalsvc.dashboard.ui import CONFIG_ENV
from evalsvc.errors import ConfigError


def admit(cfg: Config) -> None:
    """Return when the visitor may see the pages; otherwise draw the sign-in or refusal page and stop the script."""
    auth = cfg.dashboard.auth
    if auth is None:
        return
    try:
        auth.secrets_path(Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG)).resolve().parent)
    except ConfigError as exc:
        st.error(f"Sign-in is required but cannot work: {exc}")
        st.stop()
    if not (st.secrets.load_if_toml_exists() and "auth" in st.secrets):  # `streamlit run` without --secrets.files
        st.error("Sign-in is required but cannot work: Streamlit was not given the secrets file. Start the dashboard with "
                 "`evalsvc dashboard` (it passes dashboard.auth.secrets_file on), or add --secrets.files=PATH to `streamlit run`.")
        st.stop()
    user = st.user
    if user.get("is_logged_in") is not True:
        st.title("evalsvc")
        st.write("This dashboard shows model outputs. Sign in to see it.")
        st.button("Sign in", type="primary", on_click=st.login)
        st.stop()
    email = user.get("email")
    if not auth.allows(email, user.get("email_verified")):
        st.title("evalsvc")
        who = f"{email} (not verified by the provider)" if unverified(user.get("email_verified")) else (
            email or "This account (no email address)")
        st.error(f"Not allowed: {who} may not see this dashboard. Ask whoever runs it to add the address to "
                 "dashboard.auth.allow_users (or its domain to allow_domains), or sign in with another account.")
        st.button("Sign out", on_click=st.logout)
        st.stop()
    st.sidebar.caption(f"Signed in as {email}")
    st.sidebar.button("Sign out", on_click=st.logout)
