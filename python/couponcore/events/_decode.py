"""Versioned decoding of couponcore's CloudEvents into typed values.

``decode(event)`` checks the envelope (schemas/cloudevent/v1.json), finds the data's type and schema
version in ``dataschema``, checks the data against that version's schema and returns an
:class:`DecodedEvent` whose ``data`` is the dataclass of that type and version. ``decode(event, version=N)``
returns version N of the data instead: an older event is upcast step by step (v1 -> v2 -> ...) and
the result is checked against version N's schema too. A consumer written against v2 thus reads
events written as v1, and a producer can move to v2 without waiting for every consumer.

Errors (all ``couponcore.InvalidArgument``): ``UnknownEventType`` (a type outside the catalogue),
``UnsupportedSchemaVersion`` (a version this package does not ship, or a downcast), and their base
``EventSchemaError`` (not a CloudEvent of ours, or data that fails its schema).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any, Callable, Generic, Optional, TypeVar

from .._event_errors import EventSchemaError, UnknownEventType, UnsupportedSchemaVersion
from . import _schema

T = TypeVar("T")


@dataclass(frozen=True)
class DecodedEvent(Generic[T]):
    """One decoded event: the CloudEvent's attributes and its typed ``data``."""

    id: str  # stable, derived from the business key: dedupe by it
    type: str
    source: str  # couponcore/partner/<partner_id>
    subject: str  # coupon/<id>, campaign/<id>, wallet/<partner_id>/<user_id>
    time: datetime  # aware, UTC
    sequence: int  # the outbox's increasing number
    partner_id: int
    written_version: int  # the schema version the event was written with
    version: int  # the schema version of ``data`` (> written_version when upcast)
    data: T
    traceparent: Optional[str] = None


# ---- the data of each type and version (fields and order as in the JSON Schemas) -------------


@dataclass(frozen=True)
class CouponIssuedV1:
    coupon_id: int
    campaign_id: int
    seq: int
    user_id: str
    user_ordinal: int
    request_id: Optional[str]
    issued_at_us: int
    valid_until_us: Optional[int]


@dataclass(frozen=True)
class CouponIssuedV2:
    """coupon.issued v2: the times as RFC 3339 strings (UTC, microseconds) instead of microseconds."""

    coupon_id: int
    campaign_id: int
    seq: int
    user_id: str
    user_ordinal: int
    request_id: Optional[str]
    issued_at: str
    valid_until: Optional[str]

    @property
    def issued_at_dt(self) -> datetime:
        return _parse_time(self.issued_at)

    @property
    def valid_until_dt(self) -> Optional[datetime]:
        return None if self.valid_until is None else _parse_time(self.valid_until)


@dataclass(frozen=True)
class CouponUsedV1:
    coupon_id: int
    campaign_id: int
    user_id: str
    order_id: str
    order_amount: int
    discount_amount: int
    used_at_us: int


@dataclass(frozen=True)
class CouponUseCancelledV1:
    coupon_id: int
    campaign_id: int
    user_id: str
    order_id: str
    state: str  # "issued" (usable again) or "expired"
    cancelled_at_us: int


@dataclass(frozen=True)
class CouponExpiredV1:
    coupon_id: int
    campaign_id: int
    user_id: str
    valid_until_us: Optional[int]
    expired_at_us: int


@dataclass(frozen=True)
class CampaignSoldOutV1:
    campaign_id: int
    quantity: int
    last_coupon_id: int
    last_user_id: str
    sold_out_at_us: int


@dataclass(frozen=True)
class _PointsV1:
    """The ledger entry behind a points.* event (the envelope's ``time`` is the entry's time)."""

    entry_id: int
    user_id: str
    amount: int  # positive: the points earned, drawn, restored, written off or moved
    balance_after: int
    idempotency_key: Optional[str]  # None for expiry
    order_id: Optional[str]
    reason: Optional[str]
    ref_entry_id: Optional[int]  # cancel: the use; expire after a cancel: the cancel; transfer: transfer_in
    to_user_id: Optional[str]  # points.transferred only


@dataclass(frozen=True)
class PointsEarnedV1(_PointsV1):
    pass


@dataclass(frozen=True)
class PointsUsedV1(_PointsV1):
    pass


@dataclass(frozen=True)
class PointsCancelledV1(_PointsV1):
    pass


@dataclass(frozen=True)
class PointsExpiredV1(_PointsV1):
    pass


@dataclass(frozen=True)
class PointsTransferredV1(_PointsV1):
    pass


#: (type, version) -> the dataclass of its data. tests/python/test_event_schemas.py checks that it
#: covers every shipped schema and that each dataclass has exactly its schema's properties.
DATA_CLASSES: dict[tuple[str, int], type] = {
    ("coupon.issued", 1): CouponIssuedV1,
    ("coupon.issued", 2): CouponIssuedV2,
    ("coupon.used", 1): CouponUsedV1,
    ("coupon.use_cancelled", 1): CouponUseCancelledV1,
    ("coupon.expired", 1): CouponExpiredV1,
    ("campaign.sold_out", 1): CampaignSoldOutV1,
    ("points.earned", 1): PointsEarnedV1,
    ("points.used", 1): PointsUsedV1,
    ("points.cancelled", 1): PointsCancelledV1,
    ("points.expired", 1): PointsExpiredV1,
    ("points.transferred", 1): PointsTransferredV1,
}


