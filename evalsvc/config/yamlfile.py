"""Load YAML and validate it into pydantic models, reporting errors as ``file:line``.

pydantic reports a location as a path of keys (``variants.2.endpoint.model``);
users need the line in their file. We keep PyYAML's node tree beside the data
and walk it along that path to the nearest node that exists.

Suite headers and task files are data only and may come from anyone (evalsvc.yaml is trusted, since
``local.python`` and ``local.entrypoint`` run code, but it is read the same careful way): tags that build
Python objects or import code (``!!python/...``, lm-eval's ``!function``) are refused, and so are
the two things aliases can do to a small file: refer to themselves, or expand
exponentially ("billion laughs"). Nesting is bounded so that no later step
(validation, hashing) runs out of stack.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from evalsvc.errors import UserInputError

M = TypeVar("M", bound=BaseModel)
MAX_DEPTH = 100  # nesting levels; pydantic's serializer gives up at a few hundred
MAX_ALIAS_EXPANSION = 100_000  # values that aliases may add beyond those written out


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest node on ``loc`` that exists in the YAML tree."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for key in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == key:
                    child = v
                    line = k.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            child = node.value[key]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def short(value: Any, limit: int = 60) -> str:
    """``value`` as text for a message, cut to ``limit`` characters (an id or key in the input may be megabytes)."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fix_for(err: dict[str, Any], model: type[BaseModel]) -> str | None:
    """A concrete suggestion for the commonest pydantic error kinds."""
    kind = err["type"]
    field = short(err["loc"][-1]) if err["loc"] else ""
    if kind == "extra_forbidden":
        known = _field_names(model, err["loc"][:-1])
        close = difflib.get_close_matches(field, known, n=1)
        if close:
            return f"did you mean '{close[0]}'? Known keys here: {', '.join(sorted(known))}"
        return f"remove '{field}'; known keys here: {', '.join(sorted(known))}" if known else f"remove '{field}'"
    if kind == "missing":
        return f"add '{field}'"
    return None


def _field_names(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the sub-model that ``loc`` points into (best effort)."""
    current: Any = model
    for key in loc:
        if isinstance(key, int):
            continue
        fields = getattr(current, "model_fields", {})
        if key not in fields:
            return []
        current = _inner_model(fields[key].annotation)
    return list(getattr(current, "model_fields", {}).keys())


def _inner_model(annotation: Any) -> Any:
    """The BaseModel class inside ``list[X]``, ``X | None`` and similar annotations."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def validation_error(path: str | Path, exc: ValidationError, model: type[BaseModel],
                     root: yaml.Node | None, error_cls: type[UserInputError],
                     line: int | None = None) -> UserInputError:
    """Turn pydantic's error list into one error that names file:line for each problem."""
    lines = []
    for err in exc.errors():
        where_line = line or _line_of(root, tuple(err["loc"]))
        dotted = ".".join(short(p) for p in err["loc"]) or "(top level)"
        msg = f"{path}:{where_line}: {dotted}: {err['msg']}" if where_line else f"{path}: {dotted}: {err['msg']}"
        fix = _fix_for(err, model)
        lines.append(msg + (f" ({fix})" if fix else ""))
    first = lines[0]
    where, _, problem = first.partition(": ")
    rest = "\n  ".join(lines[1:])
    if rest:
        problem += "\n  " + rest
    return error_cls(where, problem)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def data_problem(value: Any, limit: int = MAX_DEPTH) -> str | None:
    """What makes parsed data unusable downstream, if anything (iterative: deep data cannot overflow the stack).

    Lists and mappings nested beyond ``limit``; strings with NUL or an unpaired surrogate
    (escapes such as ``\\u0000`` or ``\\ud800``), which no store can keep and UTF-8 cannot encode.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            bad = _UNSTORABLE.search(item)
            if bad:
                what = "a NUL character (U+0000)" if bad.group() == "\x00" else f"an unpaired surrogate (U+{ord(bad.group()):04X})"
                return f"a string contains {what}, which cannot be stored"
            continue
        children = [*item.keys(), *item.values()] if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return f"lists and mappings nest more than {limit} levels deep"
        stack.extend((child, depth + 1) for child in children)
    return None


def _check_aliases(root: yaml.Node, path: Path, error_cls: type[UserInputError]) -> None:
    """Refuse a recursive alias, and aliases that expand the file beyond MAX_ALIAS_EXPANSION values."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in on_path:
            raise error_cls(f"{path}:{node.start_mark.line + 1}", "a YAML alias refers to a value that contains it",
                            "write the value out instead of using an alias (*name)")
        if key in sizes:
            return sizes[key]
        on_path.add(key)
        if isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        else:
            total = 1
        on_path.discard(key)
        sizes[key] = total
        return total

    expanded = size(root)
    if expanded - len(sizes) > MAX_ALIAS_EXPANSION:
        raise error_cls(str(path), f"YAML aliases expand this file to {expanded:,} values",
                        f"write the values out; aliases (*name) may add at most {MAX_ALIAS_EXPANSION:,} values")


