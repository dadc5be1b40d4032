"""Plain Python values of the public API: statuses, campaigns, stats, coupons, partners."""

from __future__ import annotations

import datetime as _dt
import enum
import math
from dataclasses import dataclass, field
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


_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def to_us(value: Optional[TimeLike], what: str) -> Optional[int]:
    """A datetime (naive means UTC) or Unix seconds -> microseconds since the epoch."""
    from ._core import InvalidType

    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidType(f"{what} must be a datetime or Unix seconds, got {type(value).__name__}")
    return _seconds_to_us(value, what)


_I64_MAX = 2**63 - 1


def _seconds_to_us(value: Union[int, float], what: str) -> int:
    """Seconds (int or finite float) -> microseconds within int64, else InvalidArgument."""
    from ._core import InvalidArgument

    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument(f"{what} must be a finite number of seconds, got {value}")
    us = value * 1_000_000 if isinstance(value, int) else int(round(value * 1_000_000))
    if not -_I64_MAX <= us <= _I64_MAX:
        raise InvalidArgument(f"{what} is out of range")
    return us


def from_us(value: Optional[int]) -> Optional[_dt.datetime]:
    if value is None:
        return None
    return _EPOCH + _dt.timedelta(microseconds=value)


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


class CouponState(str, enum.Enum):
    """Where a coupon is in its life. A ``str`` enum: ``coupon.state == "used"`` works too.

    ``issued`` -> ``used`` (use) -> ``issued`` again (cancel_use); ``issued`` -> ``expired``
    once its validity passes (seen at once on read; persisted by ``expire_coupons``).
    """

    ISSUED = "issued"
    USED = "used"
    EXPIRED = "expired"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Coupon:
    """One issued coupon. Amounts are integers in minor units; times aware UTC datetimes."""

    id: int
    campaign_id: int
    seq: int
    user_id: str
    state: CouponState
    issued_at: _dt.datetime
    valid_until: Optional[_dt.datetime]
    used_order_id: Optional[str]
    used_at: Optional[_dt.datetime]
    order_amount: Optional[int]
    discount_amount: Optional[int]

    @classmethod
    def _from_core(cls, d: dict[str, Any]) -> Coupon:
        issued = from_us(d["issued_at_us"])
        assert issued is not None
        return cls(
            id=d["id"],
            campaign_id=d["campaign_id"],
            seq=d["seq"],
            user_id=d["user_id"],
            state=CouponState(d["state"]),
            issued_at=issued,
            valid_until=from_us(d["valid_until_us"]),
            used_order_id=d["used_order_id"],
            used_at=from_us(d["used_at_us"]),
            order_amount=d["order_amount"],
            discount_amount=d["discount_amount"],
        )


@dataclass(frozen=True)
class UseResult:
    """What ``coupons.use`` answered; a repeat with the same order id returns the same."""

    coupon_id: int
    campaign_id: int
    user_id: str
    order_id: str
    order_amount: int
    discount_amount: int
    payable_amount: int
    used_at: _dt.datetime

    @classmethod
    def _from_core(cls, d: dict[str, Any]) -> UseResult:
        used_at = from_us(d["used_at_us"])
        assert used_at is not None
        return cls(
            coupon_id=d["coupon_id"],
            campaign_id=d["campaign_id"],
            user_id=d["user_id"],
            order_id=d["order_id"],
            order_amount=d["order_amount"],
            discount_amount=d["discount_amount"],
            payable_amount=d["payable_amount"],
            used_at=used_at,
        )


@dataclass(frozen=True)
class CouponPage:
    """One page of a user's coupons, by coupon id. Pass ``next_cursor`` back as ``cursor``;
    it is ``None`` on the last page."""

    items: list[Coupon]
    next_cursor: Optional[int]


@dataclass(frozen=True)
class CouponCounts:
    """A campaign's coupons by state (an issued coupon past its validity counts as expired)."""

    issued: int
    used: int
    expired: int
    total: int


@dataclass(frozen=True)
class ExpireReport:
    """What one run of the expiry job did. ``more``: it stopped at ``chunks_max``."""

    expired: int
    chunks: int
    more: bool


@dataclass(frozen=True)
class Partner:
    """A tenant. Partner 0 is the embedded default and holds no API keys."""

    id: int
    name: str
    created_at: _dt.datetime
    active_keys: int

    @classmethod
    def _from_core(cls, d: dict[str, Any]) -> Partner:
        created = from_us(d["created_at_us"])
        assert created is not None
        return cls(id=d["id"], name=d["name"], created_at=created, active_keys=d["active_keys"])


@dataclass(frozen=True)
class PartnerKey:
    """A partner with its API key, as ``partners.create`` / ``partners.rotate`` return it: the
    only time the key is visible (only its SHA-256 is stored). The key is left out of repr()."""

    partner: Partner
    api_key: str = field(repr=False)
