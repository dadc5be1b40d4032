"""Retention of the embedded event log (``engine.events.prune``, the ``prune_events`` job and
``couponcore events prune``; docs/events.md, "Retention").

The SQLite table ``events`` is the embedded deployment's log: it keeps every event until pruned.
An event is deleted once it is older than ``retention_s`` and every consumer group that reads its
type has acknowledged it; events of a type no group has read yet are kept. ``hard_cap_s`` (off by
default) bounds the log whatever the groups: older events go even unacknowledged, with the groups'
pending entries for them. Production keeps no log to prune (its type streams are capped by
``events_stream_maxlen``): the answer says ``supported: False``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from .. import _core

if TYPE_CHECKING:
    from .._engine import Engine

SECONDS_MAX = 100 * 365 * 86_400


def _seconds(name: str, value: Any) -> int:
    """``value`` seconds as milliseconds, checked."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _core.InvalidType(f"{name} must be a number of seconds")
    if not 0 <= value <= SECONDS_MAX:
        raise _core.InvalidArgument(f"{name} must be 0..{SECONDS_MAX} seconds, got {value}")
    return int(round(value * 1000))


def prune(
    engine: Engine,
    *,
    retention_s: float,
    hard_cap_s: Optional[float] = None,
    chunk_rows: int = 1000,
    chunks_max: Optional[int] = None,
) -> dict[str, Any]:
    """Deletes what the retention allows, in transactions of up to ``chunk_rows`` events; at most
    ``chunks_max`` of them (None: until done; ``more`` says whether anything is left)."""
    retention_ms = _seconds("retention_s", retention_s)
    hard_cap_ms = 0 if hard_cap_s is None else _seconds("hard_cap_s", hard_cap_s)
    if hard_cap_s is not None and hard_cap_ms < max(retention_ms, 1):
        raise _core.InvalidArgument("hard_cap_s must be more than 0 and at least retention_s")
    for name, value in (("chunk_rows", chunk_rows), ("chunks_max", chunks_max or 1)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _core.InvalidType(f"{name} must be an int")
    if not 1 <= chunk_rows <= 100_000:
        raise _core.InvalidArgument(f"chunk_rows must be 1..100000, got {chunk_rows}")
    if chunks_max is not None and chunks_max < 1:
        raise _core.InvalidArgument(f"chunks_max must be at least 1, got {chunks_max}")
    total = {"deleted": 0, "deleted_unacknowledged": 0, "chunks": 0, "more": False, "supported": True}
    while True:
        step = chunks_max - total["chunks"] if chunks_max is not None else 1_000
        r = engine._core.events_prune(retention_ms, hard_cap_ms, chunk_rows, step)
        for key in ("deleted", "deleted_unacknowledged", "chunks"):
            total[key] += int(r[key])
        total["supported"] = bool(r["supported"])
        total["more"] = bool(r["more"])
        if not total["more"] or (chunks_max is not None and total["chunks"] >= chunks_max):
            return total
