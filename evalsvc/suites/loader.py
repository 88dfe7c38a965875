"""Suites: a YAML header plus a JSONL file of cases, validated and content-hashed.

The suite *version* is a hash of everything that shapes requests or scores (header,
cases, checks, prompt template), so results are only ever paired within one version.
Suites are data only: nothing in them is executed.

Header (``suites/<name>.yaml``)::

    name: facts
    description: Short factual questions.
    cases: facts.jsonl            # relative to the header, inside its folder
    prompt_template: "{input}"    # {input} and {context} are replaced
    checks: []                    # applied to every case, before the case's own
    generation: {max_tokens: 48}  # overrides the variant's sampling settings

Case (one JSON object per line)::

    {"id": "capital-fr", "input": "What is the capital of France?",
     "checks": [{"type": "contains", "value": "Paris"}]}
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import IO, Any, overload

from pydantic import ValidationError

from evalsvc.checks.base import Case, Check, MetricSpec, UnknownCheck, build_check
from evalsvc.config import CaseSpec, HarnessSpec, SuiteHeader
from evalsvc.config.yamlfile import MAX_DEPTH, data_problem, load_yaml_model, short, validation_error
from evalsvc.errors import SuiteError
from evalsvc.identity import canonical_json, content_hash
from evalsvc.suites.harness import content_identity
from evalsvc.suites.harness import validate as validate_harness


@dataclass(frozen=True)
class Suite:
    name: str
    version: str
    header: SuiteHeader
    cases: Cases
    path: Path
    metric_map: dict[str, MetricSpec] = field(default_factory=dict, compare=False, repr=False)
    model_graded: bool = False  # some case has a check graded by a judge model

    def messages(self, case: Case, system_prompt: str | None = None) -> list[dict[str, str]]:
        """The chat messages sent for ``case`` (the suite's system prompt wins over the variant's)."""
        system = self.header.system_prompt or system_prompt
        out = [{"role": "system", "content": system}] if system else []
        if isinstance(case.input, str):
            template = self.header.prompt_template or ("{context}\n\n{input}" if case.context else "{input}")
            # one pass over the template: a literal "{input}" inside a context passage stays as written
            fields = {"{context}": case.context_text, "{input}": case.input}
            prompt = _PLACEHOLDER.sub(lambda m: fields[m[0]], template)
            out.append({"role": "user", "content": prompt})
        else:
            out.extend(dict(m) for m in case.input)
        return out

    def metrics(self) -> dict[str, MetricSpec]:
        """Every metric the cases' checks give (``pass`` when a check gives a verdict)."""
        return dict(self.metric_map)

    @property
    def harness(self) -> HarnessSpec | None:
        return self.header.harness


_PLACEHOLDER = re.compile(r"\{context\}|\{input\}")


def _build_checks(raw: list[dict[str, Any]], where: str, base: Path) -> list[Check]:
    out = []
    for i, spec in enumerate(raw):
        if not isinstance(spec.get("type"), str):
            raise SuiteError(where, f"checks[{i}]: 'type' must be a string, not {type(spec.get('type')).__name__}",
                             'write e.g. {"type": "contains", "value": "Paris"}')
        try:
            out.append(build_check(spec).resolved(base))
        except UnknownCheck as exc:
            raise SuiteError(where, f"checks[{i}]: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'check'}: {e['msg']}" for e in exc.errors()
            )
            raise SuiteError(where, f"checks[{i}] ({spec.get('type')}): {problems}",
                             "see the check reference in README.md") from None
        except ValueError as exc:  # raised by resolved(): a metric module that cannot load, say
            raise SuiteError(where, f"checks[{i}] ({spec.get('type')}): {exc}") from None
    return out


class Cases(Sequence[Case]):
    """A suite's cases, read again each time they are iterated, so no run holds a whole suite in memory.

    They are read from ``source``: a copy of the JSONL file taken while the suite was loaded and hashed, so
    they stay the cases of the suite's version even if the file is edited meanwhile. The copy is removed
    when this object is.
    """

    def __init__(self, read: Callable[[], Iterator[Case]], n: int, source: Path | None = None) -> None:
        self._read, self._n, self.source = read, n, source
        if source is not None:
            weakref.finalize(self, source.unlink, missing_ok=True)

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[Case]:
        return self._read()

    @overload
    def __getitem__(self, i: int) -> Case: ...
    @overload
    def __getitem__(self, i: slice) -> list[Case]: ...
    def __getitem__(self, i: int | slice) -> Case | list[Case]:
        if isinstance(i, slice):
            return list(self)[i]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return next(islice(self, i % self._n, None))


