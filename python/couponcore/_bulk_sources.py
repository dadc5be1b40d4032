"""Sources for couponcore.bulk: rows read as the grant goes, never all in memory.

    read_csv(path, column=...)       a CSV file with a header row
    read_parquet(path, column=...)   a Parquet file, in record batches (pyarrow)
    read_sql(dsn, query)             a PostgreSQL query through a server-side cursor (psycopg)

Each is a :class:`Source`: iterable again and again, with ``total`` when it is known up front.
"""

from __future__ import annotations

import csv
import importlib
import os
from collections.abc import Iterator
from typing import Any, Optional, Union

from . import _core


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
