"""The JSON Schemas of couponcore's events, as shipped in the package, and the validator decoding uses.

Files: ``couponcore/events/schemas/<type>/v<N>.json`` (JSON Schema 2020-12) for each event type's
``data`` and ``schemas/cloudevent/v1.json`` for the CloudEvent envelope. Each schema's ``$id`` is the
``dataschema`` URN its events carry: ``urn:couponcore:event:<type>:v<N>``.

Validation without a dependency: the schemas use a small subset of JSON Schema (``type``,
``required``, ``properties``, ``additionalProperties``, ``const``, ``enum``, ``minimum``, ``maximum``,
``minLength``, ``maxLength``, ``pattern``; ``format`` and the annotation keywords are not checked),
and :func:`validate` implements exactly that subset. tests/python/test_event_schemas.py checks that
every shipped schema stays inside it and that the ``jsonschema`` package (a development
dependency, not a runtime one) gives the same verdicts on the examples and on broken copies.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from importlib import resources
from typing import Any

from .._event_errors import EventSchemaError, UnknownEventType, UnsupportedSchemaVersion

#: The catalogue: every event type couponcore writes (docs/events.md).
EVENT_TYPES: tuple[str, ...] = (
    "coupon.issued",
    "coupon.used",
    "coupon.use_cancelled",
    "coupon.expired",
    "campaign.sold_out",
    "points.earned",
    "points.used",
    "points.cancelled",
    "points.expired",
    "points.transferred",
)

ENVELOPE = "cloudevent"

#: The keywords :func:`validate` checks; ANNOTATIONS are allowed and ignored.
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

_DATASCHEMA = re.compile(r"^urn:couponcore:event:([a-z_]+\.[a-z_]+):v([1-9][0-9]*)$")


def dataschema_urn(event_type: str, version: int) -> str:
    """The ``dataschema`` of ``event_type`` at ``version``: ``urn:couponcore:event:<type>:v<N>``."""
    return f"urn:couponcore:event:{event_type}:v{version}"


def parse_dataschema(urn: str) -> tuple[str, int]:
    """``(type, version)`` of a ``dataschema`` URN; EventSchemaError when it is not one."""
    m = _DATASCHEMA.match(urn) if isinstance(urn, str) else None
    if m is None:
        raise EventSchemaError(f"dataschema {urn!r} is not urn:couponcore:event:<type>:v<N>")
    return m.group(1), int(m.group(2))


def _root() -> Any:
    return resources.files("couponcore.events").joinpath("schemas")


@cache
def versions(event_type: str) -> tuple[int, ...]:
    """The schema versions shipped for ``event_type``, ascending; UnknownEventType for a type
    outside the catalogue."""
    if event_type not in EVENT_TYPES and event_type != ENVELOPE:
        raise UnknownEventType(f"unknown event type {event_type!r}; known: {', '.join(EVENT_TYPES)}")
    found = []
    for entry in _root().joinpath(event_type).iterdir():
        m = re.match(r"^v([1-9][0-9]*)\.json$", entry.name)
        if m:
            found.append(int(m.group(1)))
    return tuple(sorted(found))


def latest_version(event_type: str) -> int:
    return versions(event_type)[-1]


def load(event_type: str, version: int = 1) -> dict[str, Any]:
    """The JSON Schema of ``event_type``'s data at ``version`` (``"cloudevent"``: the envelope), a
    copy of its own. UnknownEventType / UnsupportedSchemaVersion when there is none."""
    return copy.deepcopy(cached(event_type, version))


@cache
def cached(event_type: str, version: int) -> dict[str, Any]:
    """load() without the copy: the parsed schema shared by every caller (do not modify it)."""
    if version not in versions(event_type):
        raise UnsupportedSchemaVersion(
            f"{event_type} has no schema version {version!r}; known: {', '.join(f'v{v}' for v in versions(event_type))}"
        )
    text = _root().joinpath(event_type, f"v{version}.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def example_event(event_type: str, version: int = 1, **data: Any) -> dict[str, Any]:
    """A complete CloudEvent of ``event_type`` whose data is the example of its schema at
    ``version`` (with ``data`` overriding fields): for consumers' tests and the docs."""
    event: dict[str, Any] = copy.deepcopy(cached(ENVELOPE, 1)["examples"][0])
    event.update(
        type=event_type,
        id=f"{event_type}:example",
        dataschema=dataschema_urn(event_type, version),
        data={**copy.deepcopy(cached(event_type, version)["examples"][0]), **data},
    )
    return event


_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def errors(instance: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Every way ``instance`` fails ``schema`` (the subset in CHECKED_KEYWORDS), as
    ``"<json pointer>: <what>"``; empty when it is valid."""
    out: list[str] = []
    where = path or "/"
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[k](instance) for k in kinds):
            return [f"{where}: {_show(instance)} is not of type {' or '.join(kinds)}"]
    if "const" in schema and not _same(instance, schema["const"]):
        out.append(f"{where}: must be {schema['const']!r}")
    if "enum" in schema and not any(_same(instance, e) for e in schema["enum"]):
        out.append(f"{where}: must be one of {schema['enum']!r}")
    if _TYPES["number"](instance):
        if "minimum" in schema and instance < schema["minimum"]:
            out.append(f"{where}: {instance} is less than {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            out.append(f"{where}: {instance} is more than {schema['maximum']}")
    if isinstance(instance, str):
        if "minLength" in schema and len(instance) < schema["minLength"]:
            out.append(f"{where}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(instance) > schema["maxLength"]:
            out.append(f"{where}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and re.search(schema["pattern"], instance) is None:
            out.append(f"{where}: {_show(instance)} does not match {schema['pattern']}")
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in instance:
                out.append(f"{where}: {name!r} is required")
        for name, value in instance.items():
            if name in props:
                out.extend(errors(value, props[name], f"{path}/{name}"))
            elif schema.get("additionalProperties", True) is False:
                out.append(f"{where}: {name!r} is not allowed")
    return out


def validate(instance: Any, schema: dict[str, Any], what: str, path: str = "") -> None:
    """EventSchemaError naming every failure (as JSON pointers under ``path``) when ``instance`` does
    not satisfy ``schema``."""
    found = errors(instance, schema, path)
    if found:
        raise EventSchemaError(f"{what}: " + "; ".join(found[:10]) + (" ..." if len(found) > 10 else ""))


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _show(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, (bytes, bytearray)) else repr(v)
    return s if len(s) <= 60 else s[:57] + "..."
