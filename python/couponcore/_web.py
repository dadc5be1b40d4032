"""What the web integrations (couponcore.fastapi, couponcore.django) share: the mapping of
couponcore errors onto HTTP statuses, the one JSON error shape, and JSON values of results."""

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


def to_json(value: Any) -> Any:
    """couponcore's dataclasses, datetimes, enums and issue results as JSON values. Secrets
    (fields left out of repr, like an API key) are left out here too."""
    if isinstance(value, _core.IssueResult):
        return {"status": value.status.value, "seq": value.seq, "coupon_id": value.coupon_id}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value
