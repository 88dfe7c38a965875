"""Secrets (the Slack webhook URL, endpoint API keys, the database password) never reach a log, an output, a file or the store.

Real commands run with every logger at DEBUG (subprocesses and in-process, captured), alerts are delivered to a
local webhook receiver and fail to deliver to a dead one, then every captured line, every file under the project
folder and every value of every table of the store is searched for each secret.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from evalsvc.cli import main
from tests.conftest import write_config, write_suite
from tests.fake_endpoint import FakeEndpoint
from tests.test_alerts import Receiver

# every logger at DEBUG, SQLAlchemy's statements and parameters too (it quiets itself by default), then the real command line
DEBUG_CLI = ("import logging; logging.basicConfig(level=logging.DEBUG, format='%(name)s %(levelname)s %(message)s'); "
             "logging.getLogger('sqlalchemy.engine').setLevel(logging.DEBUG); from evalsvc.cli import main; main()")


class Secrets:
    """Distinct random secrets, and every place they were seen."""

    def __init__(self) -> None:
        self.webhook_token = f"hook{uuid.uuid4().hex}"
        self.dead_webhook_token = f"dead{uuid.uuid4().hex}"
        self.base_key = f"sk-base-{uuid.uuid4().hex}"
        self.cand_key = f"sk-cand-{uuid.uuid4().hex}"
        self.db_password = f"pw{uuid.uuid4().hex}"
        self.texts: dict[str, str] = {}  # what was captured -> its text

    @property
    def all(self) -> list[str]:
        return [self.webhook_token, self.dead_webhook_token, self.base_key, self.cand_key, self.db_password]

    def leaks(self, where: str, data: str | bytes) -> list[str]:
        raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
        return [f"{where}: {s[:8]}…" for s in self.all if s.encode() in raw]


def _recording(handler_owner: Any, seen: list[tuple[str, str | None]]) -> None:
    """Make a test server's handler also record each POST's path and Authorization header."""
    handler = handler_owner.server.RequestHandlerClass
    original = handler.do_POST

    def do_post(self: Any) -> None:
        seen.append((self.path, self.headers.get("authorization")))
        original(self)

    handler.do_POST = do_post


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _project(folder: Path, base: FakeEndpoint, cand: FakeEndpoint, down: FakeEndpoint) -> Path:
    cases = "\n".join(f'{{"id": "c{i}", "input": "say {i}", "checks": [{{"type": "contains", "value": "{i}"}}]}}'
                      for i in range(12))
    write_suite(folder / "suites", "echo", cases)
    return write_config(folder, f"""\
        store: sqlite:///store.db
        max_retries: 0
        circuit_breaker: 3
        baselines: {{f: base}}
        alerts: {{dashboard_url: "http://dash:8501", slack: {{webhook_env: EVALSVC_SLACK_WEBHOOK, max_retries: 0}}}}
        schedules: [{{name: nightly, cron: '* * * * *', variants: [base, cand, down]}}]
        variants:
          - {{name: base, family: f, endpoint: {{base_url: "{base.base_url}", model: b, api_key_env: BASE_API_KEY}}}}
          - {{name: cand, family: f, endpoint: {{base_url: "{cand.base_url}", model: c, api_key_env: CAND_API_KEY}}}}
          - {{name: down, family: f, endpoint: {{base_url: "{down.base_url}", model: d, api_key_env: CAND_API_KEY}}}}
        """)


def _subprocess(secrets: Secrets, name: str, args: list[str], cwd: Path, env: dict[str, str]) -> int:
    out = subprocess.run([sys.executable, "-c", DEBUG_CLI, *args], cwd=cwd, env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=300)
    secrets.texts[f"{name} (stdout)"] = out.stdout
    secrets.texts[f"{name} (stderr)"] = out.stderr
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return out.returncode


def _in_process(secrets: Secrets, name: str, args: list[str], env: dict[str, str], caplog: pytest.LogCaptureFixture) -> int:
    caplog.clear()
    result = CliRunner().invoke(main, args, env=env)
    secrets.texts[f"{name} (output)"] = result.output
    secrets.texts[f"{name} (log)"] = caplog.text + "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code


def _dump_sqlite(path: Path) -> Iterator[tuple[str, Any]]:
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    yield table, value


def _dump_postgres(url: str) -> Iterator[tuple[str, Any]]:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        tables = conn.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                              "AND table_schema NOT IN ('pg_catalog', 'information_schema')").fetchall()
        for schema, table in tables:
            for row in conn.execute(f'SELECT * FROM "{schema}"."{table}"'):
                for value in row:
                    yield f"{schema}.{table}", value


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")
    return str(value).encode("utf-8", "surrogatepass")


@pytest.mark.slow
def test_secrets_never_reach_logs_outputs_files_or_the_store(tmp_path: Path, store_url: str, receiver: Receiver,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")
    secrets = Secrets()
    project = tmp_path / "project"
    if store_url.startswith("postgresql"):
        store_url = store_url.replace("://postgres@", f"://postgres:{secrets.db_password}@")
        assert secrets.db_password in store_url
    else:
        store_url = f"sqlite:///{project / 'store.db'}"  # in the project folder, so its files are searched too
    live = receiver.url.replace("secret-token", secrets.webhook_token)
    dead = f"http://127.0.0.1:9/services/T000/B000/{secrets.dead_webhook_token}"  # nothing listens on port 9
    posted: list[tuple[str, str | None]] = []
    _recording(receiver, posted)
    env = {"EVALSVC_STORE": store_url, "BASE_API_KEY": secrets.base_key, "CAND_API_KEY": secrets.cand_key,
           "EVALSVC_SLACK_WEBHOOK": dead}
    seen_base: list[tuple[str, str | None]] = []
    seen_cand: list[tuple[str, str | None]] = []
    with FakeEndpoint() as base, FakeEndpoint(reply=lambda body: "no idea") as cand, FakeEndpoint() as down:
        down.behaviour = lambda n, body: (500, {}, b'{"error": "the model server is down"}')
        _recording(base, seen_base)
        _recording(cand, seen_cand)
        config = str(_project(project, base, cand, down))
        if store_url.startswith("postgresql"):
            assert _subprocess(secrets, "db upgrade", ["db", "upgrade", "-c", config], project, env) == 0
        assert _subprocess(secrets, "run", ["run", "-c", config, "-v", "base", "-v", "cand"], project, env) == 0
        assert _subprocess(secrets, "gate", ["gate", "-c", config, "--candidate", "cand", "--junit", "gate.xml", "--markdown",
                                             "gate.md"], project, env) == 1
        assert _subprocess(secrets, "schedule list", ["schedule", "list", "-c", config], project, env) == 0
        # the webhook is dead: delivery fails and is logged, the alerts stay undelivered
        assert _subprocess(secrets, "run-now (dead webhook)", ["schedule", "run-now", "-c", config, "nightly"], project, env) == 0
        # the webhook answers 429 and the sink may not retry: another logged failure
        receiver.throttle = 100
        env["EVALSVC_SLACK_WEBHOOK"] = live
        assert _in_process(secrets, "run-now (429)", ["schedule", "run-now", "-c", config, "nightly"], env, caplog) == 0
        assert posted and not receiver.posts
        # now it is delivered
        receiver.throttle = 0
        assert _in_process(secrets, "run-now (delivered)", ["schedule", "run-now", "-c", config, "nightly"], env, caplog) == 0
        for args in (["results", "-c", config], ["variants", "-c", config], ["schedule", "history", "-c", config],
                     ["drift", "-c", config]):
            _in_process(secrets, " ".join(args[:1]), args, env, caplog)

    # the secrets were really in use, so finding none of them below means something
    titles = sorted(p["blocks"][0]["text"]["text"] for p in receiver.posts)
    assert {t.split(": ")[0][2:] for t in titles} == {"Endpoint failing", "Quality regression"}, titles
    assert {path for path, _ in posted} == {f"/services/T000/B000/{secrets.webhook_token}"}
    assert {auth for _, auth in seen_base} == {f"Bearer {secrets.base_key}"}
    assert {auth for _, auth in seen_cand} == {f"Bearer {secrets.cand_key}"}
    assert "not delivered to slack" in secrets.texts["run-now (dead webhook) (stderr)"]
    assert "HTTP 429" in secrets.texts["run-now (429) (log)"]
    assert "sqlalchemy.engine" in secrets.texts["run (stderr)"], "DEBUG logging was on, SQL included"

    leaks = [leak for name, text in secrets.texts.items() for leak in secrets.leaks(name, text)]
    files = [p for p in project.rglob("*") if p.is_file()]
    assert {"gate.xml", "gate.md"} <= {p.name for p in files}
    assert store_url.startswith("postgresql") or {"store.db", "store.db-wal"} <= {p.name for p in files}
    leaks += [leak for p in files for leak in secrets.leaks(str(p.relative_to(project)), p.read_bytes())]
    rows = list(_dump_sqlite(project / "store.db") if store_url.startswith("sqlite") else _dump_postgres(store_url))
    assert {"runs", "case_results", "alerts", "firings", "verdicts", "schedule_states"} <= {t.split(".")[-1] for t, _ in rows}
    leaks += [leak for table, value in rows for leak in secrets.leaks(f"table {table}", _as_bytes(value))]
    assert leaks == []




def test_an_endpoint_that_echoes_the_api_key_in_its_error_does_not_leak_it(tmp_path: Path) -> None:
    key = f"sk-{uuid.uuid4().hex}"
    with FakeEndpoint() as fake:
        fake.behaviour = lambda n, body: (401, {}, json.dumps({"error": f"Incorrect API key provided: {key}"}).encode())
        write_suite(tmp_path / "suites", "s", '{"id": "a", "input": "x", "checks": [{"type": "contains", "value": "x"}]}')
        config = write_config(tmp_path, f"""\
            store: sqlite:///store.db
            variants: [{{name: v, family: f, endpoint: {{base_url: "{fake.base_url}", model: m, api_key_env: LEAKY_KEY}}}}]
            """)
        result = CliRunner().invoke(main, ["run", "-c", str(config)], env={"LEAKY_KEY": key})
    assert result.exit_code == 2
    assert key not in result.output
    assert not [table for table, value in _dump_sqlite(tmp_path / "store.db") if key.encode() in _as_bytes(value)]


@pytest.mark.parametrize("url", ["http://user:pw-SECRET@{host}/v1", "http://{host}/v1?key=sk-SECRET",
                                 "http://{host}/v1?api-version=1&access_token=SECRET", "${{CAND_URL}}"])
def test_a_credential_in_an_endpoint_base_url_is_refused_and_never_stored_or_shown(tmp_path: Path, url: str) -> None:
    """A base_url is stored with every run (the dashboard's read-only role reads it) and printed by `evalsvc variants`:
    user-info (which httpx would send as Basic auth) or a key in the query, written or through ${VAR}, is refused."""
    with FakeEndpoint() as fake:
        host = fake.base_url.split("//")[1].split("/")[0]
        write_suite(tmp_path / "suites", "s", '{"id": "a", "input": "x", "checks": [{"type": "contains", "value": "x"}]}')
        config = write_config(tmp_path, f"""\
            store: sqlite:///store.db
            variants: [{{name: v, family: f, endpoint: {{base_url: "{url.format(host=host)}", model: m}}}}]
            """)
        env = {"CAND_URL": f"http://{host}/v1?token=SECRET"}
        for command in (["variants"], ["run", "--no-progress"]):
            result = CliRunner().invoke(main, [*command, "-c", str(config)], env=env)
            assert result.exit_code == 2, result.output
            assert "evalsvc.yaml:2" in result.output and "base_url carries" in result.output and "api_key_env" in result.output
            assert "SECRET" not in result.output
        assert fake.requests == []
    assert not (tmp_path / "store.db").exists() or not [
        t for t, v in _dump_sqlite(tmp_path / "store.db") if b"SECRET" in _as_bytes(v)]


def test_a_query_parameter_that_is_no_credential_is_kept_in_the_base_url(tmp_path: Path) -> None:
    from evalsvc.config import load_config

    config = write_config(tmp_path, """\
        variants: [{name: v, family: f, endpoint: {base_url: "http://gpu-box/v1?api-version=2024-06-01", model: m}}]
        """)
    assert load_config(config).variants[0].endpoint.base_url == "http://gpu-box/v1?api-version=2024-06-01"


def test_a_literal_key_written_as_api_key_env_is_refused_without_echoing_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, """\
        variants: [{name: v, family: f, endpoint: {base_url: "http://gpu-box/v1", model: m, api_key_env: sk-live-LITERAL}}]
        """)
    result = CliRunner().invoke(main, ["variants", "-c", str(config)])
    assert result.exit_code == 2 and "evalsvc.yaml:1" in result.output and "not the key itself" in result.output
    assert "LITERAL" not in result.output


def test_an_unset_api_key_variable_fails_the_run_naming_it_and_sends_nothing_without_a_key(tmp_path: Path) -> None:
    with FakeEndpoint() as fake:
        write_suite(tmp_path / "suites", "s", '{"id": "a", "input": "x", "checks": [{"type": "contains", "value": "x"}]}')
        config = write_config(tmp_path, f"""\
            store: sqlite:///store.db
            variants: [{{name: v, family: f, endpoint: {{base_url: "{fake.base_url}", model: m, api_key_env: UNSET_KEY_XYZ}}}}]
            """)
        result = CliRunner().invoke(main, ["run", "--no-progress", "-c", str(config)], env={"UNSET_KEY_XYZ": None})
        assert result.exit_code == 2, result.output
        assert "UNSET_KEY_XYZ" in result.output and "is not set" in result.output
        assert fake.requests == [], "no request may go out without the key"


def test_a_store_password_given_as_a_query_parameter_is_refused_in_the_file_and_hidden_in_messages(tmp_path: Path) -> None:
    config = write_config(tmp_path, """\
        store: "postgresql+psycopg://u@127.0.0.1:9/db?password=hunter2-SECRET"
        variants: [{name: v, family: f, endpoint: {base_url: "http://gpu-box/v1", model: m}}]
        """)
    result = CliRunner().invoke(main, ["db", "upgrade", "-c", str(config)])
    assert result.exit_code == 2 and "evalsvc.yaml:1" in result.output and "contains a password" in result.output
    assert "hunter2" not in result.output
    # from EVALSVC_STORE (where a password belongs) it is used, and hidden when the store cannot be reached
    config.write_text(config.read_text().replace('store: "postgresql+psycopg://u@127.0.0.1:9/db?password=hunter2-SECRET"\n', ""))
    result = CliRunner().invoke(main, ["db", "upgrade", "-c", str(config)],
                                env={"EVALSVC_STORE": "postgresql+psycopg://u@127.0.0.1:9/db?password=hunter2-SECRET"})
    assert result.exit_code == 2 and "cannot reach the store at postgresql+psycopg://u@127.0.0.1:9/db" in result.output
    assert "hunter2" not in result.output and "password=***" in result.output


def _scram_matches(verifier: str, password: str) -> bool:
    """Whether a SCRAM-SHA-256 verifier (RFC 5802/7677, as PostgreSQL stores it) was made from ``password``."""
    import base64
    import hashlib
    import hmac

    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return method == "SCRAM-SHA-256" and hashlib.sha256(client_key).digest() == stored_key and \
        hmac.new(salted, b"Server Key", "sha256").digest() == server_key


def test_the_readonly_role_password_reaches_the_server_only_as_a_scram_verifier(postgres: Any, tmp_path: Path) -> None:
    """With every statement logged (log_statement = all, as audit setups log DDL), the server log holds no password:
    evalsvc sends the verifier libpq computes (was: ALTER ROLE ... PASSWORD '<the password>' in the log)."""
    import psycopg

    password = f"pw{uuid.uuid4().hex}"
    url = postgres.create_database(f"s_{uuid.uuid4().hex[:10]}")
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(f"host=127.0.0.1 port={postgres.port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" SET log_statement = \'all\'')
    config = write_config(tmp_path, "variants: [{name: v, family: f, endpoint: {base_url: 'http://gpu-box/v1', model: m}}]\n")
    env = {"EVALSVC_STORE": url, "DASH_PW": password}
    assert CliRunner().invoke(main, ["db", "upgrade", "-c", str(config)], env=env).exit_code == 0
    done = CliRunner().invoke(main, ["db", "readonly-role", "dash_scram", "--password-env", "DASH_PW", "-c", str(config)],
                              env=env)
    assert done.exit_code == 0, done.output
    log = (postgres.data / "log").read_text(errors="replace")
    assert 'ALTER ROLE "dash_scram" PASSWORD' in log, "the statement must have been logged for this test to mean anything"
    assert password not in log
    with psycopg.connect(f"host=127.0.0.1 port={postgres.port} user=postgres dbname=postgres") as conn:
        (stored,) = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'dash_scram'").fetchone()
    assert stored.startswith("SCRAM-SHA-256$") and _scram_matches(stored, password)
    assert not _scram_matches(stored, password + "x")