_NO_CASES = Cases(lambda: iter(()), 0)


def _read_cases(header_path: Path, source: Path, shown: Path, default_checks: list[Check], first: bool,
                copy_to: IO[bytes] | None = None) -> Iterator[Case]:
    """The cases in ``source`` in file order, each validated; the first problem raises SuiteError naming file:line
    of ``shown``, the file the user wrote. The first reading also refuses duplicate ids and writes every line to
    ``copy_to``; later ones read that copy.
    """
    try:
        fh = source.open("rb")
    except OSError as exc:
        if first:
            raise SuiteError(str(shown), f"cannot read it ({exc.strerror})", "check that it is a readable file") from None
        raise SuiteError(str(shown), f"cannot read the copy of its cases taken at load ({exc.strerror}: {source})",
                         "run the command again") from None
    seen: dict[str, int] = {}
    with fh:
        for lineno, raw_line in enumerate(fh, start=1):
            if copy_to is not None:
                copy_to.write(raw_line)
            where = f"{shown}:{lineno}"
            try:  # a byte order mark (some editors write one) is not part of the first line
                line = raw_line.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
            except UnicodeDecodeError:
                raise SuiteError(where, "line is not UTF-8", "save the file as UTF-8") from None
            if not line or line.startswith("//"):
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SuiteError(where, f"invalid JSON at column {exc.colno}: {exc.msg}",
                                 "each line must be one complete JSON object (no trailing commas, double quotes only)") from None
            except (ValueError, RecursionError) as exc:  # an integer of more than 4300 digits; nesting beyond the stack
                raise SuiteError(where, f"JSON that cannot be read: {str(exc).split(';')[0] or type(exc).__name__}",
                                 "write numbers of at most a few hundred digits and keep nesting shallow") from None
            if not isinstance(data, dict):
                raise SuiteError(where, "expected a JSON object", 'write {"id": ..., "input": ...}')
            problem = data_problem(data) if first else None  # a later reading reads bytes known to be fine
            if problem:
                raise SuiteError(where, problem, f"remove it (keep nesting within {MAX_DEPTH} levels; no \\u0000 or "
                                 "unpaired \\ud800-\\udfff escapes)")
            try:
                spec = CaseSpec.model_validate(data)
            except ValidationError as exc:
                case_id = data.get("id")
                label = f"{where} (case {short(repr(case_id), 80)})" if case_id else where
                raise validation_error(label, exc, CaseSpec, None, SuiteError) from None
            where = f"{where} (case {spec.id!r})"
            if first:
                if spec.id in seen:
                    raise SuiteError(where, f"duplicate case id (first used on line {seen[spec.id]})", "give every case a unique id")
                seen[spec.id] = lineno
            checks = default_checks + _build_checks(spec.checks, where, header_path.parent)
            if not checks:
                raise SuiteError(where, "the case has no checks", "add a 'checks' list to the case or to the suite header")
            context = (spec.context,) if isinstance(spec.context, str) else tuple(spec.context or ())
            for c in checks:
                if "references" in c.needs and not spec.references:
                    raise SuiteError(where, f"check '{c.type}' needs 'references'", "add a 'references' list of strings")
                if "context" in c.needs and not context:
                    raise SuiteError(where, f"check '{c.type}' needs 'context'", "add the retrieved passage(s) as 'context'")
            yield Case(
                id=spec.id,
                input=spec.input if isinstance(spec.input, str) else tuple(m.model_dump() for m in spec.input),
                context=context,
                references=tuple(spec.references),
                checks=tuple(checks),
                spec=spec.model_dump(mode="json", exclude_defaults=True),
            )


