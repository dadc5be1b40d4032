"""Where the live windows come from and go to, per deployment.

Sources (answer records, written by the engines' recorders):
  :class:`SqliteSource`  embedded: the file's ``answer_log`` table (one partition, "log")
  :class:`RedisSource`   production: a Redis Stream per campaign (one partition per campaign)
Stores (the ``windows`` migration: ``answer_windows`` and ``windows_state``):
  :class:`SqliteStore`   embedded: the same file (``sqlite3``, standard library)
  :class:`PgStore`       production: PostgreSQL through psycopg (``couponcore[windows]``)
A commit is one transaction: the final rows, the state (with the positions) and, embedded, the
trim of ``answer_log`` below what was consumed (``LOG_KEEP`` records are kept behind it).

``hold_lock()``: whether this process should aggregate now. PostgreSQL: an advisory lock per
deployment (key prefix), held on a connection of its own, so one aggregator of several runs at
a time and another takes over as soon as the holder's connection ends (a killed process's
connection is closed by its kernel; PostgreSQL then frees the lock). The versioned commit keeps
the rows exactly once even if two ever ran at once. SQLite: always (one engine per file).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any, Optional

from .. import _core

LOG_KEEP = 100_000  # answer_log rows kept behind the committed position (embedded)
_LOCK_CLASS = 0x63632D77  # "cc-w": pg_try_advisory_lock(_LOCK_CLASS, hashtext(key prefix))
_ROW_COLS = "campaign_id, size_s, start_s, answers, counts, hist, p50_us, p90_us, p99_us, max_us"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise _core.Unavailable(
            "the live windows on PostgreSQL need psycopg: pip install 'couponcore[windows]'"
        ) from None
    return psycopg


class SqliteSource:
    def __init__(self, path: str) -> None:
        self.path = path
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()

    def partitions(self) -> list[str]:
        return ["log"]

    def read(self, partition: str, after: str, count: int) -> list[tuple[str, int, str]]:
        with self._lock:
            cur = self._db.execute(
                "SELECT id, campaign_id, record FROM answer_log WHERE id > ? ORDER BY id LIMIT ?",
                (int(after or 0), count),
            )
            return [(str(i), c, r) for i, c, r in cur.fetchall()]

    def close(self) -> None:
        self._db.close()


class RedisSource:
    def __init__(self, redis_url: str, key_prefix: str) -> None:
        self._streams = _core.AnswerStreams(redis_url, key_prefix)
        self._lock = threading.Lock()

    def partitions(self) -> list[str]:
        with self._lock:
            return [str(c) for c in self._streams.campaigns()]

    def read(self, partition: str, after: str, count: int) -> list[tuple[str, int, str]]:
        campaign = int(partition)
        with self._lock:
            return [(i, campaign, r) for i, r in self._streams.read(campaign, after or "0", count)]

    def close(self) -> None:
        pass


class _SqlStore:
    """The SQL both stores share; ``_ph`` is the driver's placeholder."""

    _ph = "?"
    name = "embedded"  # the windows_state row: one per source
    driver_errors: tuple[type[BaseException], ...] = (sqlite3.Error,)  # what the driver raises

    def _conn(self) -> Any:
        raise NotImplementedError

    def _begin(self, conn: Any) -> None:
        raise NotImplementedError

    def _trim(self, cur: Any, positions: dict[str, str]) -> None:
        pass

    def load(self) -> tuple[int, Optional[str]]:
        with self._lock:
            cur = self._conn().cursor()
            cur.execute(f"SELECT version, state FROM windows_state WHERE name = {self._ph}", (self.name,))
            row = cur.fetchone()
            self._end(commit=True)
            return (row[0], row[1]) if row else (0, None)

    def commit(self, version: int, state: str, rows: list[tuple], positions: dict[str, str]) -> bool:
        p = self._ph
        now = time.time_ns() // 1000
        with self._lock:
            conn = self._conn()
            self._begin(conn)
            try:
                cur = conn.cursor()
                if version == 0:
                    cur.execute(
                        f"INSERT INTO windows_state (name, version, state, updated_at_us) VALUES ({p}, 1, {p}, {p})"
                        " ON CONFLICT (name) DO NOTHING",
                        (self.name, state, now),
                    )
                else:
                    cur.execute(
                        f"UPDATE windows_state SET version = version + 1, state = {p}, updated_at_us = {p}"
                        f" WHERE name = {p} AND version = {p}",
                        (state, now, self.name, version),
                    )
                if cur.rowcount != 1:
                    self._end(commit=False)
                    return False  # another aggregator committed first: reload
                if rows:
                    marks = ", ".join([p] * 10)
                    cur.executemany(f"INSERT INTO answer_windows ({_ROW_COLS}) VALUES ({marks})", rows)
                self._trim(cur, positions)
                self._end(commit=True)
                return True
            except BaseException:
                self._end(commit=False)
                raise

    def rows(self, campaign_id: int, size_s: int, since_s: int, limit: int) -> list[tuple]:
        p = self._ph
        with self._lock:
            cur = self._conn().cursor()
            cur.execute(
                f"SELECT {_ROW_COLS} FROM answer_windows WHERE campaign_id = {p} AND size_s = {p} AND start_s >= {p}"
                f" ORDER BY start_s DESC LIMIT {p}",
                (campaign_id, size_s, since_s, limit),
            )
            out = cur.fetchall()
            self._end(commit=True)
            return list(reversed(out))


