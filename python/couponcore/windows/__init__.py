"""Live windows (docs/windows.md): per-campaign tumbling windows of 1 s and 1 min of the gate's
answers (counts per status, latency p50 / p90 / p99 / max), written to the store exactly once.

``engine.windows`` (a :class:`Windows`) is the face: ``aggregate()`` folds what the engines
recorded into final windows (one transaction per batch), ``rows()`` / ``frame()`` read them
(``frame`` is a pandas DataFrame: ``couponcore[replay]``), ``late()`` is a campaign's count of
answers that came after their window was final (dropped). ``couponcore windows aggregate``
runs the aggregator as a process of its own (the exactly-once commit makes a second one safe).
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
from typing import Any, Optional, Union

from .. import _core
from ._aggregate import LATENESS_MS_DEFAULT, Aggregator, latency_bucket_upper_us
from ._metrics import aggregator_metrics
from ._runner import Runner
from ._store import PgStore, RedisSource, SqliteSource, SqliteStore

__all__ = ["Windows", "WorkerWindows", "Aggregator", "latency_bucket_upper_us", "status_name", "open_parts"]

SIZES = {"1s": 1, "1min": 60}
_STATUS_NAMES = {0: "ISSUED", 1: "SOLD_OUT", 2: "ALREADY_ISSUED", 3: "NOT_OPEN", 4: "ENDED", 5: "RATE_LIMITED"}


def status_name(number: Union[int, str]) -> str:
    """The status of a number in the windows' counts (known names, else ``status_<n>``)."""
    n = int(number)
    try:
        from .._types import Status

        names = [s.value for s in Status]
        if n < len(names):
            return names[n]
    except ImportError:  # pragma: no cover
        pass
    return _STATUS_NAMES.get(n, f"status_{n}")


def open_parts(
    store: tuple[str, Optional[str]], redis_url: Optional[str] = None, key_prefix: Optional[str] = None
) -> tuple[Any, Any]:
    """(source, store) of a deployment: ("sqlite", path) or ("postgres", dsn) plus Redis."""
    kind, where = store
    if kind == "sqlite" and where:
        return SqliteSource(where), SqliteStore(where)
    if kind == "postgres" and where and redis_url:
        return RedisSource(redis_url, key_prefix or "cc:"), PgStore(where, key_prefix or "cc:")
    raise _core.Unavailable("live windows need a store: an embedded engine with a file, or the production deployment")


def of_engine(engine: Any) -> Windows:
    """``engine.windows``: made on first use (``Unavailable`` for ``":memory:"``)."""
    if engine._windows is None:
        with engine._wallets_lock:
            if engine._windows is None:
                if engine._core.closed:
                    raise _core.Closed("the engine is closed")
                engine._windows = Windows(engine)
    w: Windows = engine._windows
    return w


def embedded_options(options: dict[str, Any]) -> tuple[bool, int]:
    """Pops and checks the embedded engine's ``windows`` and ``windows_flush_ms`` options."""
    windows = options.pop("windows", True)
    flush_ms = options.pop("windows_flush_ms", 200)
    if not isinstance(windows, bool):
        raise _core.InvalidType("windows must be a bool")
    if isinstance(flush_ms, bool) or not isinstance(flush_ms, int):
        raise _core.InvalidType("windows_flush_ms must be an int")
    return windows, flush_ms


def _size_s(size: str) -> int:
    if size not in SIZES:
        raise _core.InvalidArgument(f"size must be one of {sorted(SIZES)}, got {size!r}")
    return SIZES[size]


def _since_s(since: Any) -> int:
    if since is None:
        return 0
    if isinstance(since, bool):
        raise _core.InvalidType("since must be a datetime or seconds since the epoch")
    if isinstance(since, _dt.datetime):
        if since.tzinfo is None:
            raise _core.InvalidArgument("since must be timezone-aware")
        return int(since.timestamp())
    if isinstance(since, (int, float)):
        return int(since)
    raise _core.InvalidType("since must be a datetime or seconds since the epoch")


def _record(row: tuple, final: bool) -> dict[str, Any]:
    campaign_id, size_s, start_s, answers, counts, hist, p50, p90, p99, max_us = row
    by_status = {status_name(k): v for k, v in json.loads(counts).items()}
    return {
        "campaign_id": campaign_id, "size_s": size_s, "start_s": start_s, "answers": answers,
        "by_status": by_status, "p50_us": p50, "p90_us": p90, "p99_us": p99, "max_us": max_us,
        "final": final,
    }  # fmt: skip


