"""Checkpoints of couponcore.bulk: the ``bulk_jobs`` and ``bulk_bad_rows`` tables in the
engine's store (PostgreSQL in production, the SQLite file embedded, the process's memory for
``":memory:"``), and the store lookups a resumed chunk makes (coupons by request id, wallet
idempotency keys). Tables are created on first use; a lost connection is retried on a new one.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar

from . import _core
from ._bulk_sources import _psycopg

BAD_ROWS_MAX = 10_000  # bad rows kept per job (all are counted)
RETRIES_MAX = 5  # a lost connection (or, in bulk.py, a batch answered Unavailable) is retried this often
_T = TypeVar("_T")


@dataclass(frozen=True)
class BadRow:
    """A row that was skipped: its 1-based number in the source (data rows: a CSV header is not
    counted), its value as text (cut to 200 characters) and why."""

    row: int
    value: str
    error: str


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
    # Coupons: the highest seq this job was granted. Seqs only grow, and a chunk's grants are
    # done before the next chunk starts, so an ISSUED answer replayed with a seq at or below it
    # is an earlier row's grant (the user was listed before): already_granted.
    max_id: int = 0
    # Coupons: bumped when the campaign answered NOT_OPEN (paused): the gate remembers that
    # answer for the request id, so the rows after it are asked again with a new one.
    generation: int = 0
    # When the checkpoint was committed (loaded, not written: the save stamps updated_at_us).
    checkpoint_at_us: int = 0

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
        cols = ", ".join(_STATE_COLS + ("updated_at_us",))
        row = self._conn.execute(self._sql(f"SELECT {cols} FROM bulk_jobs WHERE job_key = %s"), (job_key,)).fetchone()
        if row is None:
            return None
        d = dict(zip(_STATE_COLS + ("checkpoint_at_us",), row))
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

    def keys_taken(self, partner_id: int, keys: list[str]) -> dict[str, int]:
        """The wallet idempotency keys among ``keys`` the partner has used, with the time their
        record was written (Unix microseconds)."""
        if self.kind == "memory" or not keys:
            return {}
        return self._do(lambda: self._keys_taken(partner_id, keys))

    def _keys_taken(self, partner_id: int, keys: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for i in range(0, len(keys), _LOOKUP_USERS_MAX):
            part = keys[i : i + _LOOKUP_USERS_MAX]
            if self.kind == "postgres":
                q = (
                    "SELECT idempotency_key, created_at_us FROM wallet_idempotency WHERE partner_id = %s"
                    " AND idempotency_key = ANY(%s)"
                )
                rows = self._conn.execute(q, (partner_id, part)).fetchall()
            else:
                marks = ", ".join(["?"] * len(part))
                q = (
                    "SELECT idempotency_key, created_at_us FROM wallet_idempotency WHERE partner_id = ?"
                    f" AND idempotency_key IN ({marks})"
                )
                rows = self._conn.execute(q, (partner_id, *part)).fetchall()
            found.update((r[0], int(r[1])) for r in rows)
        return found

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
