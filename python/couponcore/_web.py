"""What the web integrations (couponcore.fastapi, couponcore.django) share: the mapping of
couponcore errors onto HTTP statuses, the one JSON error shape, and JSON values of results.

The JSON of a value type is derived from its one definition (couponcore._types): the fields
of :func:`json_fields`, the same list FastAPI's response models are made from."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import Any

from . import _core

STATUS_BY_ERROR = {
    "InvalidArgument": 422,
    "InvalidType": 422,
    "Unauthenticated": 401,
    "NotFound": 404,
    "Conflict": 409,
    "InsufficientFunds": 409,
    "Unavailable": 503,
    "Closed": 503,
    "InternalError": 500,
}


def error_status(exc: _core.Error) -> int:
    return STATUS_BY_ERROR.get(type(exc).__name__, 500)


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"error": {"type": error_type, "message": message}}


_ISSUE_RESULT_FIELDS = _core.fields("IssueResult")


def json_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of a value type's JSON (and HTTP schema): every field but the secrets, which
    are the fields left out of repr (like an API key)."""
    return [f for f in dataclasses.fields(cls) if f.repr]


def to_json(value: Any) -> Any:
    """couponcore's dataclasses, datetimes, enums and issue results as JSON values. Secrets
    (fields left out of repr, like an API key) are left out here too."""
    if isinstance(value, _core.IssueResult):
        return {name: to_json(getattr(value, name)) for name in _ISSUE_RESULT_FIELDS}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in json_fields(type(value))}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value
