"""Plain Python values of the public API: statuses, campaigns, stats."""

from __future__ import annotations

import datetime as _dt
import enum
from dataclasses import dataclass
from typing import Any, Optional, Union

TimeLike = Union[_dt.datetime, int, float]


class Status(str, enum.Enum):
    """What the gate answered. A ``str`` enum: ``result.status == "ISSUED"`` works too."""

    ISSUED = "ISSUED"
    SOLD_OUT = "SOLD_OUT"
    ALREADY_ISSUED = "ALREADY_ISSUED"
    NOT_OPEN = "NOT_OPEN"
    ENDED = "ENDED"

    def __str__(self) -> str:
        return self.value


def to_us(value: Optional[TimeLike], what: str) -> Optional[int]:
    """A datetime (naive means UTC) or Unix seconds -> microseconds since the epoch."""
    from ._core import InvalidType

    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        delta = value - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidType(f"{what} must be a datetime or Unix seconds, got {type(value).__name__}")
    return int(round(value * 1_000_000))


def from_us(value: Optional[int]) -> Optional[_dt.datetime]:
    if value is None:
        return None
    return _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(microseconds=value)


@dataclass(frozen=True)
class Campaign:
    """A coupon campaign. Times are aware UTC datetimes; amounts are integers in minor units."""

    id: int
    name: str
    quantity: int
    per_user_limit: int
    starts_at: Optional[_dt.datetime]
    ends_at: Optional[_dt.datetime]
    state: str
    partner_id: int
    discount_kind: str
    discount_value: int
    discount_max: Optional[int]
    min_order_amount: int
    valid_until: Optional[_dt.datetime]
    valid_days: Optional[int]
    created_at: _dt.datetime

    @classmethod
    def _from_core(cls, d: dict[str, Any]) -> Campaign:
        created = from_us(d["created_at_us"])
        assert created is not None
        return cls(
            id=d["id"],
            name=d["name"],
            quantity=d["quantity"],
            per_user_limit=d["per_user_limit"],
            starts_at=from_us(d["starts_at_us"]),
            ends_at=from_us(d["ends_at_us"]),
            state=d["state"],
            partner_id=d["partner_id"],
            discount_kind=d["discount_kind"],
            discount_value=d["discount_value"],
            discount_max=d["discount_max"],
            min_order_amount=d["min_order_amount"],
            valid_until=from_us(d["valid_until_us"]),
            valid_days=d["valid_days"],
            created_at=created,
        )


@dataclass(frozen=True)
class CampaignStats:
    """What the store holds for one campaign (after ``drain()``, every grant so far)."""

    rows: int
    distinct_users: int
    min_seq: int
    max_seq: int
