"""Bulk grants: a coupon campaign or points to a list of users, up to millions.

Entry points::

    grant_coupons(engine, campaign_id, users, *, job_key, ...) -> BulkResult
    grant_points(engine, rows, *, job_key, reason, ...)        -> BulkResult
    read_csv(path, column=...), read_parquet(path, column=...), read_sql(dsn, query)   sources
    status(engine, job_key) -> BulkResult | None                 a job's checkpoint, read only
    RateLimiter                                                 the rows-per-second token bucket

The design, in short (docs/bulk.md says it at length):

- **Streamed.** A source is read once, row by row (a CSV file, Parquet record batches, a
  PostgreSQL server-side cursor), ``chunk_size`` rows at a time: millions of users never sit in
  memory at once.
- **Idempotent per user.** A coupon is asked for with the request id ``bulk:<job_key>`` (per
  user: the gate remembers its answer), points are earned with the idempotency key
  ``bulk:<job_key>:<user>``. After each chunk a checkpoint (rows done, counts) is committed to
  the store's table ``bulk_jobs`` (PostgreSQL in production, the SQLite file embedded). A run
  killed at any point and started again with the same ``job_key`` skips the chunks done, and
  for the one chunk that was in flight looks the users up in the store (the coupons carrying
  the job's request id) before asking the gate again. So nobody is granted twice, even once
  the gate has forgotten the request-id answers (``answer_ttl_s``, 24 h by default) and for a
  campaign whose per-user limit is above 1.
- **Paced.** ``rows_per_s`` caps the rows sent to the gate or the wallets (a token bucket); in
  production a coupon run also waits while the campaign's grant log holds more than
  ``backlog_entries_max`` entries, so a bulk run cannot build a backlog the writers cannot
  keep up with.
- **Per-row errors.** A bad row (empty, too long or invalid user id, a bad amount) is reported
  as a :class:`BadRow` and skipped; rows the campaign refuses (sold out, ended) are counted in
  ``refused``, never raised mid-way.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import random
import re
import threading
import time
from collections.abc import Iterable, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from . import _core
from ._bulk_sources import Source, _check_int, _check_number, read_csv, read_parquet, read_sql
from ._bulk_store import RETRIES_MAX, BadRow, _open_store, _State, _Store
from ._types import Partner, TimeLike, to_us

__all__ = [
    "BadRow",
    "BulkResult",
    "RateLimiter",
    "Source",
    "grant_coupons",
    "grant_points",
    "read_csv",
    "read_parquet",
    "read_sql",
    "status",
]

JOB_KEY_BYTES_MAX = 100  # "bulk:" + key must fit a request id (128 bytes)
CHUNK_SIZE_MAX = 100_000  # one issue_many call at most (docs/limits.md)
BAD_VALUE_CHARS_MAX = 200  # a bad row's value is cut to this many characters
AMOUNT_MAX = 10**12  # points in one earn
ROWS_PER_S_MAX = 10_000_000
CONCURRENCY_MAX = 256
BACKLOG_POLL_S = 0.05
GATE_CALL_GRANTS_MAX = 2048  # grants in one gate call, hence in one grant-log entry

_ID_RE = re.compile(r"[A-Za-z0-9\-_.:@+=/]{1,128}")
_ID_BYTES_MAX = 128

ProgressFn = Callable[[int, Optional[int]], None]


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class BulkResult:
    """What a bulk grant did, over every run of its ``job_key``.

    ``granted``: rows whose user got the job's coupon / points (also those granted by an earlier,
    interrupted run of the same job and found again on resume). ``already_granted``: the user
    had reached the campaign's per-user limit before (``ALREADY_ISSUED``), or (points) was listed
    again with the same amount. ``refused``: rows the campaign refused, by reason in
    ``refused_reasons`` ("sold_out", "ended"). ``bad_rows``: the first 10,000 bad rows (all of
    them are counted in ``bad_row_count``). ``resumed_from``: rows done by earlier runs when this
    run started (0: a fresh start). ``rows == granted + already_granted + refused + bad_row_count``.
    """

    job_key: str
    kind: str  # "coupons" or "points"
    granted: int
    already_granted: int
    refused: int
    refused_reasons: dict[str, int]
    bad_rows: list[BadRow]
    bad_row_count: int
    rows: int
    chunks: int
    resumed_from: int
    done: bool
    limiter_sleeps: int = 0  # times this run's rate cap made it wait
    limiter_sleep_s: float = 0.0
    backlog_waits: int = 0  # times this run waited for the writers (production coupons)


# ---------------------------------------------------------------------------------------------
# Rate limit


class RateLimiter:
    """A token bucket of ``rows_per_s`` rows a second, holding at most ``burst_rows`` (default:
    a tenth of a second's worth, at least 1). ``acquire(n)`` takes ``n`` tokens, going into debt
    if needed, and sleeps until the debt is paid: over any stretch longer than a burst, no more
    than ``rows_per_s`` rows pass. Thread-safe."""

    def __init__(
        self,
        rows_per_s: float,
        burst_rows: Optional[float] = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _check_number("rows_per_s", rows_per_s, 0.001, ROWS_PER_S_MAX)
        self.rows_per_s = float(rows_per_s)
        self.burst_rows = float(burst_rows) if burst_rows is not None else max(1.0, self.rows_per_s / 10)
        _check_number("burst_rows", self.burst_rows, 1, ROWS_PER_S_MAX)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst_rows
        self._at = clock()
        self._lock = threading.Lock()
        self.sleeps = 0
        self.slept_s = 0.0
        self.rows = 0

    def acquire(self, n: int) -> float:
        """Take ``n`` row tokens; returns the seconds slept (0.0 if the bucket had them)."""
        assert n >= 0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst_rows, self._tokens + (now - self._at) * self.rows_per_s)
            self._at = now
            self._tokens -= n
            self.rows += n
            wait_s = -self._tokens / self.rows_per_s if self._tokens < 0 else 0.0
            if wait_s > 0:
                self.sleeps += 1
                self.slept_s += wait_s
        if wait_s > 0:
            self._sleep(wait_s)  # the debt is paid by the time we wake: the refill accounts for it
        return wait_s


# ---------------------------------------------------------------------------------------------
# Checks


def _check_job_key(job_key: Any) -> str:
    if not isinstance(job_key, str):
        raise _core.InvalidType(f"job_key must be a str, got {type(job_key).__name__}")
    if not job_key.isascii() or len(job_key) > JOB_KEY_BYTES_MAX or not _ID_RE.fullmatch(job_key):
        raise _core.InvalidArgument(
            f"job_key must be 1..{JOB_KEY_BYTES_MAX} bytes of A-Z a-z 0-9 - _ . : @ + = /, got {job_key[:40]!r}"
        )
    return job_key


def _user_error(user: Any) -> Optional[str]:
    """Why ``user`` is not a valid user id, or None."""
    if not isinstance(user, str):
        return f"user id must be a str, got {type(user).__name__}"
    if not user:
        return "empty user id"
    if not user.isascii():
        return "user id has characters outside A-Z a-z 0-9 - _ . : @ + = /"
    if len(user) > _ID_BYTES_MAX:
        return f"user id longer than {_ID_BYTES_MAX} bytes"
    if not _ID_RE.fullmatch(user):
        return "user id has characters outside A-Z a-z 0-9 - _ . : @ + = /"
    return None


def _amount_or_error(amount: Any) -> tuple[int, Optional[str]]:
    if isinstance(amount, str):
        s = amount.strip()
        if not s.isascii() or not s.isdigit():
            return 0, f"amount must be a whole number of points, got {amount[:40]!r}"
        if len(s) > 13:
            return 0, f"amount must be 1..{AMOUNT_MAX:,}"
        amount = int(s)
    elif isinstance(amount, float) and amount.is_integer():
        amount = int(amount)  # Parquet / pandas turn integer columns with nulls into floats
    if isinstance(amount, bool) or not isinstance(amount, int):
        return 0, f"amount must be an int, got {type(amount).__name__}"
    if not 1 <= amount <= AMOUNT_MAX:
        return 0, f"amount must be 1..{AMOUNT_MAX:,}, got {amount}"
    return amount, None


def _shown(v: Any) -> str:
    s = v if isinstance(v, str) else repr(v)
    return s[:BAD_VALUE_CHARS_MAX]


def _points_key(job_key: str, user: str) -> str:
    """The wallet idempotency key of one user's grant: readable when it fits the 128-byte key
    limit, else hashed (also for user ids that look like a hashed key, so two users never share
    a key)."""
    key = f"bulk:{job_key}:{user}"
    if len(key) <= _ID_BYTES_MAX and not user.startswith("h="):
        return key
    return f"bulk:{job_key}:h={hashlib.sha256(user.encode()).hexdigest()[:40]}"


def _total_of(rows: Any) -> Optional[int]:
    total = getattr(rows, "total", None)
    if isinstance(total, int):
        return total
    if isinstance(rows, Sized) and not isinstance(rows, (str, bytes)):
        return len(rows)
    return None


def _retrying(fn: Callable[[], Any], sleep: Callable[[float], None]) -> Any:
    for attempt in range(RETRIES_MAX + 1):
        try:
            return fn()
        except _core.Unavailable:
            if attempt == RETRIES_MAX:
                raise
            sleep(min(5.0, 0.1 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# The run


class _NotOpen(_core.Conflict):
    """The campaign answered NOT_OPEN (paused, or not started): the run stops here."""


class _Run:
    """One run of a job: reads chunks, grants, checkpoints. Shared by coupons and points."""

    def __init__(
        self,
        engine: Any,
        kind: str,
        partner_id: int,
        campaign_id: Optional[int],
        rows: Iterable[Any],
        job_key: str,
        rows_per_s: Union[None, float, RateLimiter],
        chunk_size: int,
        on_progress: Optional[ProgressFn],
        sleep: Callable[[float], None],
    ) -> None:
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Iterable):
            raise _core.InvalidType("users / rows must be an iterable of rows (a list, a generator or a source)")
        if on_progress is not None and not callable(on_progress):
            raise _core.InvalidType("on_progress must be callable")
        self.engine, self.kind, self.partner_id, self.campaign_id = engine, kind, partner_id, campaign_id
        self.rows, self.job_key = rows, _check_job_key(job_key)
        self.chunk_size = _check_int("chunk_size", chunk_size, 1, CHUNK_SIZE_MAX)
        self.on_progress, self.sleep = on_progress, sleep
        self.limiter: Optional[RateLimiter] = None
        if isinstance(rows_per_s, RateLimiter):
            self.limiter = rows_per_s  # shared with other runs, or with its own clock (tests)
        elif rows_per_s is not None:
            self.limiter = RateLimiter(rows_per_s, sleep=sleep)
        # A capped run sends sub-batches of about a tenth of a second's rows, so the pace is even.
        self.batch_rows = chunk_size
        if self.limiter is not None:
            self.batch_rows = max(1, min(chunk_size, int(self.limiter.rows_per_s // 10)))
        self.total = _total_of(rows)
        # A shared limiter has counted other runs' sleeps: report this run's.
        self.sleeps_before = (self.limiter.sleeps, self.limiter.slept_s) if self.limiter else (0, 0.0)
        self.backlog_waits = 0
        self.new_bad: list[BadRow] = []

    def charge(self, n: int) -> None:
        if self.limiter is not None and n > 0:
            self.limiter.acquire(n)

    def run(self, grant_chunk: Callable[[_State, list[tuple[int, Any]], bool], None]) -> BulkResult:
        store = _open_store(self.engine)
        try:
            store.lock(self.job_key)
            try:
                return self._run(store, grant_chunk)
            finally:
                store.unlock()
        finally:
            if store.kind != "memory":
                store.close()

    def _run(self, store: _Store, grant_chunk: Callable[[_State, list[tuple[int, Any]], bool], None]) -> BulkResult:
        self.store = store
        st = store.load(self.job_key)
        fresh = st is None
        if st is None:
            st = _State(self.kind, self.partner_id, self.campaign_id)
            store.save(self.job_key, st, [], insert=True)
        elif (st.kind, st.partner_id, st.campaign_id) != (self.kind, self.partner_id, self.campaign_id):
            raise _core.Conflict(
                f"job_key {self.job_key!r} belongs to another bulk grant ({st.kind}, partner {st.partner_id},"
                f" campaign {st.campaign_id}): use a new job_key"
            )
        resumed_from = st.rows_done
        if st.state != "done":
            it = iter(self.rows)
            skipped = sum(1 for _ in itertools.islice(it, resumed_from))
            if skipped < resumed_from:
                raise _core.Conflict(
                    f"job {self.job_key!r} had done {resumed_from:,} rows but its source now has {skipped:,}:"
                    " a resumed job needs the same rows in the same order"
                )
            row_no = resumed_from
            first = not fresh  # an earlier run may have died with the next chunk in flight
            while True:
                chunk = list(
                    zip(range(row_no + 1, row_no + self.chunk_size + 1), itertools.islice(it, self.chunk_size))
                )
                if not chunk:
                    break
                self.new_bad = []
                before = _State(**{**st.__dict__, "refused_reasons": dict(st.refused_reasons)})
                try:
                    grant_chunk(st, chunk, first)
                except _NotOpen:
                    # The checkpoint stays before this chunk; the rows asked since get a new
                    # request id next time (the gate would repeat NOT_OPEN for the old one).
                    before.generation += 1
                    store.save(self.job_key, before, [])
                    raise
                first = False
                row_no += len(chunk)
                st.rows_done = row_no
                st.chunks_done += 1
                st.bad_rows += len(self.new_bad)
                store.save(self.job_key, st, self.new_bad)
                if self.on_progress is not None:
                    self.on_progress(st.rows_done, self.total)
            st.state = "done"
            store.save(self.job_key, st, [])
        return BulkResult(
            job_key=self.job_key,
            kind=self.kind,
            granted=st.granted,
            already_granted=st.already_granted,
            refused=st.refused,
            refused_reasons=dict(st.refused_reasons),
            bad_rows=store.bad_rows(self.job_key),
            bad_row_count=st.bad_rows,
            rows=st.rows_done,
            chunks=st.chunks_done,
            resumed_from=resumed_from,
            done=True,
            limiter_sleeps=self.limiter.sleeps - self.sleeps_before[0] if self.limiter else 0,
            limiter_sleep_s=self.limiter.slept_s - self.sleeps_before[1] if self.limiter else 0.0,
            backlog_waits=self.backlog_waits,
        )


def status(engine: Any, job_key: str) -> Optional[BulkResult]:
    """What job ``job_key`` has done so far, from its checkpoint (another process may be running
    it): ``done`` False while it is unfinished; None for a job that never started."""
    _scope_and_partner(engine, None)
    _check_job_key(job_key)
    store = _open_store(engine)
    try:
        st = store.load(job_key)
        if st is None:
            return None
        return BulkResult(
            job_key=job_key,
            kind=st.kind,
            granted=st.granted,
            already_granted=st.already_granted,
            refused=st.refused,
            refused_reasons=dict(st.refused_reasons),
            bad_rows=store.bad_rows(job_key),
            bad_row_count=st.bad_rows,
            rows=st.rows_done,
            chunks=st.chunks_done,
            resumed_from=0,
            done=st.state == "done",
        )
    finally:
        if store.kind != "memory":
            store.close()


def _scope_and_partner(engine: Any, partner: Union[None, int, Partner]) -> tuple[Any, int]:
    from ._engine import Engine

    if not isinstance(engine, Engine):
        raise _core.InvalidType(f"engine must be a couponcore Engine, got {type(engine).__name__}")
    if partner is None:
        return engine, 0
    scope = engine.partner(partner)
    return scope, scope.partner_id


def grant_coupons(
    engine: Any,
    campaign_id: int,
    users: Iterable[Any],
    *,
    job_key: str,
    rows_per_s: Union[None, float, RateLimiter] = None,
    chunk_size: int = 1000,
    on_progress: Optional[ProgressFn] = None,
    partner: Union[None, int, Partner] = None,
    backlog_entries_max: int = 32,
    backlog_wait_s: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
) -> BulkResult:
    """Give campaign ``campaign_id``'s coupon to every user in ``users`` (an iterable of user
    ids: a list, a generator, :func:`read_csv`, :func:`read_parquet`, :func:`read_sql`).

    Each user is asked for once with the request id ``bulk:<job_key>``; the campaign's rules
    apply (quantity, per-user limit, window). Rows are sent ``chunk_size`` (1..100,000) at a
    time; after each chunk a checkpoint is committed, then ``on_progress(rows done, total or
    None)`` is called. Running the same ``job_key`` again resumes after the last checkpoint
    without granting anyone twice; a finished job returns its result and grants nothing.

    ``rows_per_s`` caps the rows sent to the gate (each is at most one coupon row written); a
    :class:`RateLimiter` instead of a number shares one cap between runs.
    Production: before each batch, while the campaign's grant log holds more than
    ``backlog_entries_max`` entries (one entry holds up to 2,048 grants), the run waits for the
    writers, at most ``backlog_wait_s`` in a row (then ``Unavailable``: no writer is draining
    the log). Bad user ids are reported in ``bad_rows`` and skipped; sold-out and ended rows
    are counted in ``refused``. A paused or not yet open campaign stops the run with
    ``Conflict`` (run it again once the campaign is open: it resumes).
    """
    scope, partner_id = _scope_and_partner(engine, partner)
    _check_int("campaign_id", campaign_id, 1, 2**31 - 1)
    _check_int("backlog_entries_max", backlog_entries_max, 1, 1_000_000)
    _check_number("backlog_wait_s", backlog_wait_s, 0, 86_400)
    campaign = scope.campaigns.get(campaign_id)  # NotFound for an unknown or another partner's
    run = _Run(engine, "coupons", partner_id, campaign_id, users, job_key, rows_per_s, chunk_size, on_progress, sleep)

    def request_id(generation: int) -> str:
        return f"bulk:{run.job_key}" if generation == 0 else f"bulk:{run.job_key}:g{generation}"

    production = engine.kind == "production"
    # The campaign's log entries at the last look, and the entries this run has added since (an
    # upper bound of the backlog as far as this run is concerned: writers only take entries away).
    # The log is read only when the bound could be passed: not once per batch while the writers
    # keep up (log_backlog() reads every campaign's stream).
    backlog = {"seen": 0, "added": 0}

    def wait_for_writers(until_empty: bool, adds: int = 0) -> None:
        """Production: wait while the campaign's grant log holds more than backlog_entries_max
        entries (or, before the store lookup of a resumed chunk, until it is empty)."""
        if not until_empty and backlog["seen"] + backlog["added"] + adds <= backlog_entries_max:
            backlog["added"] += adds
            return
        limit = 0 if until_empty else backlog_entries_max
        deadline = time.monotonic() + backlog_wait_s
        waited = False
        while True:
            b = next((b for b in engine.log_backlog() if b.campaign_id == campaign_id), None)
            entries, pending = (b.entries, b.pending) if b is not None else (0, 0)
            backlog["seen"], backlog["added"] = entries, 0
            if entries <= limit and (not until_empty or pending == 0):
                backlog["added"] = adds
                return
            if time.monotonic() >= deadline:
                raise _core.Unavailable(
                    f"campaign {campaign_id}'s grant log holds {entries:,} entries ({pending:,} pending) after"
                    f" waiting {backlog_wait_s:g} s: are the writers running? The bulk grant stops here; run it again"
                )
            if not waited:
                run.backlog_waits += 1
                waited = True
            sleep(BACKLOG_POLL_S)

    def grant_chunk(st: _State, chunk: list[tuple[int, Any]], resumed: bool) -> None:
        good: list[str] = []
        seen: set[str] = set()
        for row, user in chunk:
            err = _user_error(user)
            if err is not None:
                run.new_bad.append(BadRow(row, _shown(user), err))
            elif user in seen:
                st.already_granted += 1  # listed twice in one chunk: asked once
            else:
                seen.add(user)
                good.append(user)
        if resumed and good:
            # The interrupted run may have been granted these before it died: look them up in
            # the store (after the writers have put the log there, where the per-user limit
            # lets the gate grant again: once its remembered answers are gone, only the store
            # knows).
            if production and campaign.per_user_limit > 1:
                wait_for_writers(until_empty=True)
            ids = [request_id(g) for g in range(st.generation + 1)]
            found = run.store.users_with_coupon(campaign_id, ids, good)
            # Seqs above the checkpoint's highest were granted by the interrupted run; others
            # belong to an earlier row of the same user.
            since = [q for q in found.values() if q > st.max_id]
            st.granted += len(since)
            st.already_granted += len(found) - len(since)
            st.max_id = max([st.max_id, *since])
            good = [u for u in good if u not in found]
        sold_out = False
        for i in range(0, len(good), run.batch_rows):
            batch = good[i : i + run.batch_rows]
            if not sold_out:
                run.charge(len(batch))  # a sold-out campaign answers from memory: no writes to pace
            if production:
                wait_for_writers(until_empty=False, adds=-(-len(batch) // GATE_CALL_GRANTS_MAX))
            ask = functools.partial(scope.issue_many, campaign_id, batch, [request_id(st.generation)] * len(batch))
            answers = _retrying(ask, sleep)
            issued = 0
            seq_before = st.max_id
            for a in answers:
                s = a.status
                if s == "ISSUED":
                    if a.seq is not None and a.seq <= seq_before:
                        st.already_granted += 1  # the answer to this user's earlier row
                        continue
                    issued += 1
                    st.max_id = max(st.max_id, a.seq or 0)
                elif s == "ALREADY_ISSUED":
                    st.already_granted += 1
                elif s in ("SOLD_OUT", "ENDED"):
                    reason = "sold_out" if s == "SOLD_OUT" else "ended"
                    st.refused += 1
                    st.refused_reasons[reason] = st.refused_reasons.get(reason, 0) + 1
                else:
                    assert s == "NOT_OPEN", s
                    raise _NotOpen(
                        f"campaign {campaign_id} is not open (paused, or not started): the bulk grant stopped"
                        f" after row {st.rows_done:,}; run it again with job_key {run.job_key!r} once it is open"
                    )
            st.granted += issued
            sold_out = issued == 0 and st.refused_reasons.get("sold_out", 0) > 0

    return run.run(grant_chunk)


def grant_points(
    engine: Any,
    rows: Iterable[Any],
    *,
    job_key: str,
    reason: str,
    rows_per_s: Union[None, float, RateLimiter] = None,
    chunk_size: int = 1000,
    on_progress: Optional[ProgressFn] = None,
    partner: Union[None, int, Partner] = None,
    expires_at: Optional[TimeLike] = None,
    concurrency: int = 128,
    sleep: Callable[[float], None] = time.sleep,
) -> BulkResult:
    """Earn points for every ``(user id, amount)`` row of ``rows`` (pairs; amounts are ints or
    decimal strings, 1..10^12), with ``reason`` and, optionally, one absolute ``expires_at`` for
    every lot (an absolute time: a resumed run must earn exactly what the first one did).

    Each user's earn carries the idempotency key ``bulk:<job_key>:<user>``: a resumed run gets
    the first result back instead of earning again, and a user listed twice with the same amount
    is earned once (``already_granted``); listed again with another amount, the later row is a
    bad row. ``concurrency`` (1..256) earns run at once, so the wallet engine batches them into
    few transactions (128 at once earned ~4x as fast as 32 here). Chunks, checkpoints,
    ``rows_per_s`` and ``on_progress`` are as in :func:`grant_coupons`.
    """
    scope, partner_id = _scope_and_partner(engine, partner)
    if not isinstance(reason, str):
        raise _core.InvalidType("reason must be a str")
    _check_int("concurrency", concurrency, 1, CONCURRENCY_MAX)
    expires_us = to_us(expires_at, "expires_at")
    points = scope.points
    run = _Run(engine, "points", partner_id, None, rows, job_key, rows_per_s, chunk_size, on_progress, sleep)
    if not run.limiter:
        run.batch_rows = chunk_size
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="couponcore-bulk")

    def earn(user: str, amount: int) -> Any:
        op = {
            "kind": "earn",
            "user_id": user,
            "amount": amount,
            "expires_at_us": expires_us,
            "reason": reason,
            "idempotency_key": _points_key(run.job_key, user),
        }
        return _retrying(lambda: points._apply(op), sleep)

    def grant_chunk(st: _State, chunk: list[tuple[int, Any]], resumed: bool) -> None:
        good: list[tuple[int, str, int]] = []
        seen: dict[str, int] = {}
        for row, value in chunk:
            if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or len(value) != 2:
                run.new_bad.append(BadRow(row, _shown(value), "a row must be a (user id, amount) pair"))
                continue
            user, raw = value
            err = _user_error(user)
            amount, aerr = _amount_or_error(raw)
            if err is not None or aerr is not None:
                run.new_bad.append(BadRow(row, _shown(user if err else raw), err or aerr or ""))
            elif user in seen:
                if seen[user] == amount:
                    st.already_granted += 1
                else:
                    run.new_bad.append(BadRow(row, _shown(raw), "user listed again with another amount"))
            else:
                seen[user] = amount
                good.append((row, user, amount))
        if resumed and good:
            # The interrupted run may have earned these before it died: their keys are in the
            # store (the key is written in the earn's own transaction).
            # Keys written before the last checkpoint belong to earlier rows (the user is listed
            # again): those rows are sent, and answered as replays.
            taken = run.store.keys_taken(partner_id, [_points_key(run.job_key, u) for _, u, _ in good])
            since = {k for k, at_us in taken.items() if at_us > st.checkpoint_at_us}
            st.granted += sum(1 for _, u, _ in good if _points_key(run.job_key, u) in since)
            good = [g for g in good if _points_key(run.job_key, g[1]) not in since]
        for i in range(0, len(good), run.batch_rows):
            batch = good[i : i + run.batch_rows]
            run.charge(len(batch))
            futures = [pool.submit(earn, user, amount) for _, user, amount in batch]
            for (row, user, _amount), f in zip(batch, futures):
                try:
                    res = f.result()
                except (_core.InvalidArgument, _core.Conflict) as e:
                    # Conflict: the key is taken with another amount (an earlier chunk listed this
                    # user with another amount), or the wallet's lot limit.
                    msg = str(e)
                    if isinstance(e, _core.Conflict) and "idempotency key" in msg:
                        msg = f"user listed again with another amount ({msg})"
                    run.new_bad.append(BadRow(row, _shown(user), msg))
                    continue
                if res.replayed:
                    st.already_granted += 1  # listed in an earlier chunk with the same amount
                else:
                    st.granted += 1

    try:
        return run.run(grant_chunk)
    finally:
        pool.shutdown(wait=True)
