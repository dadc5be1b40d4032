"""``couponcore.open()`` and ``couponcore.migrate()``: build an :class:`Engine` of either deployment."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Optional

from . import _core
from ._engine import DEFAULT_PATH, Engine
from .tracing import OTEL


def _auth_ttl_ms(auth_cache_ttl_s: Optional[float]) -> Optional[int]:
    if auth_cache_ttl_s is None:
        return None
    if isinstance(auth_cache_ttl_s, bool) or not isinstance(auth_cache_ttl_s, (int, float)):
        raise _core.InvalidType("auth_cache_ttl_s must be a number of seconds")
    if not -1e12 <= auth_cache_ttl_s <= 1e12:  # inf and NaN too; the core checks the real range
        raise _core.InvalidArgument("auth_cache_ttl_s is out of range")
    return int(round(auth_cache_ttl_s * 1000))


def open(  # noqa: A001
    path: Optional[str] = None,
    *,
    redis: Optional[str] = None,
    postgres: Optional[str] = None,
    key_prefix: str = "cc:",
    writer_threads: int = 1,
    migrate: bool = True,
    synchronous_full: bool = True,
    auth_cache_ttl_s: Optional[float] = None,
    auth_cache_entries_max: Optional[int] = None,
    events: bool = True,
    tracing: Optional[bool] = None,
    tracer_provider: Any = None,
    **options: Any,
) -> Engine:
    """Open an engine. One API, two deployments:

    - ``couponcore.open()`` / ``couponcore.open("sale.db")``: the embedded engine, an in-process
      gate and a SQLite file (WAL, synchronous=FULL). ``path`` defaults to ``couponcore.db`` in
      the working directory; ``":memory:"`` keeps everything in memory.
    - ``couponcore.open(redis="redis://host:6379/0", postgres="postgresql://.../db")``: the
      production deployment, a Redis gate (one Lua call per batch), a Redis Stream per
      campaign as the grant log, and PostgreSQL as the store, written by ``writer_threads``
      native writers in this process (0 when separate ``couponcore worker`` processes write).
      ``key_prefix`` starts every Redis key; ``migrate`` applies the schema on open. Further
      tuning options (``answer_ttl_s``, ``gate_batch_requests_max``, ``writer_block_ms``,
      ``lifecycle_conns_max``, ...) are passed on as keyword arguments; see docs/production.md.
      A misspelt option is ``InvalidArgument``, not ignored. On Redis Cluster, give its seeds:
      ``redis="redis+cluster://host:7000,host:7001"`` (docs/production.md, "Running on Redis
      Cluster"); one hot campaign spreads over several masters with
      ``campaigns.create(..., shards=K)`` (docs/production.md, "Sharded campaigns"). Behind Redis
      Sentinel, give the sentinels and the master's name:
      ``redis="redis+sentinel://host:26379,host:26380/mymaster"``.
      ``replicas_acked=1, replica_wait_ms=100`` answer ``ISSUED`` only for batches that many
      replicas hold (one ``WAIT`` per master per pipeline of batches; else a re-send, or
      ``Unavailable`` "not yet replicated": retry with the same request_id), so a failover loses
      no acknowledged grant (docs/production.md, "Running on Redis Cluster / with replicas").

    Both: the point wallets' engine takes ``wallet_batch_ops_max`` (operations per
    transaction, default 1,024), ``wallet_queue_ops_max`` (queued operations before callers
    wait, default 100,000), ``wallet_queue_full_wait_ms`` (then ``Unavailable``, default
    10,000), ``wallet_retry_budget_ms`` (how long a batch retries a deadlock or a lost
    connection, default 30,000) and, production only, ``wallet_committers`` (parallel batch
    connections, default 2; SQLite has one writer). They are checked here, at open; the
    wallet engine itself opens on first use. See docs/wallet.md.

    Both: ``auth_cache_ttl_s`` (default 30 s, at most 3,600; 0 disables) and
    ``auth_cache_entries_max`` (default 10,000) size the in-process authentication cache (the
    production deployment also shares entries through Redis for the same TTL).

    Both: ``events`` (default True) writes a domain event with each change, in its transaction
    (docs/events.md; ``events=False`` measures the cost). Production runs a relay thread that
    publishes them to Redis Streams (``events_relay=False``: this engine relays nothing;
    ``events_relay_poll_ms``, ``events_relay_batch_max``, ``events_stream_maxlen``).

    Both: ``windows``, ``windows_flush_ms`` (and production ``windows_stream_maxlen``): the
    live windows' answer records (``engine.windows``, docs/windows.md).

    Both: ``tracing`` (default: on when opentelemetry-api is installed) turns the gate's batches
    and the writers' commits into OpenTelemetry spans linked to the callers' trace contexts,
    with ``tracer_provider`` (default: the global one); ``tracing=False`` registers nothing
    (docs/tracing.md).
    """
    if tracing is not None and not isinstance(tracing, bool):
        raise _core.InvalidType("tracing must be a bool or None")
    if tracing and not OTEL:
        raise _core.InvalidArgument("tracing=True needs opentelemetry-api: pip install 'couponcore[otel]'")
    engine = _open(
        path,
        redis,
        postgres,
        key_prefix,
        writer_threads,
        migrate,
        synchronous_full,
        auth_cache_ttl_s,
        auth_cache_entries_max,
        events,
        options,
    )
    if tracing or (tracing is None and OTEL):
        try:
            engine.enable_tracing(tracer_provider)
        except BaseException:
            engine.close()
            raise
    return engine


def _open(
    path: Optional[str],
    redis: Optional[str],
    postgres: Optional[str],
    key_prefix: str,
    writer_threads: int,
    migrate: bool,
    synchronous_full: bool,
    auth_cache_ttl_s: Optional[float],
    auth_cache_entries_max: Optional[int],
    events: bool,
    options: dict[str, Any],
) -> Engine:
    wallet_opts = {k: options.pop(k) for k in [k for k in options if k.startswith("wallet_")]}
    _core.check_wallet_options(wallet_opts)
    wallet_opts["wallet_events"] = bool(events)
    if redis is not None or postgres is not None:
        if path is not None:
            raise _core.InvalidArgument("give either path (embedded) or redis and postgres (production)")
        if not isinstance(redis, str) or not isinstance(postgres, str):
            raise _core.InvalidType("the production deployment needs both redis and postgres URLs (str)")
        for name, value in (("key_prefix", key_prefix),):
            if not isinstance(value, str):
                raise _core.InvalidType(f"{name} must be a str")
        if isinstance(writer_threads, bool) or not isinstance(writer_threads, int) or not 0 <= writer_threads <= 64:
            raise _core.InvalidArgument("writer_threads must be an int in 0..64")
        opts = dict(options)
        opts.update(
            redis_url=redis,
            postgres_url=postgres,
            key_prefix=key_prefix,
            writer_threads=writer_threads,
            migrate_on_open=bool(migrate),
            auth_cache_ttl_ms=_auth_ttl_ms(auth_cache_ttl_s),
            auth_cache_entries_max=auth_cache_entries_max,
            events=bool(events),
        )
        engine = Engine(_core.open_production(opts), lambda: _core.open_wallets_postgres(postgres, wallet_opts, key_prefix))
        engine._postgres_url, engine._migrate = postgres, bool(migrate)
        engine._store = ("postgres", postgres)
        engine._redis = (redis, key_prefix)
        return engine
    from .windows import embedded_options

    windows, windows_flush_ms = embedded_options(options)  # popped from options
    if options:
        raise _core.InvalidArgument(f"unknown options for the embedded engine: {sorted(options)}")
    if wallet_opts.get("wallet_committers") not in (None, 1):
        raise _core.InvalidArgument("wallet_committers: the embedded wallet store has one writer (SQLite)")
    if path is None:
        path = DEFAULT_PATH
    if not isinstance(path, (str, os.PathLike)):
        raise _core.InvalidType(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    ttl_ms = _auth_ttl_ms(auth_cache_ttl_s)
    core = _core.open_embedded(
        path, synchronous_full, ttl_ms, auth_cache_entries_max, windows, windows_flush_ms, bool(events)
    )
    engine = Engine(core)
    if path == ":memory:":
        # The wallet engine needs a file (it uses two connections): a private temporary one.
        tmp = tempfile.mkdtemp(prefix="couponcore-wallets-")
        engine._open_wallets = lambda: _core.open_wallets_embedded(
            os.path.join(tmp, "wallets.db"), synchronous_full, wallet_opts
        )
        engine._cleanup.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
        engine._checkout_refusal = (
            "checkout needs the coupons and the wallets in one SQLite file: open the engine with a path, not ':memory:'"
        )
    else:
        engine._open_wallets = lambda: _core.open_wallets_embedded(path, synchronous_full, wallet_opts)
        engine._store = ("sqlite", path)
    return engine


def migrate(postgres: str) -> int:
    """Apply couponcore's PostgreSQL migrations (every component); returns how many ran.
    Safe to run concurrently and repeatedly (``couponcore migrate``)."""
    if not isinstance(postgres, str):
        raise _core.InvalidType("postgres must be a URL (str)")
    return _core.migrate(postgres)
