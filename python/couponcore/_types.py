"""Plain Python values of the public API: statuses, campaigns, stats, coupons, partners.

Each value type the core returns is defined ONCE here (wallets: in _wallet.py), as a frozen
dataclass marked ``@record("CoreName")``. The binding hands over the core's value as a tuple in
the order of its record (python/bindings/records.cpp, published as ``_core.fields(name)``), and
:func:`from_core` builds the dataclass from it in one step: each field reads the core field of
its name, or the one its ``core(...)`` metadata names, converted as that metadata says
(``*_us`` microseconds -> aware UTC datetimes, strings -> enums, nested records). The HTTP faces
(couponcore.fastapi's response models, the JSON of couponcore._web.to_json used by FastAPI
and Django) are derived from these dataclasses; tests/python/test_value_types.py checks that
every face has every field. See docs/development.md, "Value types".
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar, Union

from . import _core

TimeLike = Union[_dt.datetime, int, float]
T = TypeVar("T")


class Status(str, enum.Enum):
    """What the gate answered. A ``str`` enum: ``result.status == "ISSUED"`` works too."""

    ISSUED = "ISSUED"
    SOLD_OUT = "SOLD_OUT"
    ALREADY_ISSUED = "ALREADY_ISSUED"
    NOT_OPEN = "NOT_OPEN"
    ENDED = "ENDED"
    RATE_LIMITED = "RATE_LIMITED"  # over the campaign's rate limit: retry after retry_after_ms

    def __str__(self) -> str:
        return self.value


# _core.IssueResult is the one value type that is a native class, not a dataclass: issue() is
# the hot path, and answers without a coupon are shared immutable objects (one per status).
# Its fields are its record's (_core.fields("IssueResult")); these are their Python types, for
# the HTTP schema. The stub _core.pyi declares the same; test_value_types.py checks all three.
ISSUE_RESULT_TYPES: dict[str, Any] = {
    "status": Status,
    "seq": Optional[int],
    "coupon_id": Optional[int],
    "retry_after_ms": Optional[int],  # RATE_LIMITED: ms to the end of the rate window, in (0, window]
}

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def to_us(value: Optional[TimeLike], what: str) -> Optional[int]:
    """A datetime (naive means UTC) or Unix seconds -> microseconds since the epoch."""
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        delta = value - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _core.InvalidType(f"{what} must be a datetime or Unix seconds, got {type(value).__name__}")
    return _seconds_to_us(value, what)


_I64_MAX = 2**63 - 1


def _seconds_to_us(value: Union[int, float], what: str) -> int:
    """Seconds (int or finite float) -> microseconds within int64, else InvalidArgument."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _core.InvalidArgument(f"{what} must be a finite number of seconds, got {value}")
    us = value * 1_000_000 if isinstance(value, int) else int(round(value * 1_000_000))
    if not -_I64_MAX <= us <= _I64_MAX:
        raise _core.InvalidArgument(f"{what} is out of range")
    return us


def from_us(value: Optional[int]) -> Optional[_dt.datetime]:
    if value is None:
        return None
    return _EPOCH + _dt.timedelta(microseconds=value)


# ---- one definition per value type: the dataclass, read from the core's record ---------------

_RECORDS: dict[type, str] = {}  # dataclass -> the core record it is read from
_MAKERS: dict[type, Callable[[tuple[Any, ...]], Any]] = {}


def record(core_name: str) -> Callable[[type[T]], type[T]]:
    """Marks a dataclass as the Python definition of the core's value type ``core_name``."""

    def register(cls: type[T]) -> type[T]:
        _RECORDS[cls] = core_name
        return cls

    return register


def core(
    name: Optional[str] = None, convert: Optional[Callable[[Any], Any]] = None, *, when: Optional[str] = None
) -> dict[str, Any]:
    """Field metadata, ``field(metadata=core(...))``: the field reads the core field ``name``
    (default: its own name) through ``convert``; with ``when``, it is None unless the core
    field ``when`` is truthy."""
    return {"core": (name, convert, when)}