class Windows:
    """The live windows of one engine's deployment."""

    def __init__(self, engine: Any, lateness_ms: int = LATENESS_MS_DEFAULT) -> None:
        self._engine = engine
        redis_url, key_prefix = engine._redis or (None, None)
        self._source, self._store = open_parts(engine._store, redis_url, key_prefix)
        self._aggregator = Aggregator(self._source, self._store, lateness_ms=lateness_ms)
        self._lock = threading.Lock()
        self._runner: Optional[Runner] = None

    def start(self, every_s: float = 1.0) -> None:
        """Aggregate in a daemon thread of this process every ``every_s`` seconds (0.05..3600)
        until ``stop()`` or the engine's ``close()``, while this process holds the deployment's
        aggregator lock (production; another process's aggregator takes over when it ends).
        Idempotent."""
        if isinstance(every_s, bool) or not isinstance(every_s, (int, float)) or not 0.05 <= every_s <= 3600:
            raise _core.InvalidArgument("every_s must be a number of seconds in 0.05..3600")
        with self._lock:
            if self._runner is not None:
                return
            self._runner = Runner(self.aggregate, self._store.hold_lock, every_s)
            self._runner.start()

    @property
    def active(self) -> bool:
        """True while the thread of ``start()`` is the deployment's active aggregator."""
        return self._runner is not None and self._runner.active

    def stop(self) -> None:
        """Stops the thread of ``start()`` (after the batch in hand)."""
        r, self._runner = self._runner, None
        if r is not None:
            r.stop()

    def metrics(self) -> list[tuple[str, str, str, float]]:
        """The aggregator's series (``couponcore.metrics``): lag, late answers, active."""
        return list(aggregator_metrics(self._source, self._store, self.active if self._runner else None))

    def flush(self) -> bool:
        """Append what this engine recorded so far to the source now (it does so every ~200 ms)."""
        return self._engine._core.flush_answers()

    def aggregate(self, max_records: Optional[int] = None) -> int:
        """Fold new answer records into windows; commits final windows, state and positions in
        one transaction per batch. Returns the records consumed."""
        with self._lock:
            return self._aggregator.run(max_records)

    def _open_windows(self, campaign_id: int, size_s: int, since_s: int) -> list[tuple]:
        _, text = self._store.load()
        if not text:
            return []
        c = json.loads(text)["campaigns"].get(str(campaign_id))
        if c is None:
            return []
        from ._aggregate import _merge, _row

        windows = {s: [dict(w[0]), dict(w[1]), w[2]] for s, w in c["open"][str(size_s)].items()}
        if size_s == 60:  # an open minute also holds its seconds that are not final yet
            for s, w in c["open"]["1"].items():
                m = str(int(s) - int(s) % 60)
                _merge(windows.setdefault(m, [{}, {}, 0]), w[0], w[1], w[2])
        return [
            _row(campaign_id, size_s, int(s), w)
            for s, w in sorted(windows.items(), key=lambda kv: int(kv[0]))
            if int(s) >= since_s
        ]

    def rows(
        self, campaign_id: int, size: str = "1s", since: Any = None, limit: int = 10_000, include_open: bool = True
    ) -> list[dict[str, Any]]:
        """Windows of a campaign, oldest first: the final ones from the store and (``include_open``)
        the open ones from the aggregator's committed state (``final`` False: they may still grow)."""
        if isinstance(campaign_id, bool) or not isinstance(campaign_id, int):
            raise _core.InvalidType("campaign_id must be an int")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1_000_000:
            raise _core.InvalidArgument("limit must be an int in 1..1000000")
        size_s, since_s = _size_s(size), _since_s(since)
        out = [_record(r, True) for r in self._store.rows(campaign_id, size_s, since_s, limit)]
        if include_open:
            out += [_record(r, False) for r in self._open_windows(campaign_id, size_s, since_s)]
        return out[-limit:]

    def frame(
        self, campaign_id: int, size: str = "1s", since: Any = None, refresh: bool = True, include_open: bool = True
    ) -> Any:
        """A pandas DataFrame of a campaign's windows, one row per window (index: its start, UTC):
        ``answers``, one column per status (ISSUED, SOLD_OUT, ...: every status seen), the latency
        quantiles in ms and ``final``. ``refresh`` aggregates first."""
        try:
            import pandas as pd
        except ImportError:
            raise _core.Unavailable("frame() needs pandas: pip install 'couponcore[replay]'") from None
        if refresh:
            self.aggregate()
        rows = self.rows(campaign_id, size, since, include_open=include_open)
        statuses = sorted({k for r in rows for k in r["by_status"]}, key=lambda n: (n not in _STATUS_NAMES.values(), n))
        data = {
            "answers": [r["answers"] for r in rows],
            **{s: [r["by_status"].get(s, 0) for r in rows] for s in statuses},
            **{f"{q}_ms": [r[f"{q}_us"] / 1000.0 for r in rows] for q in ("p50", "p90", "p99", "max")},
            "final": [r["final"] for r in rows],
        }
        index = pd.to_datetime([r["start_s"] for r in rows], unit="s", utc=True)
        return pd.DataFrame(data, index=pd.Index(index, name="start"))

    def late(self, campaign_id: int) -> int:
        """Answers of the campaign that arrived after their window was final (dropped)."""
        _, text = self._store.load()
        if not text:
            return 0
        c = json.loads(text)["campaigns"].get(str(campaign_id))
        return 0 if c is None else int(c["late"])

    def close(self) -> None:
        self.stop()
        self._source.close()
        self._store.close()


class WorkerWindows:
    """The aggregator of ``couponcore worker`` (production): a daemon thread that aggregates
    every ``every_s`` while this process holds the deployment's aggregator lock."""

    def __init__(self, redis_url: str, postgres_url: str, key_prefix: str, every_s: float = 0.5) -> None:
        self.source, self.store = open_parts(("postgres", postgres_url), redis_url, key_prefix)
        self.aggregator = Aggregator(self.source, self.store)
        self._runner = Runner(self.aggregator.run, self.store.hold_lock, every_s)

    @property
    def active(self) -> bool:
        return self._runner.active

    def start(self) -> None:
        self._runner.start()

    def stop(self) -> None:
        self._runner.stop()
        self.source.close()
        self.store.close()