def parse_yaml(text: str, path: Path, error_cls: type[UserInputError],
               tag_fix: str | None = None) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data, refusing what a data file must not contain."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            _check_aliases(root, path, error_cls)
        data = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        raise error_cls(f"{path}:{mark.line + 1}" if mark else str(path), f"unsupported YAML tag: {exc.problem}",
                        tag_fix or "this file is data only: tags that build Python objects or import code "
                        "(!!python/..., !function) are refused; write a plain value") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise error_cls(where, f"invalid YAML: {problem}", "fix the YAML syntax at that line (indentation, quotes, colons)") from None
    except RecursionError:
        raise error_cls(str(path), "nested too deeply to read", f"keep lists and mappings within {MAX_DEPTH} levels") from None
    except ValueError as exc:  # PyYAML lets chr() fail on an escape beyond U+10FFFF ("\U00110000")
        raise error_cls(str(path), f"invalid YAML: {exc}", "fix the escape sequences in quoted strings") from None
    problem = data_problem(data)
    if problem:
        raise error_cls(str(path), problem, f"remove it (keep nesting within {MAX_DEPTH} levels; no \\0 or \\ud800-style escapes)")
    return root, data


_ENV_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)(.*))?", re.DOTALL)


def expand_env(data: Any, root: yaml.Node | None, path: Path, error_cls: type[UserInputError],
               loc: tuple[Any, ...] = ()) -> Any:
    """``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}`` in string values, from the environment (so CI can point a
    variant at a new URL, model or revision without templating the file).

    As in the shell, ``:-`` takes the default when the variable is unset or empty, ``-`` only when it is unset, and a
    default may itself hold references (``${A:-${B}}``), expanded only when it is taken. A bare ``${VAR}`` that is unset
    or empty is an error naming its line: CI sets a variable it has no value for to the empty string
    (``CANDIDATE_URL: ${{ vars.CANDIDATE_URL }}``), and an empty URL or model name would fail far from its cause.
    ``$${`` is a literal ``${`` (a system prompt that shows a template); any other ``${`` that is no reference is an error.
    """
    if isinstance(data, dict):
        return {k: expand_env(v, root, path, error_cls, (*loc, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, root, path, error_cls, (*loc, i)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def fail(problem: str, fix: str) -> UserInputError:
        line = _line_of(root, loc)
        return error_cls(f"{path}:{line}" if line else str(path), f"{'.'.join(map(str, loc))}: {problem}", fix)

    return _expand(data, fail)


def _closing(text: str, start: int) -> int | None:
    """Index of the ``}`` that closes the ``${`` whose body starts at ``start`` (braces inside it nest)."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _expand(text: str, fail: Callable[[str, str], UserInputError]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$${", i):
            out.append("${")
            i += 3
            continue
        if not text.startswith("${", i):
            out.append(text[i])
            i += 1
            continue
        end = _closing(text, i + 2)
        ref = _ENV_NAME.fullmatch(text[i + 2:end]) if end is not None else None
        if ref is None:
            shown = short(text[i:] if end is None else text[i:end + 1], 40)
            raise fail(f"{shown} is not a reference to an environment variable ({'no closing }' if end is None else 'not a name'})",
                       "write ${NAME}, ${NAME:-default} or ${NAME-default}; for a literal ${ write $${")
        name, op, default = ref[1], ref[2], ref[3]
        found = os.environ.get(name)
        if (op == ":-" and not found) or (op == "-" and found is None):
            out.append(_expand(default, fail))
        elif op is None and not found:
            state = "is not set" if found is None else "is set to the empty string"
            raise fail(f"${{{name}}} {state}",
                       f"export {name}=..., or give a default: ${{{name}:-value}} (${{{name}-}} allows an empty value; "
                       "$${ is a literal ${)")
        else:
            out.append(found or "")
        assert end is not None
        i = end + 1
    return "".join(out)


def load_yaml_model(path: str | Path, model: type[M], error_cls: type[UserInputError], env: bool = False,
                    env_skip: tuple[str, ...] = ()) -> M:
    """Parse ``path`` and validate it as ``model`` (``env``: expand ``${VAR}`` references first; the top-level keys
    ``env_skip`` are left out, for a caller that takes their value from elsewhere)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error_cls(str(path), "file not found", "check the path (relative paths start at the current directory)") from None
    except UnicodeDecodeError as exc:
        raise error_cls(str(path), f"not UTF-8 text ({exc.reason} at byte {exc.start})", "save the file as UTF-8") from None
    except OSError as exc:
        raise error_cls(str(path), f"cannot read it ({exc.strerror or exc})", "point at a readable YAML file") from None
    root, data = parse_yaml(text, path, error_cls)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error_cls(f"{path}:1", "expected a mapping of keys to values at the top level", "see the example in README.md")
    if env:
        data = {k: expand_env(v, root, path, error_cls, (k,)) for k, v in data.items() if k not in env_skip}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(path, exc, model, root, error_cls) from None