class SqliteStore(_SqlStore):
    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        try:
            self._db.execute("SELECT name FROM windows_state LIMIT 0")
        except sqlite3.OperationalError:
            self._db.close()
            raise _core.Unavailable(
                f"{path} has no live windows tables: open it once with couponcore.open(path) (windows=True)"
            ) from None

    def _conn(self) -> Any:
        return self._db

    def _begin(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def _end(self, commit: bool) -> None:
        if self._db.in_transaction:
            self._db.execute("COMMIT" if commit else "ROLLBACK")

    def hold_lock(self) -> bool:
        return True

    def _trim(self, cur: Any, positions: dict[str, str]) -> None:
        pos = int(positions.get("log") or 0)
        if pos > LOG_KEEP:
            cur.execute("DELETE FROM answer_log WHERE id <= ?", (pos - LOG_KEEP,))

    def close(self) -> None:
        self._db.close()


class PgStore(_SqlStore):
    _ph = "%s"

    def __init__(self, dsn: str, name: str) -> None:
        self.name = name  # the Redis key prefix of the deployment
        self._psycopg = _psycopg()
        self.driver_errors = (self._psycopg.Error,)
        self._dsn = dsn
        self._db: Any = None
        self._lock = threading.Lock()
        self._lock_db: Any = None  # the connection that holds the aggregator's lock
        self._holding = False

    def hold_lock(self) -> bool:
        """Takes (or checks) the deployment's aggregator lock; False while another process holds
        it or PostgreSQL does not answer (the next call tries again)."""
        try:
            if self._lock_db is None or self._lock_db.closed or self._lock_db.broken:
                self._holding = False
                self._lock_db = self._psycopg.connect(
                    self._dsn, application_name="couponcore-windows-lock", autocommit=True
                )
            if self._holding:
                self._lock_db.execute("SELECT 1")  # the connection (and so the lock) is still there
            else:
                row = self._lock_db.execute(
                    "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_LOCK_CLASS, self.name)
                ).fetchone()
                self._holding = bool(row[0])
        except self._psycopg.Error:
            self._holding = False
            if self._lock_db is not None:
                self._lock_db.close()
            self._lock_db = None
        return self._holding

    def _conn(self) -> Any:
        if self._db is None or self._db.closed or self._db.broken:
            self._db = self._psycopg.connect(self._dsn, application_name="couponcore-windows")
        return self._db

    def _begin(self, conn: Any) -> None:
        pass  # psycopg opens a transaction at the first statement

    def _end(self, commit: bool) -> None:
        if self._db is None or self._db.closed:
            return
        if commit:
            self._db.commit()
        else:
            self._db.rollback()

    def close(self) -> None:
        if self._lock_db is not None:
            self._lock_db.close()  # closing it frees the lock
            self._lock_db, self._holding = None, False
        if self._db is not None:
            self._db.close()
