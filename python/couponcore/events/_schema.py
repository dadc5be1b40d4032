"""The JSON Schemas of couponcore's events, as shipped in the package, and the validator decoding uses.

Files: ``couponcore/events/schemas/<type>/v<N>.json`` (JSON Schema 2020-12) for each event type's
``data`` and ``schemas/cloudevent/v1.json`` for the CloudEvent envelope. Each schema's ``$id`` is the
``dataschema`` URN its events carry: ``urn:couponcore:event:<type>:v<N>``.

Validation without a dependency: the schemas use a small subset of JSON Schema (``type``,
``required``, ``properties``, ``additionalProperties``, ``const``, ``enum``, ``minimum``, ``maximum``,
``minLength``, ``maxLength``, ``pattern``; ``format`` and the annotation keywords are not checked),
and ``_validator.py`` implements exactly that subset. tests/python/test_event_schemas.py checks that
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
from ._validator import Check, compile_schema

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


@cache
def validator(event_type: str, version: int) -> Check:
    """The compiled check of a shipped schema (cached)."""
    return compile_schema(cached(event_type, version))


def validate(instance: Any, check: Check, what: str, path: str = "") -> None:
    """EventSchemaError naming every failure (as JSON pointers under ``path``) when ``instance``
    fails ``check`` (from :func:`validator` or :func:`compile_schema`)."""
    found: list[str] = []
    check(instance, path, found)
    if found:
        raise EventSchemaError(f"{what}: " + "; ".join(found[:10]) + (" ..." if len(found) > 10 else ""))
