"""The job functions, written once: plain functions of an engine, a context and keyword arguments.

Every deployment runs these same functions: the production worker (``couponcore jobs worker``),
the embedded in-process runner, ``couponcore jobs run NAME`` and ``engine.jobs.run(NAME)``. Each
returns a JSON-able dict whose ``rows`` is the number of rows it changed (the ``job_rows_total``
metric). A long job reports progress through ``ctx.progress(done, total)`` and stops between
chunks when ``ctx.check_cancelled()`` says an operator cancelled it.

Arguments are checked by :func:`check_args` before a job is queued: an unknown argument or a
value of the wrong type is ``InvalidArgument`` / ``InvalidType`` and nothing is queued.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol

from .. import _core

if TYPE_CHECKING:
    from .._engine import Engine

_LOOPS_MAX = 100_000  # calls of a chunked core job in one run (each does up to chunks_max chunks)
_PARTNER_PAGE = 1_000
_RECONCILE_ENDED_WITHIN_S = 86_400  # an ended campaign is reconciled for one more day


class Context(Protocol):
    def progress(self, done: int, total: Optional[int] = None) -> None: ...
    def check_cancelled(self) -> None: ...
    def log(self, message: str) -> None: ...


def expire_coupons(engine: Engine, ctx: Context, *, chunk_rows: int = 1000, chunks_max: int = 1000) -> dict[str, Any]:
    """Mark coupons whose validity has passed as expired (every partner), in short transactions."""
    expired = chunks = 0
    for _ in range(_LOOPS_MAX):
        ctx.check_cancelled()
        r = engine.expire_coupons(chunk_rows=chunk_rows, chunks_max=chunks_max)
        expired += r.expired
        chunks += r.chunks
        ctx.progress(expired)
        if not r.more:
            break
    return {"rows": expired, "expired": expired, "chunks": chunks}


def expire_points(engine: Engine, ctx: Context, *, chunk_wallets: int = 1000) -> dict[str, Any]:
    """Write off every points lot past its date (every partner)."""
    ctx.check_cancelled()
    r = dict(engine.points.expire(chunk_wallets=chunk_wallets))
    rows = int(r.get("lots_expired", r.get("lots", r.get("expired", 0))))
    ctx.progress(rows)
    return {"rows": rows, **r}


def purge_idempotency(
    engine: Engine,
    ctx: Context,
    *,
    older_than_days: float = 30.0,
    include_checkouts: bool = False,
    chunk_rows: int = 1000,
) -> dict[str, Any]:
    """Retention of the wallets' idempotency records: delete those older than ``older_than_days``."""
    before = time.time() - older_than_days * 86_400
    deleted = chunks = 0
    for _ in range(_LOOPS_MAX):
        ctx.check_cancelled()
        r = engine.points.purge_idempotency(
            before, include_checkouts=include_checkouts, chunk_rows=chunk_rows, chunks_max=1000
        )
        deleted += int(r["deleted"])
        chunks += int(r["chunks"])
        ctx.progress(deleted)
        if r["done"]:
            break
    return {"rows": deleted, "deleted": deleted, "chunks": chunks}


def _active_campaigns(engine: Engine) -> list[int]:
    """Ids of every partner's campaigns that are not closed, or ended less than a day ago."""
    now = _dt.datetime.now(_dt.timezone.utc)
    scopes: list[Any] = [engine]
    after = 0
    while True:
        page = engine.partners.list(after=after, limit=_PARTNER_PAGE)
        scopes.extend(engine.partner(p) for p in page)
        if len(page) < _PARTNER_PAGE:
            break
        after = page[-1].id
    ids = []
    for scope in scopes:
        for c in scope.campaigns.list():
            if c.state == "closed":
                continue
            if c.ends_at is not None and (now - c.ends_at).total_seconds() > _RECONCILE_ENDED_WITHIN_S:
                continue
            ids.append(c.id)
    return sorted(set(ids))


