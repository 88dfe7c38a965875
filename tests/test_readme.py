"""The README and docs agree with the code: the dashboard's pages, the bundled suites' case counts, the Python snippets,
the commands and extras a reader is told to use, and the sample-size numbers."""

from __future__ import annotations

import ast
import builtins
import importlib
import re
import tomllib

from evalsvc.cli import COMMANDS, EXTRAS
from evalsvc.stats.power import n_for_noninferiority
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {p.relative_to(ROOT).as_posix(): p.read_text(encoding="utf-8") for p in [ROOT / "README.md",
                                                                              *sorted((ROOT / "docs").rglob("*.md"))]}


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def test_the_readme_lists_every_dashboard_page() -> None:
    app = (ROOT / "evalsvc" / "dashboard" / "app.py").read_text(encoding="utf-8")
    titles = re.findall(r'st\.Page\([^)]*title="([^"]+)"', app)
    assert len(titles) >= 7, titles
    table = _section(README, "The dashboard")
    rows = {m.strip() for m in re.findall(r"(?m)^\| ([^|]+) \|", table)} - {"page", "---"}
    assert rows == set(titles), f"README's page table {sorted(rows)} != the app's pages {titles}"


def test_the_bundled_suites_case_counts_are_the_files() -> None:
    counts = {p.stem: sum(1 for line in p.read_text().splitlines() if line.strip())
              for p in (ROOT / "suites").glob("*.jsonl")}
    said = dict(re.findall(r"`(\w+)`\s+\((\d+)", README[README.index("The bundled suites:"):][:400]))
    assert said and {name: int(n) for name, n in said.items()} == {name: counts[name] for name in said}
    assert set(said) == set(counts), (said, counts)
    total = sum(counts.values())
    assert f"Over all {total} cases" in README
    wrong = [f"{path}: {m}" for path, text in DOCS.items() for m in re.findall(r"\b(\d+) JSONL cases", text)
             if int(m) != total]
    assert not wrong, f"the JSONL suites hold {total} cases: {wrong}"


def test_one_build_time_for_llama_cpp() -> None:
    said = set(re.findall(r"llama-cpp-python[^.]*?(\d+(?: to \d+)?) minutes", README.replace("\n", " ")))
    assert len(said) <= 1, said


def _snippets() -> list[tuple[str, str]]:
    return [(path, block) for path, text in DOCS.items() for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL)]


def test_every_python_snippet_imports_what_it_uses() -> None:
    assert _snippets()
    for path, block in _snippets():
        code = re.sub(r",\s*\.\.\.\s*([]})])", r"\1", block)  # "[a, b, ...]": an elided list
        tree = ast.parse(code)
        bound = set(dir(builtins))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("evalsvc"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{path}: {node.module} has no {alias.name}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
        used = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert used <= bound, f"{path}: the snippet calls {sorted(used - bound)} without importing it:\n{block}"


def test_the_commands_and_extras_the_readme_names_exist() -> None:
    blocks = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", README, re.DOTALL))
    named = {*re.findall(r"`evalsvc ([a-z][a-z-]+)", README), *re.findall(r"(?m)^\s*evalsvc ([a-z][a-z-]+)", blocks)}
    assert named <= set(COMMANDS), sorted(named - set(COMMANDS))
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    install = _section(README, "Install")
    extras = set(re.findall(r"\| `([a-z]+)` \|$", install, re.MULTILINE))
    assert extras == set(EXTRAS.values()) and extras <= set(declared), extras


def test_the_sample_size_numbers_in_the_readme_are_the_formulas() -> None:
    install = " ".join(_section(README, "Install").split())
    n = {m: n_for_noninferiority(m, 0.05, discordance=0.0) for m in (0.02, 0.05, 0.10)}
    assert (f"at a margin of 2 points the gated suites' cases, pooled, must number at least {n[0.02]} to pass when "
            f"nothing changed ({n[0.05]} at 5 points, {n[0.10]} at 10), and "
            f"{n_for_noninferiority(0.02, 0.05, discordance=0.05)} when 5% of cases flip") in install
