"""Sign-in for the dashboard (dashboard.auth): the config and its secrets file, the app's gate under AppTest, the launch.

The real sign-in through Streamlit and a browser is in test_dashboard_sign_in.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from streamlit.testing.v1 import AppTest

from evalsvc.cli import main
from evalsvc.config import load_config
from evalsvc.config.dashboard import AUTH_KEYS, DashboardAuth
from evalsvc.errors import ConfigError
from tests.conftest import ROOT, write_config
from tests.dashboard_store import seeded_project
from tests.oidc_provider import with_sign_in, write_secrets

APP = ROOT / "evalsvc" / "dashboard" / "app.py"
IDP = "https://idp.example.com/.well-known/openid-configuration"
REDIRECT = "http://localhost:8501/oauth2callback"


def _auth_yaml(tmp_path: Path, block: str) -> Path:
    return write_config(tmp_path, f"dashboard:\n  auth: {block}\n")


def _error(config: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config(config)
    return str(exc.value)


def test_an_auth_block_needs_someone_on_its_allow_list(tmp_path: Path) -> None:
    msg = _error(_auth_yaml(tmp_path, "{secrets_file: auth.toml}"))
    assert "evalsvc.yaml:2" in msg and "both empty" in msg and "allow_domains: [example.com]" in msg
    msg = _error(_auth_yaml(tmp_path, "{secrets_file: auth.toml, allow_users: [], allow_domains: []}"))
    assert "both empty" in msg


@pytest.mark.parametrize(("block", "words"), [
    ("{secrets_file: a.toml, allow_users: [alice]}", "'alice' is not an email address"),
    ("{secrets_file: a.toml, allow_domains: ['@example.com']}", "'@example.com' is not a domain"),
    ("{secrets_file: a.toml, allow_domains: ['*.example.com']}", "list each subdomain"),
    ("{allow_users: [a@example.com]}", "secrets_file"),
    ("{secrets_file: a.toml, allow_users: [a@example.com], client_secret: s}", "client_secret"),
])
def test_a_malformed_auth_block_is_refused_naming_the_line(tmp_path: Path, block: str, words: str) -> None:
    msg = _error(_auth_yaml(tmp_path, block))
    assert "evalsvc.yaml:2" in msg and words in msg


def test_the_allow_list_matches_addresses_and_whole_domains_and_refuses_unverified_ones() -> None:
    auth = DashboardAuth(secrets_file=Path("a.toml"), allow_users=["Alice@Example.org"], allow_domains=["Corp.example"])
    assert auth.allows("alice@example.org") and auth.allows("ALICE@example.org", True)
    assert auth.allows("bob@corp.example") and auth.allows("bob@corp.example", "true")
    assert not auth.allows("bob@example.org")  # another address of alice's domain
    assert not auth.allows("bob@sub.corp.example") and not auth.allows("bob@corp.example.evil.test")
    assert not auth.allows("alice@example.org", False) and not auth.allows("bob@corp.example", "false")
    assert not auth.allows(None) and not auth.allows("") and not auth.allows("corp.example") and not auth.allows(["x"])


def test_a_config_with_sign_in_loads_without_its_secrets_file(tmp_path: Path) -> None:
    """Only the dashboard needs the secrets: `evalsvc run` or `gate` on a CI runner reads the same evalsvc.yaml."""
    cfg = load_config(_auth_yaml(tmp_path, "{secrets_file: nowhere.toml, allow_domains: [example.com]}"))
    assert cfg.dashboard.auth.secrets_file == Path("nowhere.toml")
    with pytest.raises(ConfigError, match=r"nowhere\.toml: file not found"):
        cfg.dashboard.auth.secrets_path(tmp_path)


def test_the_secrets_file_path_starts_at_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    path = write_secrets(tmp_path / "secrets" / "auth.toml", REDIRECT, IDP)
    auth = DashboardAuth(secrets_file=Path("secrets/auth.toml"), allow_domains=["example.com"])
    assert auth.secrets_path(tmp_path) == path
    assert DashboardAuth(secrets_file=path, allow_domains=["example.com"]).secrets_path(Path("/elsewhere")) == path
    write_secrets(path, "http://localhost:{port}/oauth2callback", IDP)  # Streamlit puts the dashboard's port there
    assert auth.secrets_path(tmp_path) == path


@pytest.mark.parametrize("key", list(AUTH_KEYS))
def test_a_secrets_file_without_a_key_st_login_needs_is_refused_naming_file_and_key(tmp_path: Path, key: str) -> None:
    path = write_secrets(tmp_path / "auth.toml", REDIRECT, IDP, drop=(key,))
    with pytest.raises(ConfigError) as exc:
        DashboardAuth(secrets_file=path, allow_domains=["example.com"]).secrets_path(tmp_path)
    assert str(path) in str(exc.value) and f"[auth] has no {key}" in str(exc.value)
    assert f"fix: set {key} = " in str(exc.value)


@pytest.mark.parametrize(("text", "words"), [
    ("[other]\nx = 1\n", "it has no [auth] section"),
    ("[auth\n", "not valid TOML"),
    (None, "redirect_uri 'http://localhost:8501/callback' is not an http(s) URL ending in /oauth2callback"),
    ("short", "cookie_secret is shorter than 32 characters"),
    ("metadata", "server_metadata_url 'idp.example.com' is not an http(s) URL"),
    ("blank", "[auth] client_secret is not a non-empty string"),
])
def test_a_secrets_file_st_login_could_not_use_is_refused(tmp_path: Path, text: str | None, words: str) -> None:
    path = tmp_path / "auth.toml"
    if text is None:
        write_secrets(path, "http://localhost:8501/callback", IDP)
    elif text == "short":
        write_secrets(path, REDIRECT, IDP, cookie_secret="x" * 31)
    elif text == "metadata":
        write_secrets(path, REDIRECT, "idp.example.com")
    elif text == "blank":
        write_secrets(path, REDIRECT, IDP, client_secret=" ")
    else:
        path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        DashboardAuth(secrets_file=path, allow_domains=["example.com"]).secrets_path(tmp_path)
    assert str(path) in str(exc.value) and words in str(exc.value)


# --- `evalsvc dashboard`: what it hands Streamlit ---

@pytest.fixture
def exec_argv(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """os.execvpe replaced: the argv `evalsvc dashboard` would start Streamlit with."""
    calls: list[list[str]] = []

    def fake_exec(file: str, argv: list[str], env: dict) -> None:
        calls.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execvpe", fake_exec)
    return calls


def test_evalsvc_dashboard_listens_on_loopback_only_unless_told(tmp_path: Path, exec_argv: list[list[str]]) -> None:
    config = write_config(tmp_path, "store: sqlite:///s.db\n")
    CliRunner().invoke(main, ["db", "upgrade", "-c", str(config)], catch_exceptions=False)
    out = CliRunner().invoke(main, ["dashboard", "-c", str(config)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "--server.address=127.0.0.1" in exec_argv[0] and "--server.port=8501" in exec_argv[0]
    assert not any(a.startswith("--secrets.files") for a in exec_argv[0]) and "no sign-in" in out.output
    CliRunner().invoke(main, ["dashboard", "-c", str(config), "--address", "0.0.0.0"], catch_exceptions=False)
    assert "--server.address=0.0.0.0" in exec_argv[1]


def test_evalsvc_dashboard_hands_streamlit_the_secrets_file(tmp_path: Path, exec_argv: list[list[str]]) -> None:
    secrets = write_secrets(tmp_path / "auth.toml", REDIRECT, IDP)
    config = write_config(tmp_path, "store: sqlite:///s.db\ndashboard: {auth: {secrets_file: auth.toml, "
                          "allow_domains: [example.com]}}\n")
    CliRunner().invoke(main, ["db", "upgrade", "-c", str(config)], catch_exceptions=False)
    out = CliRunner().invoke(main, ["dashboard", "-c", str(config)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert f"--secrets.files={secrets}" in exec_argv[0] and f"sign-in through {secrets}" in out.output


def test_evalsvc_dashboard_refuses_a_missing_secrets_file_before_starting_streamlit(tmp_path: Path,
                                                                                  exec_argv: list[list[str]]) -> None:
    config = write_config(tmp_path, "store: sqlite:///s.db\ndashboard: {auth: {secrets_file: auth.toml, "
                          "allow_domains: [example.com]}}\n")
    out = CliRunner().invoke(main, ["dashboard", "-c", str(config)])
    assert out.exit_code == 2 and f"{tmp_path / 'auth.toml'}: file not found" in out.output and "Traceback" not in out.output
    assert exec_argv == []


# --- the app's gate under AppTest (st.user seeded through AppTest.user) ---

@pytest.fixture(scope="module")
def signin_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("signin")
    config = seeded_project(folder, f"sqlite:///{folder / 'store.db'}")
    write_secrets(folder / "auth.toml", REDIRECT, IDP)
    yield with_sign_in(config, "auth.toml", ["alice@example.org"], ["corp.example"])


def _app(config: Path, monkeypatch: pytest.MonkeyPatch, user: dict, secrets: bool = True) -> AppTest:
    """app.py for ``user``; ``secrets``: Streamlit was given the [auth] section (as `evalsvc dashboard` does)."""
    monkeypatch.setenv("EVALSVC_CONFIG", str(config))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.user = user
    if secrets:
        at.secrets = {"auth": {"redirect_uri": REDIRECT, "cookie_secret": "c" * 32, "client_id": "i", "client_secret": "s",
                               "server_metadata_url": IDP}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at: AppTest) -> str:
    """Every element the run drew, main area and sidebar, as text (values, labels, the protos of charts and tables)."""
    out, todo = [], [at.main, at.sidebar]
    while todo:
        node = todo.pop()
        todo.extend(getattr(node, "children", {}).values())
        out.append(str(getattr(node, "proto", "")))
    return " ".join(out)


def _shows_no_data(at: AppTest) -> None:
    assert not at.get("vega_lite_chart") and not at.dataframe and not at.metric and not at.selectbox and not at.multiselect
    assert "smollm2" not in _texts(at) and "Regression" not in _texts(at)


def test_a_visitor_who_is_not_signed_in_sees_only_the_sign_in_button(signin_project: Path, monkeypatch) -> None:
    for user in ({"is_logged_in": False}, {"email": "alice@example.org"}):  # AppTest's default user: no is_logged_in
        at = _app(signin_project, monkeypatch, user)
        assert [b.label for b in at.button] == ["Sign in"] and not at.error
        _shows_no_data(at)


def test_an_allowed_user_sees_the_overview_and_can_sign_out(signin_project: Path, monkeypatch) -> None:
    for email in ("alice@example.org", "Bob@corp.example"):
        at = _app(signin_project, monkeypatch, {"is_logged_in": True, "email": email, "email_verified": True})
        assert "Regression: smollm2-q2_k vs smollm2-f16" in [e.value.split("**")[1] for e in at.error]
        assert {m.label for m in at.metric} >= {"Regressions", "Failed runs"}
        assert "smollm2-q8_0" in _texts(at)  # what _shows_no_data looks for is there once allowed
        assert f"Signed in as {email}" in [c.value for c in at.sidebar.caption]
        assert "Sign out" in [b.label for b in at.sidebar.button]


@pytest.mark.parametrize("user", [
    {"is_logged_in": True, "email": "mallory@elsewhere.test", "email_verified": True},
    {"is_logged_in": True, "email": "mallory@example.org"},  # alice's domain is not on the list, only alice
    {"is_logged_in": True, "email": "alice@example.org", "email_verified": False},
    {"is_logged_in": True, "name": "no email claim"},
])
def test_a_signed_in_user_not_on_the_allow_list_sees_the_refusal(signin_project: Path, monkeypatch, user: dict) -> None:
    at = _app(signin_project, monkeypatch, user)
    assert len(at.error) == 1 and at.error[0].value.startswith("Not allowed: ")
    assert user.get("email", "no email address") in at.error[0].value
    assert [b.label for b in at.button] == ["Sign out"]
    assert "smollm2" not in _texts(at).replace(at.error[0].value, "") and not at.metric and not at.dataframe


def test_without_an_auth_block_the_dashboard_needs_no_sign_in(signin_project: Path, monkeypatch) -> None:
    at = _app(signin_project.with_name("evalsvc.yaml"), monkeypatch, {"is_logged_in": False})
    assert "Sign in" not in [b.label for b in at.button] and at.metric


def test_the_app_shows_nothing_when_the_secrets_file_is_gone(tmp_path: Path, signin_project: Path, monkeypatch) -> None:
    """Started some other way than `evalsvc dashboard` (or the file removed since): an error naming it, no pages."""
    config = with_sign_in(signin_project.with_name("evalsvc.yaml"), str(tmp_path / "gone.toml"), ["alice@example.org"], [],
                          out=tmp_path / "evalsvc.yaml")
    at = _app(config, monkeypatch, {"is_logged_in": True, "email": "alice@example.org"})
    assert len(at.error) == 1 and "gone.toml: file not found" in at.error[0].value and not at.button
    _shows_no_data(at)


def test_the_app_shows_nothing_when_streamlit_was_not_given_the_secrets(signin_project: Path, monkeypatch) -> None:
    """`streamlit run app.py` without --secrets.files: st.login could not work, so say how to start it."""
    at = _app(signin_project, monkeypatch, {"is_logged_in": True, "email": "alice@example.org"}, secrets=False)
    assert len(at.error) == 1 and "evalsvc dashboard" in at.error[0].value and "--secrets.files" in at.error[0].value
    assert not at.button
    _shows_no_data(at)
