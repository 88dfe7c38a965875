"""The layers hold and nothing imports in a circle: import-linter's contracts (pyproject.toml) and a cycle search.

docs/architecture.md draws the layers. Each check here is shown to fail on a planted violation, so
a contract that silently stopped checking anything would be noticed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from tests.conftest import ROOT

MAX_LINES = 400
LONG_ALLOWED: set[str] = set()  # no exceptions: the statistics are a package of small modules


def import_cycles(package: str) -> list[list[str]]:
    """Strongly connected components of more than one module in the package's import graph (Tarjan 1972).

    A package's ``__init__`` counts as a module of its own, so an ``__init__`` that imports a module
    which imports the package back is a cycle too. Imports under ``TYPE_CHECKING`` count.
    """
    graph = grimp.build_graph(package, cache_dir=None)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:  # iterative, so deep graphs cannot exhaust the stack
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return found


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    cmd = [str(lint)] if lint.exists() else [sys.executable, "-m", "importlinter.cli"]
    return subprocess.run([*cmd, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_no_import_cycle_anywhere_in_evalsvc() -> None:
    assert import_cycles("evalsvc") == []


def test_the_cycle_search_finds_an_init_that_imports_a_module_importing_it_back(tmp_path: Path, monkeypatch) -> None:
    pkg = tmp_path / "circled"
    (pkg / "serving").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "serving" / "__init__.py").write_text("from circled.serving import llamacpp\n")
    (pkg / "serving" / "llamacpp.py").write_text("from circled.serving import Served\n")
    (pkg / "config.py").write_text("from circled import scheduler\n")
    (pkg / "scheduler.py").write_text("import circled.config\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles("circled") == [["circled.config", "circled.scheduler"], ["circled.serving", "circled.serving.llamacpp"]]


@pytest.mark.slow
def test_lint_imports_keeps_every_contract() -> None:
    out = _lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.slow
def test_a_store_module_importing_the_engine_breaks_the_layers_contract(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "evalsvc", tmp_path / "evalsvc", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    db = tmp_path / "evalsvc" / "store" / "db.py"
    db.write_text(db.read_text() + "\nfrom evalsvc.engine import runner  # noqa\n")
    out = _lint_imports(tmp_path)
    assert out.returncode == 1
    assert "evalsvc.store.db -> evalsvc.engine.runner" in out.stdout


def test_no_module_is_longer_than_400_lines_but_stats() -> None:
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "evalsvc").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= LONG_ALLOWED, long


def test_reading_the_config_imports_no_store_scheduler_or_engine() -> None:
    code = ("import sys; from evalsvc.config import load_config; load_config(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'sqlalchemy', 'apscheduler', 'alembic'} "
            "or m.startswith(('evalsvc.store', 'evalsvc.engine', 'evalsvc.scheduler', 'evalsvc.serving'))))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "evalsvc.yaml")], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