def records() -> dict[type, str]:
    """Every value type defined here (and in _wallet.py) -> the core record it is read from."""
    return dict(_RECORDS)


def core_field_names(cls: type) -> list[str]:
    """The core fields ``cls``'s fields read, in the dataclass's order."""
    return [(f.metadata.get("core") or (None,))[0] or f.name for f in dataclasses.fields(cls)]


def from_core(cls: type[T], values: tuple[Any, ...]) -> T:
    """The dataclass ``cls`` from its core record's tuple (as the binding returns it)."""
    make = _MAKERS.get(cls)
    if make is None:
        make = _MAKERS[cls] = _maker(cls)
    return make(values)  # type: ignore[no-any-return]


def _maker(cls: type) -> Callable[[tuple[Any, ...]], Any]:
    """The function building ``cls`` from its core record's tuple, made once per class. Like
    the dataclasses module, it is generated code: ``cls(t[0], from_us(t[5]), ...)``."""
    core_name = _RECORDS[cls]
    names = _core.fields(core_name)
    index = {n: i for i, n in enumerate(names)}
    namespace: dict[str, Any] = {"cls": cls}
    args = []
    for k, f in enumerate(dataclasses.fields(cls)):
        name, convert, when = f.metadata.get("core") or (None, None, None)
        for n in (name or f.name, when):
            if n is not None and n not in index:
                raise TypeError(f"{cls.__name__}.{f.name}: the core's {core_name} has no field {n!r} (it has {names})")
        arg = f"t[{index[name or f.name]}]"
        if convert is not None:
            namespace[f"convert{k}"] = convert
            arg = f"convert{k}({arg})"
        if when is not None:
            arg = f"({arg} if t[{index[when]}] else None)"
        args.append(arg)
    exec(f"def make(t):\n    return cls({', '.join(args)})", namespace)
    return namespace["make"]  # type: ignore[no-any-return]


def record_of(cls: type[T]) -> Callable[[tuple[Any, ...]], T]:
    """A ``convert`` for a field holding another record."""
    return lambda t: from_core(cls, t)


def records_of(cls: type[T]) -> Callable[[list[tuple[Any, ...]]], list[T]]:
    """A ``convert`` for a field holding a list of records."""
    return lambda ts: [from_core(cls, t) for t in ts]


@record("Campaign")
@dataclass(frozen=True)
class Campaign:
    """A coupon campaign. Times are aware UTC datetimes; amounts are integers in minor units."""

    id: int
    name: str
    quantity: int
    per_user_limit: int
    starts_at: Optional[_dt.datetime] = field(metadata=core("starts_at_us", from_us))
    ends_at: Optional[_dt.datetime] = field(metadata=core("ends_at_us", from_us))
    state: str
    partner_id: int
    discount_kind: str
    discount_value: int
    discount_max: Optional[int]
    min_order_amount: int
    valid_until: Optional[_dt.datetime] = field(metadata=core("valid_until_us", from_us))
    valid_days: Optional[int]
    shards: int  # production: the stock's hash tags (docs/production.md "Sharded campaigns"); embedded: 1
    created_at: _dt.datetime = field(metadata=core("created_at_us", from_us))
    rate_limit_per_user: int  # issue requests per window per user; 0 = no limit
    rate_limit_per_partner: int  # issue requests per window, all users together; 0 = no limit
    rate_window_ms: int


@record("CampaignStats")
@dataclass(frozen=True)
class CampaignStats:
    """What the store holds for one campaign (after ``drain()``, every grant so far)."""

    rows: int
    distinct_users: int
    min_seq: int
    max_seq: int


@record("LogBacklog")
@dataclass(frozen=True)
class LogBacklog:
    """The backlog of one campaign's grant log (production: a Redis Stream read by the consumer
    group "writers"); the deployment's values, the same from every engine on it."""

    campaign_id: int
    entries: int  # entries not yet settled (acknowledged ones are trimmed); one holds 1..2,048 grants
    pending: int  # delivered to a writer, not yet acknowledged
    oldest_pending_age_ms: int  # Redis server time minus the oldest pending entry's id time; 0: none
    dead_letters: int  # entries in the campaign's dead-letter stream
    oldest_unread_age_ms: int = 0  # Redis server time minus the oldest entry no writer has read yet; 0: none