def _sweep_copies() -> None:
    """Remove the case copies of evalsvc processes that no longer exist (killed before they could clean up)."""
    for path in Path(tempfile.gettempdir()).glob("evalsvc-*-*.jsonl"):
        pid = path.name.split("-")[1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except OSError:  # alive, someone else's
            pass


def load_suite(header_path: str | Path) -> Suite:
    """Load and validate one suite; any problem raises SuiteError naming file:line or case id.

    The cases are read once here, to validate them, hash the version and copy them, and from the copy each
    time ``Suite.cases`` is iterated; they are never all held in memory.
    """
    header_path = Path(header_path)
    header = load_yaml_model(header_path, SuiteHeader, SuiteError)
    if header.harness is not None:
        validate_harness(header.harness, header_path.parent, str(header_path))
        identity = {"header": header.model_dump(mode="json", exclude={"description"}, exclude_defaults=True),
                    "task_files": content_identity(header.harness, header_path.parent)}
        return Suite(name=header.name, version=content_hash(identity), header=header, cases=_NO_CASES, path=header_path)
    assert header.cases is not None
    default_checks = _build_checks(header.checks, f"{header_path}: checks", header_path.parent)
    cases_path = (header_path.parent / header.cases).resolve()
    if Path(header.cases).is_absolute() or os.path.normpath(header.cases).split(os.sep)[0] == "..":
        # its lines are sent to endpoints and stored: a suite reads its own folder (a link placed there is followed)
        raise SuiteError(f"{header_path}", f"cases file {header.cases!r} lies outside the suite's folder",
                         "keep the JSONL file in the header's folder (or below it) and give its path relative to the "
                         "header; copy the data there, or link it from there")
    if not cases_path.is_file():
        raise SuiteError(f"{header_path}", f"cases file {header.cases!r} not found (looked at {cases_path})",
                         "set 'cases' to a JSONL file path relative to the header")
    # The version is content_hash({"header": ..., "cases": [specs]}), its canonical JSON fed case by case.
    # Defaults are left out so that adding an optional field to the format keeps every existing version.
    digest = hashlib.sha256(b'{"cases":[')
    n = 0
    metrics: dict[str, MetricSpec] = {}
    verdict = graded = False
    codes: set[str] = set()  # scorer code the specs only name (vendored metric scripts): hashed into the version
    _sweep_copies()
    label = re.sub(r"[^A-Za-z0-9_.-]", "_", header.name[:40])
    fd, name = tempfile.mkstemp(prefix=f"evalsvc-{os.getpid()}-{label}-", suffix=".jsonl")
    copy = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            for case in _read_cases(header_path, cases_path, cases_path, default_checks, True, out):
                digest.update((b"," if n else b"") + canonical_json(case.spec).encode())
                n += 1
                metrics.update((m.name, m) for c in case.checks for m in c.metrics())
                codes.update(code for c in case.checks if (code := c.code_identity()) is not None)
                verdict = verdict or any(c.gives_verdict for c in case.checks)
                graded = graded or any(c.model_graded for c in case.checks)
        if not n:
            raise SuiteError(str(cases_path), "no cases", "add one JSON object per line")
    except BaseException:
        copy.unlink(missing_ok=True)
        raise
    header_json = canonical_json(header.model_dump(mode="json", exclude={"cases", "description"}, exclude_defaults=True))
    digest.update(b'],"header":' + header_json.encode() + b"}")
    if codes:  # suites without such code keep the versions they had
        digest.update(b',"code":' + canonical_json(sorted(codes)).encode())
    if verdict:
        metrics["pass"] = MetricSpec("pass", "binary")
    cases = Cases(partial(_read_cases, header_path, copy, cases_path, default_checks, False), n, copy)
    return Suite(name=header.name, version=digest.hexdigest()[:16], header=header, cases=cases, path=header_path,
                 metric_map=metrics, model_graded=graded)


def discover(suites_dir: Path) -> dict[str, Path]:
    """Suite name -> header path for every ``*.yaml`` in ``suites_dir`` (names read from the headers)."""
    found: dict[str, Path] = {}
    for path in sorted(Path(suites_dir).glob("*.yaml")):
        header = load_yaml_model(path, SuiteHeader, SuiteError)
        if header.name in found:
            raise SuiteError(str(path), f"suite name '{header.name}' is also used by {found[header.name]}",
                             "give each suite a unique name")
        found[header.name] = path
    return found


def resolve(suites_dir: Path, names: list[str] | None) -> list[Suite]:
    """Load the named suites (all of them when ``names`` is empty)."""
    import difflib

    available = discover(suites_dir)
    if not names:
        return [load_suite(p) for p in available.values()]
    out = []
    for n in names:
        if n in available:
            out.append(load_suite(available[n]))
        elif Path(n).is_file():
            out.append(load_suite(n))
        else:
            close = difflib.get_close_matches(n, available, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"suites in {suites_dir}: {', '.join(available) or 'none'}"
            raise SuiteError(f"--suite {n}", "no such suite", hint)
    return out
