"""Checks on structured (JSON) answers."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from evalsvc.checks.base import Case, Check, check

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_json(output: str) -> tuple[bool, Any]:
    """Parse an answer as JSON, tolerating a surrounding Markdown code fence."""
    text = output.strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1)
    try:
        return True, json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's stack, e.g. "[" * 100000
        return False, None


@check("json_valid")
class JsonValid(Check):
    type: Literal["json_valid"] = "json_valid"

    def score(self, output: str, case: Case) -> dict[str, float]:
        return {self.label: float(parse_json(output)[0])}


@check("json_schema")
class JsonSchema(Check):
    """The answer is JSON and validates against ``schema`` (JSON Schema, any draft jsonschema knows)."""

    type: Literal["json_schema"] = "json_schema"
    schema_: dict[str, Any] = Field(alias="schema")

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        import jsonschema

        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"'schema' is not a valid JSON Schema: {exc.message[:300]}") from None
        _local_refs_only(schema)
        return schema

    def score(self, output: str, case: Case) -> dict[str, float]:
        ok, value = parse_json(output)
        if not ok:
            return {self.label: 0.0}
        try:
            return {self.label: float(_validator(self.schema_).is_valid(value))}
        except RecursionError:  # parsed, but nested too deeply to validate: not the answer the schema describes
            return {self.label: 0.0}


_REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")


def _validator(schema: dict[str, Any]) -> Any:
    """A validator that resolves references inside ``schema`` only: jsonschema otherwise fetches remote ones."""
    import jsonschema
    from referencing import Registry

    return jsonschema.validators.validator_for(schema)(schema, registry=Registry())


def _local_refs_only(schema: dict[str, Any]) -> None:
    """Scoring must never reach a URL or a file, nor fail halfway through a run: every $ref points inside
    the schema, resolves there, and references do not loop."""
    import jsonschema
    from referencing import Registry
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012, specification_with

    refs, stack = [], [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            refs += [v for k, v in node.items() if k in _REF_KEYS]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    for ref in refs:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise ValueError(f"'schema' refers to {ref!r}: only references inside the schema ('#/$defs/...') are allowed, "
                             "so scoring never fetches a URL or reads a file; copy the referenced schema into $defs")
    cls = jsonschema.validators.validator_for(schema)
    spec = specification_with(cls.ID_OF(cls.META_SCHEMA) or "", default=DRAFT202012)
    resolver = Registry().resolver_with_root(spec.create_resource(schema))  # as jsonschema builds its own
    targets: list[Any] = [schema]
    for ref in refs:
        try:
            targets.append(resolver.lookup(ref).contents)
        except Unresolvable:
            raise ValueError(f"'schema' refers to {ref!r}, which is not in the schema") from None
    validator = _validator(schema)
    try:  # a reference loop recurses on any input, so small probes of every target find it
        for target in targets:
            for probe in (None, 0, "", [], {}):
                validator.evolve(schema=target).is_valid(probe)
    except RecursionError:
        raise ValueError("'schema' has references that lead back to themselves without consuming input "
                         "(e.g. {\"$ref\": \"#\"})") from None
