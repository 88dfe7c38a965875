"""Sign-in for real: `evalsvc dashboard` with dashboard.auth, a local OIDC provider (tests/oidc_provider.py), Chromium.

Streamlit's own st.login does the flow (authorization code with PKCE, the ID token checked against the provider's
keys, the identity kept in a signed cookie); nothing here is mocked but the provider.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT
from tests.dashboard_store import seeded_project
from tests.oidc_provider import OIDCProvider, with_sign_in, write_secrets
from tests.test_dashboard_browser import _free_port, browser, wait_healthy  # noqa: F401 (browser: the fixture)
from tests.test_metrics import _listening

pytestmark = pytest.mark.slow
ALICE = {"email": "alice@example.org", "email_verified": True, "name": "Alice"}
MALLORY = {"email": "mallory@elsewhere.test", "email_verified": True, "name": "Mallory"}


@pytest.fixture(scope="module")
def signin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, OIDCProvider]]:
    folder = tmp_path_factory.mktemp("signin")
    port = _free_port()
    with OIDCProvider("evalsvc-dashboard", "client-secret-for-tests") as idp:
        write_secrets(folder / "auth.toml", f"http://127.0.0.1:{port}/oauth2callback", idp.metadata_url)
        config = with_sign_in(seeded_project(folder, f"sqlite:///{folder / 'store.db'}"), "auth.toml",
                              ["alice@example.org"], ["corp.example"])
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "evalsvc.cli", "dashboard", "-c", str(config), "--port", str(port)],
                                cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        base = f"http://127.0.0.1:{port}"
        wait_healthy(proc, base, lambda: proc.stdout.read() if proc.stdout else "")
        yield base, idp
        proc.terminate()
        proc.wait(timeout=20)


def _body(page) -> tuple[str, str]:
    return page.inner_text("body"), page.content()


def test_a_visitor_who_is_not_signed_in_sees_only_the_sign_in_page(signin, browser) -> None:  # noqa: F811
    base, _ = signin
    assert _listening(int(base.rsplit(":", 1)[1])) == {"0100007F"}  # no --address: 127.0.0.1 only, no wildcard, no IPv6
    page = browser.new_context().new_page()
    page.goto(f"{base}/compare?baseline=smollm2-f16&candidate=smollm2-q2_k&case_suite=facts")  # a link from an alert
    page.get_by_role("button", name="Sign in").wait_for(timeout=60_000)
    page.wait_for_timeout(1500)  # let any page that would render do so
    text, html = _body(page)
    page.context.close()
    assert "This dashboard shows model outputs. Sign in to see it." in text
    assert "smollm2" not in html and "Case by case" not in text and "Overview" not in text  # no data, no page list


def _sign_in(chromium, base: str, idp: OIDCProvider, user: dict):
    idp.user = user
    page = chromium.new_context().new_page()
    page.goto(f"{base}/")
    page.get_by_role("button", name="Sign in").click(timeout=60_000)
    return page


def test_an_allowed_user_signs_in_through_the_provider_sees_the_overview_and_signs_out(signin, browser) -> None:  # noqa: F811
    base, idp = signin
    page = _sign_in(browser, base, idp, ALICE)
    page.get_by_text("Regression: smollm2-q2_k vs smollm2-f16").wait_for(timeout=60_000)
    assert "Signed in as alice@example.org" in page.inner_text("body")
    assert {"/.well-known/openid-configuration", "/authorize", "/token", "/jwks"} <= set(idp.seen)
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Sign in").wait_for(timeout=60_000)
    page.wait_for_timeout(1000)
    assert "smollm2" not in page.content()
    page.context.close()


def test_a_signed_in_user_not_on_the_allow_list_sees_the_refusal(signin, browser) -> None:  # noqa: F811
    base, idp = signin
    page = _sign_in(browser, base, idp, MALLORY)
    page.get_by_text("Not allowed: mallory@elsewhere.test").wait_for(timeout=60_000)
    page.get_by_role("button", name="Sign out").wait_for(timeout=10_000)
    page.wait_for_timeout(1000)
    text, html = _body(page)
    page.context.close()
    assert "smollm2" not in html and "Regression" not in text
