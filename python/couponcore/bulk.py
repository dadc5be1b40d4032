"""Bulk grants: a coupon campaign or points to a list of users, up to millions.

Entry points::

    grant_coupons(engine, campaign_id, users, *, job_key, ...) -> BulkResult
    grant_points(engine, rows, *, job_key, reason, ...)        -> BulkResult
    read_csv(path, column=...), read_parquet(path, column=...), read_sql(dsn, query)   sources
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

import csv
import functools
import hashlib
import importlib
import itertools
import json
import os
import random
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar, Union

from . import _core
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
]

JOB_KEY_BYTES_MAX = 100  # "bulk:" + key must fit a request id (128 bytes)
CHUNK_SIZE_MAX = 100_000  # one issue_many call at most (docs/limits.md)
BAD_ROWS_MAX = 10_000  # bad rows kept per job (all are counted)
BAD_VALUE_CHARS_MAX = 200  # a bad row's value is cut to this many characters
AMOUNT_MAX = 10**12  # points in one earn
ROWS_PER_S_MAX = 10_000_000
CONCURRENCY_MAX = 256
RETRIES_MAX = 5  # a sub-batch answered Unavailable is retried this often, with backoff + jitter
BACKLOG_POLL_S = 0.05
GATE_CALL_GRANTS_MAX = 2048  # grants in one gate call, hence in one grant-log entry

_ID_RE = re.compile(r"[A-Za-z0-9\-_.:@+=/]{1,128}")
_ID_BYTES_MAX = 128

ProgressFn = Callable[[int, Optional[int]], None]
_T = TypeVar("_T")


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class BadRow:
    """A row that was skipped: its 1-based number in the source (data rows: a CSV header is not
    counted), its value as text (cut to 200 characters) and why."""

    row: int
    value: str
    error: str


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
# Sources


class Source:
    """An iterable of rows (a user id, or a ``(user id, amount)`` pair) with ``total``: the
    number of rows if known up front (Parquet), else None. Iterating again reads it again."""

    total: Optional[int] = None

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError


def _check_path(path: Union[str, os.PathLike[str]]) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise _core.InvalidType(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise _core.NotFound(f"no such file: {p!r}")
    return p


def _check_column(name: str, value: Any, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise _core.InvalidType(f"{name} must be a non-empty str (a column name)")


class _CsvSource(Source):
    def __init__(self, path: str, column: str, amount_column: Optional[str], encoding: str, delimiter: str) -> None:
        self.path, self.column, self.amount_column = path, column, amount_column
        self.encoding, self.delimiter = encoding, delimiter
        self._indexes()  # a missing column is an error now, not at the first chunk

    def _indexes(self) -> tuple[int, Optional[int]]:
        with open(self.path, newline="", encoding=self.encoding) as f:
            header = next(csv.reader(f, delimiter=self.delimiter), None)
        if header is None:
            raise _core.InvalidArgument(f"{self.path!r} is empty: no header row")
        names = [h.strip() for h in header]

        def index(col: str) -> int:
            if col not in names:
                raise _core.InvalidArgument(f"{self.path!r} has no column {col!r} (columns: {names[:20]})")
            return names.index(col)

        return index(self.column), (index(self.amount_column) if self.amount_column is not None else None)

    def __iter__(self) -> Iterator[Any]:
        ui, ai = self._indexes()
        with open(self.path, newline="", encoding=self.encoding) as f:
            reader = csv.reader(f, delimiter=self.delimiter)
            next(reader, None)
            for fields in reader:
                user = fields[ui].strip() if ui < len(fields) else ""
                if ai is None:
                    yield user
                else:
                    yield (user, fields[ai].strip() if ai < len(fields) else "")


def read_csv(
    path: Union[str, os.PathLike[str]],
    column: str = "user_id",
    *,
    amount_column: Optional[str] = None,
    encoding: str = "utf-8",
    delimiter: str = ",",
) -> Source:
    """The user ids in ``column`` of a CSV file with a header row (values stripped of surrounding
    spaces), or ``(user id, amount)`` pairs with ``amount_column`` (for :func:`grant_points`).
    Streamed: the file is read as the grant goes. ``NotFound`` for a missing file,
    ``InvalidArgument`` for a missing column."""
    _check_column("column", column)
    _check_column("amount_column", amount_column, optional=True)
    return _CsvSource(_check_path(path), column, amount_column, encoding, delimiter)


def _cell(v: Any) -> Any:
    # Typed sources (Parquet, SQL) may hold integer user ids; they are written in decimal.
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return v


class _ParquetSource(Source):
    def __init__(self, path: str, column: str, amount_column: Optional[str], batch_rows: int) -> None:
        pq = _parquet_module()
        self.path, self.column, self.amount_column, self.batch_rows = path, column, amount_column, batch_rows
        meta = pq.ParquetFile(path)
        names = meta.schema_arrow.names
        for col in [column] + ([amount_column] if amount_column else []):
            if col not in names:
                raise _core.InvalidArgument(f"{path!r} has no column {col!r} (columns: {names[:20]})")
        self.total = meta.metadata.num_rows

    def __iter__(self) -> Iterator[Any]:
        pq = _parquet_module()
        cols = [self.column] + ([self.amount_column] if self.amount_column else [])
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=self.batch_rows, columns=cols):
            users = batch.column(0).to_pylist()
            if self.amount_column is None:
                yield from (_cell(u) for u in users)
            else:
                yield from ((_cell(u), a) for u, a in zip(users, batch.column(1).to_pylist()))


def _parquet_module() -> Any:
    try:
        pq = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise _core.Unavailable(
            "reading Parquet needs pyarrow (pandas' Parquet engine): pip install 'couponcore[bulk]'"
        ) from None
    return pq


def read_parquet(
    path: Union[str, os.PathLike[str]],
    column: str = "user_id",
    *,
    amount_column: Optional[str] = None,
    batch_rows: int = 10_000,
) -> Source:
    """The user ids in ``column`` of a Parquet file (or ``(user id, amount)`` pairs), read in
    record batches of ``batch_rows``; ``total`` is the file's row count. Needs pyarrow (the
    ``parquet`` extra): ``Unavailable`` if it is not installed."""
    _check_column("column", column)
    _check_column("amount_column", amount_column, optional=True)
    _check_int("batch_rows", batch_rows, 1, 1_000_000)
    return _ParquetSource(_check_path(path), column, amount_column, batch_rows)


class _SqlSource(Source):
    def __init__(self, dsn: str, query: str, params: Any, fetch_rows: int) -> None:
        self.dsn, self.query, self.params, self.fetch_rows = dsn, query, params, fetch_rows

    def __iter__(self) -> Iterator[Any]:
        psycopg = _psycopg()
        with psycopg.connect(self.dsn) as conn:
            # A named cursor is a server-side cursor: rows come fetch_rows at a time.
            with conn.cursor(name="couponcore_bulk_source") as cur:
                cur.itersize = self.fetch_rows
                try:
                    cur.execute(self.query, self.params)
                except psycopg.Error as e:
                    raise _core.InvalidArgument(f"the source query failed: {e}") from None
                for row in cur:
                    if len(row) == 1:
                        yield _cell(row[0])
                    else:
                        yield (_cell(row[0]), row[1])


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise _core.Unavailable("this needs psycopg: pip install 'psycopg[binary]'") from None
    return psycopg


def read_sql(dsn: str, query: str, params: Any = None, *, fetch_rows: int = 5_000) -> Source:
    """The rows of a PostgreSQL query, through a server-side cursor (``fetch_rows`` a round
    trip: the result never sits in memory whole). One column: user ids; two or more: ``(user
    id, amount)`` from the first two. Give the query an ``ORDER BY``: a resumed run skips the
    rows done by counting them, so the order must be the same every time."""
    if not isinstance(dsn, str) or not dsn:
        raise _core.InvalidType("dsn must be a PostgreSQL URL (str)")
    if not isinstance(query, str) or not query.strip():
        raise _core.InvalidType("query must be a non-empty str")
    _check_int("fetch_rows", fetch_rows, 1, 1_000_000)
    return _SqlSource(dsn, query, params, fetch_rows)


# ---------------------------------------------------------------------------------------------
# Checkpoints: the bulk_jobs table in the store


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS bulk_jobs ("
    " job_key text PRIMARY KEY, kind text NOT NULL, partner_id bigint NOT NULL, campaign_id bigint,"
    " state text NOT NULL, rows_done bigint NOT NULL, chunks_done bigint NOT NULL,"
    " granted bigint NOT NULL, already_granted bigint NOT NULL, refused bigint NOT NULL,"
    " refused_reasons text NOT NULL, bad_rows bigint NOT NULL, max_id bigint NOT NULL,"
    " generation bigint NOT NULL,"
    " created_at_us bigint NOT NULL, updated_at_us bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS bulk_bad_rows ("
    " job_key text NOT NULL, row_number bigint NOT NULL, value text NOT NULL, error text NOT NULL,"
    " PRIMARY KEY (job_key, row_number))",
]
_STATE_COLS = (
    "kind", "partner_id", "campaign_id", "state", "rows_done", "chunks_done", "granted",
    "already_granted", "refused", "refused_reasons", "bad_rows", "max_id", "generation",
)  # fmt: skip
_LOOKUP_USERS_MAX = 500  # users per store lookup (SQLite's variable limit is far above)


@dataclass
class _State:
    kind: str
    partner_id: int
    campaign_id: Optional[int]
    state: str = "running"
    rows_done: int = 0
    chunks_done: int = 0
    granted: int = 0
    already_granted: int = 0
    refused: int = 0
    refused_reasons: dict[str, int] = field(default_factory=dict)
    bad_rows: int = 0
    # The highest coupon seq (points: wallet entry id) this job was granted. Both only grow, and
    # a chunk's grants are done before the next chunk starts, so an answer replayed with an id at
    # or below it is an earlier row's grant (the user was listed before): already_granted. The
    # in-flight chunk of a dead run was granted above it: counted as granted on resume.
    max_id: int = 0
    # Coupons: bumped when the campaign answered NOT_OPEN (paused): the gate remembers that
    # answer for the request id, so the rows after it are asked again with a new one.
    generation: int = 0

    def values(self) -> tuple[Any, ...]:
        d = dict(self.__dict__, refused_reasons=json.dumps(self.refused_reasons, sort_keys=True))
        return tuple(d[c] for c in _STATE_COLS)


class _Store:
    """The checkpoint table and the coupon lookups, on the engine's store."""

    def __init__(self, kind: str, location: Optional[str]) -> None:
        self.kind, self._location = kind, location
        self._conn: Any = None
        self._memory: dict[str, _State] = {}
        self._memory_bad: dict[str, list[BadRow]] = {}
        self._lock_key: Optional[str] = None
        self._errors: tuple[type[BaseException], ...] = (sqlite3.OperationalError,)
        if kind == "postgres":
            self._errors = (_psycopg().OperationalError,)
        if kind != "memory":
            self._do(lambda: None)

    def _connect(self) -> None:
        assert self._location is not None
        if self.kind == "postgres":
            self._conn = _psycopg().connect(self._location, autocommit=True)
            with self._conn.transaction():
                # Concurrent first runs must not race on CREATE TABLE IF NOT EXISTS.
                self._conn.execute("SELECT pg_advisory_xact_lock(hashtext('couponcore.bulk_jobs'))")
                for stmt in _SCHEMA:
                    self._conn.execute(stmt)
            if self._lock_key is not None and not self._try_lock(self._lock_key):
                raise _core.Conflict(f"bulk job {self._lock_key!r} is running in another process")
        else:
            self._conn = sqlite3.connect(self._location, timeout=30, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA synchronous=FULL")
            for stmt in _SCHEMA:
                self._conn.execute(stmt)

    def _try_lock(self, job_key: str) -> bool:
        row = self._conn.execute(
            "SELECT pg_try_advisory_lock(hashtext('couponcore.bulk:' || %s))", (job_key,)
        ).fetchone()
        return bool(row[0])

    def lock(self, job_key: str) -> None:
        """One run of a job at a time: ``Conflict`` if another run holds it. PostgreSQL: a session
        advisory lock (held until the run's connection closes, also when its process dies);
        otherwise within this process."""
        with _running_lock:
            if (self.kind, self._location, job_key) in _running:
                raise _core.Conflict(f"bulk job {job_key!r} is running")
            _running.add((self.kind, self._location, job_key))
        self._lock_key = job_key
        if self.kind == "postgres":
            try:
                taken = self._do(lambda: self._try_lock(job_key))
            except BaseException:
                self.unlock()
                raise
            if not taken:
                self.unlock()
                raise _core.Conflict(f"bulk job {job_key!r} is running in another process")

    def unlock(self) -> None:
        if self._lock_key is not None:
            with _running_lock:
                _running.discard((self.kind, self._location, self._lock_key))
            self._lock_key = None

    def _do(self, fn: Callable[[], _T]) -> _T:
        """``fn`` on a live connection; a lost connection (a PostgreSQL restart, a locked SQLite
        file) is retried on a new one with backoff, then ``Unavailable``. Every statement here
        can be repeated: the checkpoint is an UPDATE of absolute values, bad rows are inserted
        ON CONFLICT DO NOTHING."""
        for attempt in range(RETRIES_MAX + 1):
            try:
                if self._conn is None:
                    self._connect()
                return fn()
            except self._errors as e:
                self.close()
                if attempt == RETRIES_MAX:
                    raise _core.Unavailable(f"the bulk checkpoint store failed: {e}") from None
                time.sleep(min(5.0, 0.2 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def load(self, job_key: str) -> Optional[_State]:
        if self.kind == "memory":
            return self._load(job_key)
        return self._do(lambda: self._load(job_key))

    def save(self, job_key: str, st: _State, new_bad: list[BadRow], insert: bool = False) -> None:
        if self.kind == "memory":
            return self._save(job_key, st, new_bad, insert)
        return self._do(lambda: self._save(job_key, st, new_bad, insert))

    def bad_rows(self, job_key: str) -> list[BadRow]:
        if self.kind == "memory":
            return self._bad_rows(job_key)
        return self._do(lambda: self._bad_rows(job_key))

    def users_with_coupon(self, campaign_id: int, request_ids: list[str], users: list[str]) -> dict[str, int]:
        """The users among ``users`` holding a coupon of the campaign asked for with one of
        ``request_ids`` (one coupon per user and request id: the gate remembers the answer),
        with its seq."""
        if self.kind == "memory" or not users:
            return {}
        return self._do(lambda: self._users_with_coupon(campaign_id, request_ids, users))

    def _sql(self, q: str) -> str:
        return q.replace("%s", "?") if self.kind == "sqlite" else q

    def _tx(self, statements: list[tuple[str, Any]]) -> None:
        if self.kind == "postgres":
            with self._conn.transaction():
                for q, p in statements:
                    self._conn.execute(q, p)
        else:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for q, p in statements:
                    self._conn.execute(self._sql(q), p)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def _load(self, job_key: str) -> Optional[_State]:
        if self.kind == "memory":
            s = self._memory.get(job_key)
            return None if s is None else _State(**{**s.__dict__, "refused_reasons": dict(s.refused_reasons)})
        cols = ", ".join(_STATE_COLS)
        row = self._conn.execute(self._sql(f"SELECT {cols} FROM bulk_jobs WHERE job_key = %s"), (job_key,)).fetchone()
        if row is None:
            return None
        d = dict(zip(_STATE_COLS, row))
        d["refused_reasons"] = json.loads(d["refused_reasons"])
        return _State(**d)

    def _save(self, job_key: str, st: _State, new_bad: list[BadRow], insert: bool = False) -> None:
        if self.kind == "memory":
            self._memory[job_key] = _State(**{**st.__dict__, "refused_reasons": dict(st.refused_reasons)})
            kept = self._memory_bad.setdefault(job_key, [])
            seen = {b.row for b in kept}
            kept.extend(b for b in new_bad if b.row not in seen and len(kept) < BAD_ROWS_MAX)
            return
        now = time.time_ns() // 1000
        stmts: list[tuple[str, Any]] = []
        if insert:
            cols = ", ".join(("job_key",) + _STATE_COLS + ("created_at_us", "updated_at_us"))
            marks = ", ".join(["%s"] * (len(_STATE_COLS) + 3))
            stmts.append(
                (
                    f"INSERT INTO bulk_jobs ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING",
                    (job_key, *st.values(), now, now),
                )
            )
        else:
            sets = ", ".join(f"{c} = %s" for c in _STATE_COLS)
            stmts.append(
                (f"UPDATE bulk_jobs SET {sets}, updated_at_us = %s WHERE job_key = %s", (*st.values(), now, job_key))
            )
        room = BAD_ROWS_MAX - (st.bad_rows - len(new_bad))
        for b in new_bad[: max(0, room)]:
            stmts.append(
                (
                    "INSERT INTO bulk_bad_rows (job_key, row_number, value, error) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    (job_key, b.row, b.value, b.error),
                )
            )
        self._tx(stmts)

    def _bad_rows(self, job_key: str) -> list[BadRow]:
        if self.kind == "memory":
            return list(self._memory_bad.get(job_key, []))
        rows = self._conn.execute(
            self._sql(
                "SELECT row_number, value, error FROM bulk_bad_rows WHERE job_key = %s ORDER BY row_number LIMIT %s"
            ),
            (job_key, BAD_ROWS_MAX),
        ).fetchall()
        return [BadRow(int(r), v, e) for r, v, e in rows]

    def _users_with_coupon(self, campaign_id: int, request_ids: list[str], users: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for i in range(0, len(users), _LOOKUP_USERS_MAX):
            part = users[i : i + _LOOKUP_USERS_MAX]
            if self.kind == "postgres":
                q = (
                    "SELECT user_id, seq FROM coupons WHERE campaign_id = %s AND request_id = ANY(%s)"
                    " AND user_id = ANY(%s)"
                )
                rows = self._conn.execute(q, (campaign_id, request_ids, part)).fetchall()
            else:
                marks, rmarks = ", ".join(["?"] * len(part)), ", ".join(["?"] * len(request_ids))
                q = (
                    f"SELECT user_id, seq FROM coupons WHERE campaign_id = ? AND request_id IN ({rmarks})"
                    f" AND user_id IN ({marks})"
                )
                rows = self._conn.execute(q, (campaign_id, *request_ids, *part)).fetchall()
            found.update((r[0], int(r[1])) for r in rows)
        return found

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is dropped
                pass


# Jobs running in this process (a second run of one is refused).
_running: set[tuple[str, Optional[str], str]] = set()
_running_lock = threading.Lock()

# Checkpoints of engines without a file (":memory:") live as long as the process.
_memory_stores: dict[int, _Store] = {}


def _open_store(engine: Any) -> _Store:
    kind, location = getattr(engine, "_store", ("memory", None))
    if kind == "memory":
        return _memory_stores.setdefault(id(engine._core), _Store("memory", None))
    return _Store(kind, location)


# ---------------------------------------------------------------------------------------------
# Checks


def _check_int(name: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _core.InvalidType(f"{name} must be an int, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise _core.InvalidArgument(f"{name} must be in {lo:,}..{hi:,}, got {v:,}")
    return v


def _check_number(name: str, v: Any, lo: float, hi: float) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _core.InvalidType(f"{name} must be a number, got {type(v).__name__}")
    if not lo <= v <= hi:  # NaN too
        raise _core.InvalidArgument(f"{name} must be in {lo}..{hi:,}, got {v}")


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
            limiter_sleeps=self.limiter.sleeps if self.limiter else 0,
            limiter_sleep_s=self.limiter.slept_s if self.limiter else 0.0,
            backlog_waits=self.backlog_waits,
        )


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
            st.granted += len(found)
            st.max_id = max([st.max_id, *found.values()])
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
        for i in range(0, len(good), run.batch_rows):
            batch = good[i : i + run.batch_rows]
            run.charge(len(batch))
            id_before, top = st.max_id, 0
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
                if res.replayed and res.entry_id <= id_before:
                    st.already_granted += 1  # listed in an earlier chunk with the same amount
                else:
                    st.granted += 1  # new, or granted by the interrupted run before it died
                    top = max(top, res.entry_id)
            st.max_id = max(st.max_id, top)

    try:
        return run.run(grant_chunk)
    finally:
        pool.shutdown(wait=True)
