"""What a pip user gets: the wheel alone takes `evalsvc init --quickstart` to a passing gate, and
`pip install "evalsvc[dashboard]"` is enough for `evalsvc dashboard`.

The wheel is built once from the checkout and installed, with only its declared dependencies, into a fresh virtual
environment without system site packages. The installed `evalsvc` then runs outside the checkout, with no
PYTHONPATH, so nothing can come from the source tree: the quickstart gates two fake endpoints, and headless Chromium
(Debian's, driven by Playwright as in test_dashboard_browser.py) must see the seeded regression on the Overview.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests import test_dashboard_browser
from tests.conftest import ROOT
from tests.dashboard_store import seeded_project
from tests.fake_endpoint import FakeEndpoint
from tests.test_dashboard_browser import _free_port, wait_healthy

browser = test_dashboard_browser.browser  # the same fixture: Debian's chromium with its FLAGS, skipped if missing

pytestmark = pytest.mark.slow

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
DASHBOARD_FILES = {"evalsvc/dashboard/app.py", "evalsvc/dashboard/views/overview.py"}


def _run(argv: list[str | Path], cwd: Path, timeout: float = 900) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built once from the checkout, installed with its dashboard extra into a bare venv: the venv."""
    tmp_path = tmp_path_factory.mktemp("wheel")
    # 1. The wheel carries the dashboard, and only modules the checkout still has (no leftovers from an old build/).
    dist, build = tmp_path / "dist", ROOT / "build"
    ours = not build.exists()
    try:
        _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--check-build-dependencies",
              "-w", dist, ROOT], cwd=tmp_path)
    finally:
        if ours:  # setuptools builds in the checkout; a build/lib left behind would leak renamed modules into later wheels
            shutil.rmtree(build, ignore_errors=True)
    wheels = sorted(dist.glob("evalsvc-*.whl"))
    assert len(wheels) == 1, wheels
    with zipfile.ZipFile(wheels[0]) as whl:
        names = set(whl.namelist())
    assert DASHBOARD_FILES <= names, sorted(names)
    stale = sorted(n for n in names if n.startswith("evalsvc/") and n.endswith(".py") and not (ROOT / n).exists())
    assert not stale, f"the wheel has modules the checkout does not (a stale build/ folder?): {stale}"

    # 2. A bare venv with only that wheel (and what its dashboard extra pulls in); evalsvc comes from the venv.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", f"{wheels[0]}[dashboard]"], cwd=tmp_path)
    where = Path(_run([python, "-c", "import evalsvc; print(evalsvc.__file__)"], cwd=tmp_path).strip()).resolve()
    assert where.is_relative_to(venv.resolve()), f"evalsvc was imported from {where}, not from the venv"
    return venv


def _sum_reply(body: dict[str, Any]) -> str:
    """The quickstart's sample suite asks "What is A + B?": the right sum."""
    a, b = re.findall(r"\d+", body["messages"][-1]["content"])
    return str(int(a) + int(b))


def test_the_quickstart_reaches_a_passing_gate_with_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    evalsvc = installed / "bin" / "evalsvc"
    project = tmp_path / "project"
    project.mkdir()
    out = _run([evalsvc, "init", "--quickstart"], cwd=project)
    assert "evalsvc gate --candidate candidate" in out and "scripts/" not in out
    with FakeEndpoint(reply=_sum_reply) as base, FakeEndpoint(reply=_sum_reply) as cand:
        env = ENV | {"BASELINE_URL": base.base_url, "BASELINE_MODEL": "prod", "CANDIDATE_URL": cand.base_url,
                     "CANDIDATE_MODEL": "prod-fp8"}
        env.pop("EVALSVC_STORE", None)
        for argv in (["variants"], ["suites", "validate"], ["gate", "--candidate", "candidate", "--json", "gate.json",
                                                            "--markdown", "gate.md", "--no-progress"]):
            done = subprocess.run([str(evalsvc), *argv], cwd=project, env=env, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, f"evalsvc {' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        assert len(base.requests) == len(cand.requests) == 60  # the gate measured both, every sample case
    report = json.loads((project / "gate.json").read_text())
    assert report["exit_code"] == 0 and report["verdict"] == "pass", report
    assert (project / "evalsvc.db").exists() and "pass" in (project / "gate.md").read_text()


def test_the_installed_wheel_serves_the_overview(installed: Path, tmp_path: Path, browser) -> None:
    venv = installed
    # 3. The installed command serves a seeded store.
    project = tmp_path / "project"
    project.mkdir()
    config = seeded_project(project, f"sqlite:///{project / 'store.db'}")
    port, log = _free_port(), tmp_path / "dashboard.log"
    with log.open("w") as out:
        server = subprocess.Popen([venv / "bin" / "evalsvc", "dashboard", "-c", config, "--port", str(port)],
                                  cwd=tmp_path, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(server, base, log.read_text, within_s=90)

        # 4. The Overview page (the default one) renders, from the installed views.
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(f"{base}/")
        page.get_by_text("Regression: smollm2-q2_k vs smollm2-f16").wait_for(timeout=60_000)
        heading, title, body = page.locator("h1").first.inner_text(), page.title(), page.inner_text("body")
        page.close()
        assert "Page not found" not in body
        assert heading.strip() == "Overview", (heading, title)
    finally:
        server.terminate()
        server.wait(timeout=20)