# ---- upcasters: (type, from version) -> data of from+1 ---------------------------------------


def format_time_us(us: int) -> str:
    """RFC 3339 in UTC with microseconds, as the envelope's ``time``: 2026-12-06T08:00:00.123456Z."""
    dt = datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).replace(microsecond=us % 1_000_000)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _coupon_issued_v1_to_v2(d: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in d.items() if k not in ("issued_at_us", "valid_until_us")}
    out["issued_at"] = format_time_us(d["issued_at_us"])
    out["valid_until"] = None if d["valid_until_us"] is None else format_time_us(d["valid_until_us"])
    return out


UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("coupon.issued", 1): _coupon_issued_v1_to_v2,
}


# ---- decode -----------------------------------------------------------------------------------


def decode(event: Any, version: Optional[int] = None) -> DecodedEvent[Any]:
    """Decode one couponcore CloudEvent (a mapping, its JSON as str/bytes, or an event from
    ``engine.events.consume``) into an :class:`DecodedEvent`.

    ``version``: the schema version of ``data`` the caller wants (None: as written). Older events are
    upcast to it; a version this package does not ship, or one older than the event's, is
    UnsupportedSchemaVersion. An unknown ``type`` is UnknownEventType; anything else that is not a
    valid event of ours is EventSchemaError.
    """
    ev = _as_mapping(event)
    _schema.validate(ev, _schema.validator(_schema.ENVELOPE, 1), "not a couponcore CloudEvent")
    etype = ev["type"]
    if etype not in _schema.EVENT_TYPES:
        raise UnknownEventType(f"unknown event type {etype!r} (event {ev['id']!r})")
    schema_type, written = _schema.parse_dataschema(ev["dataschema"])
    if schema_type != etype:
        raise EventSchemaError(f"event {ev['id']!r}: dataschema {ev['dataschema']!r} is not of type {etype!r}")
    known = _schema.versions(etype)
    if written not in known:
        raise UnsupportedSchemaVersion(
            f"event {ev['id']!r}: {etype} v{written} is not known to this couponcore "
            f"(known: {', '.join(f'v{v}' for v in known)}); upgrade the consumer"
        )
    want = written if version is None else _check_version(etype, version, written, ev["id"])
    data = dict(ev["data"])
    _schema.validate(data, _schema.validator(etype, written), f"event {ev['id']!r}: {etype} v{written}", "/data")
    for v in range(written, want):
        data = UPCASTERS[(etype, v)](data)
        what = f"event {ev['id']!r}: {etype} upcast to v{v + 1}"
        _schema.validate(data, _schema.validator(etype, v + 1), what, "/data")
    return DecodedEvent(
        id=ev["id"],
        type=etype,
        source=ev["source"],
        subject=ev["subject"],
        time=_parse_time(ev["time"]),
        sequence=int(ev["sequence"]),
        partner_id=int(ev["partnerid"]),
        written_version=written,
        version=want,
        data=_build(DATA_CLASSES[(etype, want)], data),
        traceparent=ev.get("traceparent"),
    )


def _check_version(etype: str, version: Any, written: int, event_id: str) -> int:
    if isinstance(version, bool) or not isinstance(version, int):
        raise UnsupportedSchemaVersion(f"version must be a whole number, not {version!r}")
    if version not in _schema.versions(etype):
        raise UnsupportedSchemaVersion(
            f"{etype} has no schema version {version} (known: {', '.join(f'v{v}' for v in _schema.versions(etype))})"
        )
    if version < written:
        raise UnsupportedSchemaVersion(
            f"event {event_id!r} is {etype} v{written}; asked for v{version}: there is no downcast"
        )
    return version


def _as_mapping(event: Any) -> Mapping[str, Any]:
    raw = getattr(event, "raw", None)  # an event from engine.events.consume: its JSON as stored
    if isinstance(raw, (bytes, bytearray)) and raw:
        event = raw
    if isinstance(event, (bytes, bytearray, memoryview)):
        try:
            event = bytes(event).decode("utf-8")
        except UnicodeDecodeError as e:
            raise EventSchemaError(f"not UTF-8: {e}") from None
    if isinstance(event, str):
        try:
            event = json.loads(event)
        except ValueError as e:
            raise EventSchemaError(f"not JSON: {e}") from None
    if not isinstance(event, Mapping):
        raise EventSchemaError(f"an event is a JSON object, not {type(event).__name__}")
    return event


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    args = {}
    for f in fields(cls):
        v = data[f.name]
        args[f.name] = int(v) if isinstance(v, float) else v  # 1.0 is an integer to JSON Schema
    return cls(**args)


def _parse_time(text: str) -> datetime:
    if text.endswith("Z"):
        try:  # the fast path: what couponcore writes (fromisoformat takes "Z" only from 3.11 on)
            return datetime.fromisoformat(text[:-1] + "+00:00")
        except ValueError:
            pass
    try:
        fmt = "%Y-%m-%dT%H:%M:%S.%f%z" if "." in text else "%Y-%m-%dT%H:%M:%S%z"
        return datetime.strptime(text.replace("Z", "+0000"), fmt)
    except ValueError:
        raise EventSchemaError(f"time {text!r} is not RFC 3339 UTC") from None
