"""Domain events: the consumer API on ``engine.events`` (docs/events.md).

Every change couponcore makes (a coupon issued, used, its use cancelled, expired; a campaign
sold out; points earned, used, cancelled, expired, transferred) is written as a CloudEvents 1.0
event in the same database transaction as the change. Production relays them to one Redis
Stream per type; the embedded engine keeps them in its SQLite file. Both are read the same way::

    for event in engine.events.consume("crm", ["coupon.issued", "coupon.used"]):
        handle(event.type, event.subject, event.data)    # dedupe by event.id
        event.ack()

Groups are independent (each sees every event). Delivery is at least once: an event that is not
acknowledged comes back (to the same consumer after a restart, or claimed by another consumer of
the group once it has been idle ``claim_idle_ms``); ids are stable, so a consumer that dedupes
by ``event.id`` gets each change exactly once. Within a type, events come in ``sequence`` order;
a batch spanning several types is sorted by ``sequence``, so one subject's events keep their order.

Typed, versioned reading: ``decode(event, version=None)`` against the JSON Schemas shipped in
``couponcore/events/schemas/``; signed HTTP webhooks: ``couponcore.events.webhooks``
(docs/webhooks.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Optional

from .. import _core
from .._event_errors import EventSchemaError, UnknownEventType, UnsupportedSchemaVersion
from ._decode import (
    DATA_CLASSES,
    CampaignSoldOutV1,
    CouponExpiredV1,
    CouponIssuedV1,
    CouponIssuedV2,
    CouponUseCancelledV1,
    CouponUsedV1,
    DecodedEvent,
    PointsCancelledV1,
    PointsEarnedV1,
    PointsExpiredV1,
    PointsTransferredV1,
    PointsUsedV1,
    decode,
)

# The catalogue (docs/events.md; the C++ core lists the same, in this order) lives with the schemas.
from ._schema import EVENT_TYPES, dataschema_urn, example_event, latest_version, parse_dataschema, versions
from ._schema import load as load_schema

if TYPE_CHECKING:
    from .._engine import Engine

__all__ = [
    "DATA_CLASSES",
    "EVENT_TYPES",
    "CampaignSoldOutV1",
    "CouponExpiredV1",
    "CouponIssuedV1",
    "CouponIssuedV2",
    "CouponUseCancelledV1",
    "CouponUsedV1",
    "DecodedEvent",
    "Event",
    "EventDeadLetter",
    "EventSchemaError",
    "EventStream",
    "Events",
    "PointsCancelledV1",
    "PointsEarnedV1",
    "PointsExpiredV1",
    "PointsTransferredV1",
    "PointsUsedV1",
    "UnknownEventType",
    "UnsupportedSchemaVersion",
    "dataschema_urn",
    "decode",
    "example_event",
    "latest_version",
    "load_schema",
    "parse_dataschema",
    "versions",
]


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Event:
    """One CloudEvent as a consumer group got it. ``ack()`` settles it for the group."""

    id: str
    type: str
    source: str
    subject: str
    time: datetime
    data: dict[str, Any]
    sequence: int
    partner_id: int
    dataschema: str
    traceparent: Optional[str] = None
    specversion: str = "1.0"
    datacontenttype: str = "application/json"
    group: str = ""
    entry_id: str = ""
    redelivered: bool = False
    raw: bytes = field(default=b"", repr=False, compare=False)
    _ack: Optional[Callable[[Event], int]] = field(default=None, repr=False, compare=False)

    @property
    def schema_version(self) -> int:
        """N of ``dataschema`` ("urn:couponcore:event:<type>:v<N>")."""
        return int(self.dataschema.rsplit(":v", 1)[1])

    def attributes(self) -> dict[str, Any]:
        """The CloudEvent as a dict (what the JSON holds)."""
        attributes: dict[str, Any] = json.loads(self.raw)
        return attributes

    def ack(self) -> bool:
        """Acknowledge this event for its group; False if it was not pending any more."""
        if self._ack is None:
            raise _core.InvalidArgument("this event was not read from a consumer group")
        return self._ack(self) > 0

    def _native(self) -> tuple[str, str, str, bytes, int]:
        return (self.type, self.id, self.entry_id, self.raw, self.sequence)

    @classmethod
    def _from_native(cls, t: tuple[Any, ...], group: str, ack: Optional[Callable[[Event], int]]) -> Event:
        type_, id_, entry_id, raw, sequence, redelivered = t
        a = json.loads(raw)
        return cls(
            id=id_,
            type=type_,
            source=a["source"],
            subject=a["subject"],
            time=_time(a["time"]),
            data=a.get("data") or {},
            sequence=int(sequence),
            partner_id=int(a["partnerid"]),
            dataschema=a["dataschema"],
            traceparent=a.get("traceparent"),
            specversion=a["specversion"],
            datacontenttype=a["datacontenttype"],
            group=group,
            entry_id=entry_id,
            redelivered=bool(redelivered),
            raw=bytes(raw),
            _ack=ack,
        )


@dataclass(frozen=True)
class EventDeadLetter:
    """An event a consumer group gave up on (``engine.events.dead_letter``)."""

    id: str
    group: str
    event_id: str
    type: str
    reason: str
    event: dict[str, Any]
    dead_lettered_at_us: int


def _check_types(types: Optional[Iterable[str]]) -> Optional[list[str]]:
    if types is None:
        return None
    if isinstance(types, str):
        types = [types]
    out = list(types)
    for t in out:
        if not isinstance(t, str):
            raise _core.InvalidType("event types are str")
        if t not in EVENT_TYPES:
            raise _core.InvalidArgument(f"unknown event type: {t!r} (known: {', '.join(EVENT_TYPES)})")
    return out


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _core.InvalidType(f"{name} must be an int")
    if not lo <= value <= hi:
        raise _core.InvalidArgument(f"{name} must be {lo}..{hi}, got {value}")
    return value


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"[:64]


class EventStream:
    """One consumer of a group: a sync iterator (``for e in stream``) and, via
    ``engine.events.aconsume``, an async one. ``idle_timeout_s`` (None: never) ends the
    iteration after that long without an event."""

    def __init__(
        self,
        events: Events,
        group: str,
        types: Optional[list[str]],
        consumer: str,
        batch: int,
        block_ms: int,
        claim_idle_ms: int,
        idle_timeout_s: Optional[float],
    ) -> None:
        self._events = events
        self.group = group
        self.consumer = consumer
        self._batch = batch
        self._block_ms = block_ms
        self._idle_timeout_s = idle_timeout_s
        self._reader = events._engine._core.open_event_reader(group, consumer, types, claim_idle_ms)
        self._buffer: list[Event] = []
        self._last_event = time.monotonic()

    def _ack_one(self, event: Event) -> int:
        return int(self._reader.ack([event._native()]))

    def read(self, block_ms: Optional[int] = None) -> list[Event]:
        """One batch (possibly empty after ``block_ms``), sorted by ``sequence``."""
        if self._events._engine.closed:
            raise _core.Closed("the engine is closed")
        wait = self._block_ms if block_ms is None else _check_int("block_ms", block_ms, 0, 60_000)
        got = self._reader.read(self._batch, wait)
        return [Event._from_native(t, self.group, self._ack_one) for t in got]

    def ack(self, events: Sequence[Event]) -> int:
        """Acknowledge several events at once; returns how many were pending."""
        return int(self._reader.ack([e._native() for e in events]))

    def _next_wait_ms(self) -> Optional[int]:
        """How long the next read may wait; None once idle for ``idle_timeout_s`` (stop)."""
        if self._idle_timeout_s is None:
            return self._block_ms
        left = self._idle_timeout_s - (time.monotonic() - self._last_event)
        return None if left <= 0 else max(0, min(self._block_ms, int(left * 1000)))

    def _fill(self, got: list[Event]) -> None:
        self._buffer = got
        if got:
            self._last_event = time.monotonic()

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        while not self._buffer:
            wait = self._next_wait_ms()
            if wait is None:
                raise StopIteration
            self._fill(self.read(wait))
        return self._buffer.pop(0)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        while not self._buffer:
            wait = self._next_wait_ms()
            if wait is None:
                raise StopAsyncIteration
            self._fill(await asyncio.to_thread(self.read, wait))
        return self._buffer.pop(0)


class Events:
    """``engine.events``: consumer groups over the deployment's event log."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def consume(
        self,
        group: str,
        types: Optional[Iterable[str]] = None,
        *,
        consumer: Optional[str] = None,
        batch: int = 100,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        idle_timeout_s: Optional[float] = None,
    ) -> EventStream:
        """A sync iterator of this group's events of ``types`` (None: all ten). ``consumer``
        names this reader in the group (default ``<host>-<pid>``): a restarted consumer with the
        same name gets its unacknowledged events first. Up to ``batch`` events per type and read,
        waiting up to ``block_ms`` for new ones. Unknown types are ``InvalidArgument``."""
        if not isinstance(group, str):
            raise _core.InvalidType("group must be a str")
        if consumer is not None and not isinstance(consumer, str):
            raise _core.InvalidType("consumer must be a str")
        return EventStream(
            self,
            group,
            _check_types(types),
            consumer or default_consumer(),
            _check_int("batch", batch, 1, 10_000),
            _check_int("block_ms", block_ms, 0, 60_000),
            _check_int("claim_idle_ms", claim_idle_ms, 1, 86_400_000),
            idle_timeout_s,
        )

    def aconsume(self, group: str, types: Optional[Iterable[str]] = None, **kwargs: Any) -> AsyncIterator[Event]:
        """``consume`` as an async iterator (``async for e in engine.events.aconsume(...)``);
        each read runs in a worker thread."""
        return self.consume(group, types, **kwargs)

    def ack(self, group: str, events: Sequence[Event]) -> int:
        """Acknowledge events of ``group`` (e.g. from another process); returns how many were pending."""
        return int(self._engine._core.events_ack(group, [e._native() for e in events]))

    def dead_letter(self, group: str, event: Event, reason: str) -> None:
        """Give up on ``event`` for ``group``: it goes to the group's dead letters and is
        acknowledged (production: the stream ``<prefix>events:dl:{<group>}``)."""
        if not isinstance(reason, str):
            raise _core.InvalidType("reason must be a str")
        self._engine._core.events_dead_letter(group, event._native(), reason)

    def list_dead_letters(self, group: str, limit: int = 100) -> list[EventDeadLetter]:
        """The group's dead letters, oldest first."""
        out = []
        for t in self._engine._core.events_list_dead_letters(group, _check_int("limit", limit, 1, 10_000)):
            id_, grp, event_id, type_, reason, raw, at_us = t
            out.append(EventDeadLetter(id_, grp, event_id, type_, reason, json.loads(raw), at_us))
        return out

    def stats(self) -> dict[str, Any]:
        """``relayed`` (this engine's relay), ``outbox_rows`` / ``outbox_oldest_age_ms``
        (production's backlog), ``written`` (embedded: the log's last sequence), ``relay_active``."""
        return dict(self._engine._core.events_stats())

    def prune(
        self,
        *,
        retention_s: float = 7 * 86_400,
        hard_cap_s: Optional[float] = None,
        chunk_rows: int = 1000,
        chunks_max: Optional[int] = None,
    ) -> dict[str, Any]:
        """Retention of the embedded log (docs/events.md, "Retention"): deletes the events older
        than ``retention_s`` that every group reading their type has acknowledged, and, with
        ``hard_cap_s``, every event older than that. Returns ``deleted``,
        ``deleted_unacknowledged``, ``chunks``, ``more``, ``supported`` (False: production)."""
        from ._retention import prune

        return prune(
            self._engine, retention_s=retention_s, hard_cap_s=hard_cap_s, chunk_rows=chunk_rows, chunks_max=chunks_max
        )
