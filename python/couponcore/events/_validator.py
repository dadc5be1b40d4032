"""A JSON Schema validator for the subset of 2020-12 the event schemas use (see _schema.py).

A schema is compiled once into nested closures (one per schema node, each doing only the checks
its node has), so validating an event costs a few dict lookups and comparisons per field.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

#: The keywords checked; ANNOTATIONS are allowed and ignored.
CHECKED_KEYWORDS = frozenset(
    {
        "type",
        "required",
        "properties",
        "additionalProperties",
        "const",
        "enum",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
    }
)
ANNOTATIONS = frozenset({"$schema", "$id", "title", "description", "examples", "format", "default"})

#: check(instance, json pointer, errors): appends "<pointer>: <what>" for each failure.
Check = Callable[[Any, str, list[str]], None]

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "null": (type(None),),
    "boolean": (),
}


def _type_check(kinds: list[str]) -> Callable[[Any], bool]:
    exact = frozenset(t for k in kinds for t in _PY_TYPES[k])
    allow_bool = "boolean" in kinds  # bool is an int to Python, not to JSON
    integral_float = "integer" in kinds and "number" not in kinds  # 1.0 is an integer to JSON Schema

    def ok(v: Any) -> bool:
        t = type(v)
        if t is bool:
            return allow_bool
        if t in exact:
            return True
        return integral_float and t is float and v.is_integer()

    return ok


def compile_schema(schema: dict[str, Any]) -> Check:
    """The check of ``schema`` (every keyword in CHECKED_KEYWORDS; ValueError for others)."""
    unknown = set(schema) - CHECKED_KEYWORDS - ANNOTATIONS
    if unknown:
        raise ValueError(f"keywords outside couponcore's validator: {sorted(unknown)}")
    checks: list[Check] = []
    if "const" in schema:
        const = schema["const"]
        checks.append(lambda v, p, out: None if _same(v, const) else out.append(f"{p or '/'}: must be {const!r}"))
    if "enum" in schema:
        enum = schema["enum"]
        checks.append(
            lambda v, p, out: (
                None if any(_same(v, e) for e in enum) else out.append(f"{p or '/'}: must be one of {enum!r}")
            )
        )
    if "minimum" in schema or "maximum" in schema:
        lo, hi = schema.get("minimum"), schema.get("maximum")

        def bounds(v: Any, p: str, out: list[str]) -> None:
            if type(v) in (int, float):
                if lo is not None and v < lo:
                    out.append(f"{p or '/'}: {v} is less than {lo}")
                if hi is not None and v > hi:
                    out.append(f"{p or '/'}: {v} is more than {hi}")

        checks.append(bounds)
    if {"minLength", "maxLength", "pattern"} & set(schema):
        shortest, longest = schema.get("minLength", 0), schema.get("maxLength")
        rx = re.compile(schema["pattern"]) if "pattern" in schema else None

        def text(v: Any, p: str, out: list[str]) -> None:
            if isinstance(v, str):
                if len(v) < shortest:
                    out.append(f"{p or '/'}: shorter than {shortest} characters")
                if longest is not None and len(v) > longest:
                    out.append(f"{p or '/'}: longer than {longest} characters")
                if rx is not None and rx.search(v) is None:
                    out.append(f"{p or '/'}: {_show(v)} does not match {rx.pattern}")

        checks.append(text)
    if {"properties", "required"} & set(schema) or schema.get("additionalProperties", True) is False:
        props = {name: compile_schema(sub) for name, sub in schema.get("properties", {}).items()}
        required = tuple(schema.get("required", ()))
        closed = schema.get("additionalProperties", True) is False

        def obj(v: Any, p: str, out: list[str]) -> None:
            if isinstance(v, dict):
                for name in required:
                    if name not in v:
                        out.append(f"{p or '/'}: {name!r} is required")
                for name, value in v.items():
                    sub = props.get(name)
                    if sub is not None:
                        sub(value, p + "/" + name, out)
                    elif closed:
                        out.append(f"{p or '/'}: {name!r} is not allowed")

        checks.append(obj)
    type_ok = None
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        type_ok, label = _type_check(kinds), " or ".join(kinds)
    steps = tuple(checks)

    def check(v: Any, p: str, out: list[str]) -> None:
        if type_ok is not None and not type_ok(v):
            out.append(f"{p or '/'}: {_show(v)} is not of type {label}")
            return
        for step in steps:
            step(v, p, out)

    return check


def errors(instance: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Every way ``instance`` fails ``schema``, as ``"<json pointer>: <what>"``; empty when valid."""
    out: list[str] = []
    compile_schema(schema)(instance, path, out)
    return out


def _same(a: Any, b: Any) -> bool:
    # JSON's true is not 1: compare booleans by type as well
    return (type(a) is type(b) and a == b) if isinstance(a, bool) or isinstance(b, bool) else a == b


def _show(v: Any) -> str:
    try:
        s = json.dumps(v)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."
