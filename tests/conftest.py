from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

# hypothesis is imported before any test runs lm-eval: afterwards CPython 3.11.7 can fail to compile its modules
# ("AST constructor recursion depth mismatch") when its pytest plugin imports it at the end of a session.
import hypothesis  # noqa: F401
import pytest

from tests.fake_endpoint import FakeEndpoint
from tests.pg import PostgresServer, pg_bin

ROOT = Path(__file__).resolve().parent.parent
MODELS = Path(os.environ.get("EVALSVC_MODELS", ROOT / "models"))

for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_EVALUATE_OFFLINE"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# the machine's cache of file hashes is not the tests' to fill (set-up's environments and checkpoints are linked in)
os.environ["EVALSVC_CACHE"] = tempfile.mkdtemp(prefix="evalsvc-test-cache-")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """EVALSVC_RAY_PHASE=outside leaves out the Ray tests, =inside keeps only them (scripts/test.sh runs those in a
    loopback-only network namespace), after whatever -m and -k chose."""
    phase = os.environ.get("EVALSVC_RAY_PHASE")
    if phase not in ("inside", "outside"):
        return
    keep = [i for i in items if (i.get_closest_marker("ray") is not None) == (phase == "inside")]
    dropped = [i for i in items if i not in keep]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    if pg_bin() is None:
        if os.environ.get("EVALSVC_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required here (EVALSVC_REQUIRE_POSTGRES) but not installed")
        pytest.skip("no PostgreSQL server binaries; install postgresql to run the production-store tests")
    # pytest's temp folders are private to root; the server runs as 'postgres'
    root = Path(tempfile.mkdtemp(prefix="evalsvc-pg-"))
    server = PostgresServer(root)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of each supported kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def fake() -> Iterator[FakeEndpoint]:
    with FakeEndpoint() as ep:
        yield ep


def write_suite(folder: Path, name: str, cases_jsonl: str, header_extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jsonl").write_text(textwrap.dedent(cases_jsonl).strip() + "\n")
    header = folder / f"{name}.yaml"
    header.write_text(f"name: {name}\ncases: {name}.jsonl\n" + textwrap.dedent(header_extra))
    return header


def echo_cases(n: int) -> str:
    """``n`` JSONL cases c0..c{n-1}: "say i", passed by an answer containing i (the echo endpoints echo the prompt)."""
    return "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                     for i in range(n))


def write_config(folder: Path, body: str) -> Path:
    path = folder / "evalsvc.yaml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def echo_project(tmp_path: Path, fake: FakeEndpoint) -> Path:
    """A config with one endpoint variant on the fake server and a 6-case suite."""
    cases = "\n".join(
        f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}' for i in range(6)
    )
    write_suite(tmp_path / "suites", "echo", cases)
    write_config(tmp_path, f"""\
        store: sqlite:///store.db
        concurrency: 2
        max_retries: 1
        circuit_breaker: 3
        variants:
          - name: fake
            family: fake
            endpoint: {{base_url: "{fake.base_url}", model: fake}}
        """)
    return tmp_path