def reconcile(engine: Engine, ctx: Context, *, campaign_id: Optional[int] = None) -> dict[str, Any]:
    """Reconcile every active campaign (or one): compare the gate with the store, re-drive grants
    that are in the grant log but missing from the store."""
    ids = [campaign_id] if campaign_id is not None else _active_campaigns(engine)
    redriven = 0
    drift = []
    for n, cid in enumerate(ids):
        ctx.check_cancelled()
        r = engine.reconcile(cid)
        fixed = int(r.get("redriven", 0) or 0)
        redriven += fixed
        if not r.get("consistent", True):
            drift.append(cid)
        ctx.progress(n + 1, len(ids))
    return {"rows": redriven, "campaigns": len(ids), "redriven": redriven, "drift": drift}


def redrive_dead_letters(engine: Engine, ctx: Context, *, campaign_id: Optional[int] = None) -> dict[str, Any]:
    """Re-drive the grant log's dead letters (every campaign, or one) back to the writers."""
    dead_letters = getattr(engine, "dead_letters", None)
    if dead_letters is None:
        raise _core.Unavailable("this couponcore has no dead-letter API (engine.dead_letters)")
    ctx.check_cancelled()
    n = int(dead_letters.redrive_all(campaign_id))
    ctx.progress(n, n)
    return {"rows": n, "redriven": n}


def prune_events(
    engine: Engine,
    ctx: Context,
    *,
    retention_days: float = 7.0,
    hard_cap_days: Optional[float] = None,
    chunk_rows: int = 1000,
) -> dict[str, Any]:
    """Retention of the embedded event log (docs/events.md): delete the events older than
    ``retention_days`` that every consumer group reading their type has acknowledged, and, with
    ``hard_cap_days``, every event older than that. Production has no log to prune (a no-op)."""
    deleted = unacked = chunks = 0
    supported = True
    for _ in range(_LOOPS_MAX):
        ctx.check_cancelled()
        r = engine.events.prune(
            retention_s=retention_days * 86_400,
            hard_cap_s=None if hard_cap_days is None else hard_cap_days * 86_400,
            chunk_rows=chunk_rows,
            chunks_max=100,
        )
        deleted += r["deleted"]
        unacked += r["deleted_unacknowledged"]
        chunks += r["chunks"]
        supported = r["supported"]
        ctx.progress(deleted)
        if not r["more"]:
            break
    return {
        "rows": deleted,
        "deleted": deleted,
        "deleted_unacknowledged": unacked,
        "chunks": chunks,
        "supported": supported,
    }


_SOURCES = ("csv", "parquet", "sql")


def bulk_grant(
    engine: Engine,
    ctx: Context,
    *,
    job_key: str,
    kind: str = "coupons",
    source: str = "csv",
    path: Optional[str] = None,
    column: str = "user_id",
    amount_column: Optional[str] = None,
    dsn: Optional[str] = None,
    query: Optional[str] = None,
    campaign_id: Optional[int] = None,
    reason: Optional[str] = None,
    expires_at: Optional[float] = None,
    partner: Optional[int] = None,
    rows_per_s: Optional[float] = None,
    chunk_size: int = 1000,
) -> dict[str, Any]:
    """A coupon (``kind="coupons"``, ``campaign_id``) or points (``kind="points"``, ``reason``,
    rows of user id and amount) to every user of a CSV / Parquet file or a SQL query, through
    ``couponcore.bulk``: chunked, capped at ``rows_per_s``, idempotent per user and resumable by
    ``job_key`` (a re-run or a retry after a crash continues where the last checkpoint was)."""
    from .. import bulk

    if source == "csv":
        if path is None:
            raise _core.InvalidArgument("bulk_grant from a CSV file needs path")
        users: Any = bulk.read_csv(path, column, amount_column=amount_column)
    elif source == "parquet":
        if path is None:
            raise _core.InvalidArgument("bulk_grant from a Parquet file needs path")
        users = bulk.read_parquet(path, column, amount_column=amount_column)
    else:
        if dsn is None or query is None:
            raise _core.InvalidArgument("bulk_grant from SQL needs dsn and query")
        users = bulk.read_sql(dsn, query)

    def on_progress(done: int, total: Optional[int]) -> None:
        ctx.check_cancelled()  # a cancel stops the run after the chunk in hand (it is checkpointed)
        ctx.progress(done, total)

    common: dict[str, Any] = {
        "job_key": job_key,
        "rows_per_s": rows_per_s,
        "chunk_size": chunk_size,
        "on_progress": on_progress,
        "partner": partner,
    }
    if kind == "coupons":
        if campaign_id is None:
            raise _core.InvalidArgument("bulk_grant of coupons needs campaign_id")
        r = bulk.grant_coupons(engine, campaign_id, users, **common)
    else:
        if not reason:
            raise _core.InvalidArgument("bulk_grant of points needs reason")
        r = bulk.grant_points(engine, users, reason=reason, expires_at=expires_at, **common)
    bad = [{"row": b.row, "value": b.value, "error": b.error} for b in r.bad_rows[:100]]
    return {
        "rows": r.granted,  # rows changed (couponcore_job_rows_total); "processed": every row read
        "processed": r.rows,
        "granted": r.granted,
        "already_granted": r.already_granted,
        "refused": r.refused,
        "bad_rows": r.bad_row_count,  # r.bad_rows keeps only the first ones
        "bad_rows_first": bad,
        "chunks": r.chunks,
        "resumed_from": r.resumed_from,
    }


FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "expire_coupons": expire_coupons,
    "expire_points": expire_points,
    "purge_idempotency": purge_idempotency,
    "reconcile": reconcile,
    "redrive_dead_letters": redrive_dead_letters,
    "bulk_grant": bulk_grant,
    "prune_events": prune_events,
}

# Argument checks that go beyond the signature: (allowed values) or (type, min, max).
_CHOICES = {("bulk_grant", "kind"): ("coupons", "points"), ("bulk_grant", "source"): _SOURCES}
_RANGES: dict[str, tuple[float, float]] = {
    "chunk_rows": (1, 10_000),
    "chunks_max": (1, 1_000_000),
    "chunk_wallets": (1, 100_000),
    "older_than_days": (0, 36_500),
    "retention_days": (0, 36_500),
    "hard_cap_days": (0.001, 36_500),
    "campaign_id": (1, 2**63 - 1),
    "partner": (0, 2**63 - 1),
    "rows_per_s": (0.001, 10_000_000),
    "chunk_size": (1, 100_000),
    "expires_at": (0, 2**40),
}
_STR_MAX = 4_096


def _expected_type(annotation: str) -> tuple[type, ...]:
    if "bool" in annotation:
        return (bool,)
    if "float" in annotation:
        return (int, float)
    if "int" in annotation:
        return (int,)
    return (str,)


def check_args(name: str, args: dict[str, Any], complete: bool = True) -> dict[str, Any]:
    """The job's keyword arguments, checked against its function: unknown names, wrong types and
    out-of-range values are refused before anything is queued. ``complete``: every required
    argument must be there (a configuration's args of an unscheduled job may be partial)."""
    fn = FUNCTIONS[name]
    params = {p.name: p for p in list(inspect.signature(fn).parameters.values())[2:]}
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key == "timestamp":  # the scheduler's firing time, passed to periodic runs
            continue
        p = params.get(key)
        if p is None:
            raise _core.InvalidArgument(f"{name}: unknown argument {key!r} (arguments: {', '.join(params) or 'none'})")
        ann = str(p.annotation)
        if value is None:
            if "Optional" not in ann:
                raise _core.InvalidArgument(f"{name}: {key} cannot be null")
            out[key] = None
            continue
        types = _expected_type(ann)
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise _core.InvalidType(f"{name}: {key} must be {' or '.join(t.__name__ for t in types)}, got {value!r}")
        if isinstance(value, str) and len(value) > _STR_MAX:
            raise _core.InvalidArgument(f"{name}: {key} is longer than {_STR_MAX} characters")
        choices = _CHOICES.get((name, key))
        if choices is not None and value not in choices:
            raise _core.InvalidArgument(f"{name}: {key} must be one of {', '.join(choices)}, got {value!r}")
        bounds = _RANGES.get(key)
        if bounds is not None and isinstance(value, (int, float)) and not bounds[0] <= value <= bounds[1]:
            raise _core.InvalidArgument(f"{name}: {key} must be within {bounds[0]:g}..{bounds[1]:g}, got {value}")
        out[key] = value
    for key, p in params.items():
        if complete and p.default is inspect.Parameter.empty and key not in out:
            raise _core.InvalidArgument(f"{name}: argument {key!r} is required")
    return out