@record("WriterInfo")
@dataclass(frozen=True)
class WriterInfo:
    """One grant-writer consumer of the deployment as its heartbeat shows it (production): every
    consumer that beats, and every consumer holding entries (one that never beat is an older
    version; its entries are taken over after ``writer_claim_idle_ms``)."""

    consumer: str  # its name in the consumer group "writers"
    alive: bool  # it beat within writer_dead_after_ms, on the Redis server's clock
    last_beat_age_ms: Optional[int]  # Redis server time minus its last beat; None: it never beat
    pending: int  # entries delivered to it and not acknowledged, over all campaigns


@record("DeadLetter")
@dataclass(frozen=True)
class DeadLetter:
    """One record of a campaign's dead-letter stream (production): a grant that left the grant
    log without reaching PostgreSQL, with why. A refused grant's record names it (``seq``,
    ``user_id``, ``request_id``); a malformed entry's record has only its raw ``fields``.
    See docs/dead-letters.md."""

    campaign_id: int
    id: str  # the dead-letter stream id, "<ms>-<n>"
    entry_id: str  # the grant-log entry it came from
    reason: str
    deliveries: int  # deliveries of that entry before it was dead-lettered
    seq: Optional[int]
    user_id: Optional[str]
    request_id: Optional[str]
    dead_lettered_at: _dt.datetime = field(metadata=core("dead_lettered_at_us", from_us))
    fields: dict[str, str]  # the entry's own fields, raw (c s u o r t, and p if traced, for a refused grant)
    user_ordinal: Optional[int]  # the user's n-th coupon of the campaign
    redrives: int  # times its grant was re-driven and dead-lettered again


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


@record("Coupon")
@dataclass(frozen=True)
class Coupon:
    """One issued coupon. Amounts are integers in minor units; times aware UTC datetimes."""

    id: int
    campaign_id: int
    seq: int
    user_id: str
    state: CouponState = field(metadata=core(convert=CouponState))
    issued_at: _dt.datetime = field(metadata=core("issued_at_us", from_us))
    valid_until: Optional[_dt.datetime] = field(metadata=core("valid_until_us", from_us))
    used_order_id: Optional[str]
    used_at: Optional[_dt.datetime] = field(metadata=core("used_at_us", from_us))
    order_amount: Optional[int]
    discount_amount: Optional[int]


@record("UseResult")
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
    used_at: _dt.datetime = field(metadata=core("used_at_us", from_us))


@record("CouponPage")
@dataclass(frozen=True)
class CouponPage:
    """One page of a user's coupons, by coupon id. Pass ``next_cursor`` back as ``cursor``;
    it is ``None`` on the last page."""

    items: list[Coupon] = field(metadata=core(convert=records_of(Coupon)))
    next_cursor: Optional[int]


@record("CouponCounts")
@dataclass(frozen=True)
class CouponCounts:
    """A campaign's coupons by state (an issued coupon past its validity counts as expired)."""

    issued: int
    used: int
    expired: int
    total: int


@record("ExpireReport")
@dataclass(frozen=True)
class ExpireReport:
    """What one run of the expiry job did. ``more``: it stopped at ``chunks_max``."""

    expired: int
    chunks: int
    more: bool


@record("Partner")
@dataclass(frozen=True)
class Partner:
    """A tenant. Partner 0 is the embedded default and holds no API keys."""

    id: int
    name: str
    created_at: _dt.datetime = field(metadata=core("created_at_us", from_us))
    active_keys: int


@record("PartnerKey")
@dataclass(frozen=True)
class PartnerKey:
    """A partner with its API key, as ``partners.create`` / ``partners.rotate`` return it: the
    only time the key is visible (only its SHA-256 is stored). The key is left out of repr()."""

    partner: Partner = field(metadata=core(convert=record_of(Partner)))
    api_key: str = field(repr=False)
