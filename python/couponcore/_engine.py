"""The Pythonic face of the native engine: ``couponcore.open()`` returns an :class:`Engine`."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from typing import Any, Callable, Optional, TypeVar

from . import _core
from ._wallet import PointsAdmin
from ._types import Campaign, CampaignStats, TimeLike, to_us

DEFAULT_PATH = "couponcore.db"
T = TypeVar("T")


async def _offload(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call that is not on a hot path in the loop's default executor."""
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))


class Campaigns:
    """``engine.campaigns``: create, get and list campaigns."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(
        self,
        name: str,
        quantity: int,
        per_user_limit: int = 1,
        starts_at: Optional[TimeLike] = None,
        ends_at: Optional[TimeLike] = None,
        *,
        discount_kind: str = "none",
        discount_value: int = 0,
        discount_max: Optional[int] = None,
        min_order_amount: int = 0,
        valid_until: Optional[TimeLike] = None,
        valid_days: Optional[int] = None,
        partner_id: int = 0,
    ) -> Campaign:
        """Create a campaign of ``quantity`` coupons, at most ``per_user_limit`` per user,
        issued between ``starts_at`` (inclusive) and ``ends_at`` (exclusive) when given."""
        spec = {
            "name": name,
            "quantity": quantity,
            "per_user_limit": per_user_limit,
            "starts_at_us": to_us(starts_at, "starts_at"),
            "ends_at_us": to_us(ends_at, "ends_at"),
            "discount_kind": discount_kind,
            "discount_value": discount_value,
            "discount_max": discount_max,
            "min_order_amount": min_order_amount,
            "valid_until_us": to_us(valid_until, "valid_until"),
            "valid_days": valid_days,
            "partner_id": partner_id,
        }
        return Campaign._from_core(self._engine._core.create_campaign(spec))

    async def acreate(self, name: str, quantity: int, **kwargs: Any) -> Campaign:
        """``create`` for asyncio (runs in the loop's default executor)."""
        return await _offload(functools.partial(self.create, name, quantity, **kwargs))

    async def aget(self, campaign_id: int) -> Campaign:
        return await _offload(self.get, campaign_id)

    def get(self, campaign_id: int) -> Campaign:
        return Campaign._from_core(self._engine._core.get_campaign(campaign_id))

    def list(self, partner_id: int = 0) -> list[Campaign]:
        return [Campaign._from_core(d) for d in self._engine._core.list_campaigns(partner_id)]


class Engine:
    """One engine, two deployments, one API.

    Thread-safe: share one engine between threads; blocking calls release the GIL, and
    concurrent callers are decided together in batches.
    """

    def __init__(self, core: _core.Engine, open_wallets: Optional[Callable[[], _core.Wallets]] = None) -> None:
        self._core = core
        self.campaigns = Campaigns(self)
        self._open_wallets = open_wallets
        self._wallets_native: Optional[_core.Wallets] = None
        self._wallets_lock = threading.Lock()
        self._cleanup: list[Callable[[], None]] = []

    def _wallets(self) -> _core.Wallets:
        """The native wallet engine, opened on first use (it has its own connections and thread)."""
        w = self._wallets_native
        if w is not None:
            return w
        with self._wallets_lock:
            if self._wallets_native is None:
                if self._core.closed:
                    raise _core.Closed("the engine is closed")
                if self._open_wallets is None:
                    raise _core.Unavailable("this engine has no wallets")
                self._wallets_native = self._open_wallets()
            return self._wallets_native

    @property
    def points(self) -> PointsAdmin:
        """Partner 0's point wallets, and the operator's wallet jobs (expire, audit)."""
        return PointsAdmin(self._wallets, 0)

    @property
    def kind(self) -> str:
        """``"embedded"`` or ``"production"``."""
        return self._core.kind

    @property
    def closed(self) -> bool:
        return self._core.closed

    def issue(self, campaign_id: int, user_id: str, request_id: Optional[str] = None) -> _core.IssueResult:
        """Ask for one coupon. Returns when the answer is final; an ISSUED answer is durable.

        A repeated ``request_id`` (per user) returns the first answer instead of deciding again.
        """
        return self._core.issue(campaign_id, user_id, request_id)

    def issue_many(
        self,
        campaign_id: int,
        user_ids: Sequence[str],
        request_ids: Optional[Sequence[Optional[str]]] = None,
    ) -> list[_core.IssueResult]:
        """Decide a batch of requests for one campaign in one call, in order."""
        return self._core.issue_many(campaign_id, user_ids, request_ids)

    async def aissue(self, campaign_id: int, user_id: str, request_id: Optional[str] = None) -> _core.IssueResult:
        """``issue`` for asyncio: never blocks the event loop. Concurrent coroutines are decided
        in the same batches as threads. Cancelling the awaiting task is safe: the decision may
        still happen, and a retry with the same ``request_id`` then gets its answer."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._core.submit_issue(campaign_id, user_id, request_id, loop, future)
        return await future  # type: ignore[no-any-return]

    async def aissue_many(
        self,
        campaign_id: int,
        user_ids: Sequence[str],
        request_ids: Optional[Sequence[Optional[str]]] = None,
    ) -> list[_core.IssueResult]:
        """``issue_many`` for asyncio."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._core.submit_issue_many(campaign_id, user_ids, request_ids, loop, future)
        return await future  # type: ignore[no-any-return]

    async def astats(self, campaign_id: int) -> CampaignStats:
        return await _offload(self.stats, campaign_id)

    async def adrain(self, timeout_s: float = 30.0) -> bool:
        return await _offload(self.drain, timeout_s)

    def stats(self, campaign_id: int) -> CampaignStats:
        """Rows, distinct users and seq range of the campaign's coupons in the store."""
        return CampaignStats(**self._core.campaign_stats(campaign_id))

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until every grant acknowledged so far is in the store; False on timeout."""
        return self._core.drain(timeout_s)

    def reconcile(self, campaign_id: int) -> dict[str, Any]:
        """Compare the gate (Redis counter and holders) with the store's rows for a campaign,
        re-drive grants that are in the grant log but missing from the store, and report."""
        return self._core.reconcile(campaign_id)

    def counters(self) -> dict[str, Any]:
        """Monotonic counters since open (requests, issued, batches, commits, ...)."""
        return self._core.counters()

    def metrics_text(self) -> str:
        """The engine's metrics in Prometheus text format (see ``couponcore.metrics``)."""
        from .metrics import render

        return render(self)

    def close(self) -> None:
        """Finish what is queued, stop the engine's threads. Later calls raise Closed."""
        with self._wallets_lock:
            if self._wallets_native is not None:
                self._wallets_native.close()
        self._core.close()
        while self._cleanup:
            self._cleanup.pop()()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<couponcore.Engine {self._core.kind if not self.closed else ''} {state}>"


def open(  # noqa: A001
    path: Optional[str] = None,
    *,
    redis: Optional[str] = None,
    postgres: Optional[str] = None,
    key_prefix: str = "cc:",
    writer_threads: int = 1,
    migrate: bool = True,
    synchronous_full: bool = True,
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
      tuning options (``answer_ttl_s``, ``gate_batch_requests_max``, ``writer_block_ms``, ...)
      are passed on as keyword arguments; see docs/production.md.
    """
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
        )
        return Engine(_core.open_production(opts), lambda: _core.open_wallets_postgres(postgres))
    if options:
        raise _core.InvalidArgument(f"unknown options for the embedded engine: {sorted(options)}")
    if path is None:
        path = DEFAULT_PATH
    if not isinstance(path, (str, os.PathLike)):
        raise _core.InvalidType(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    engine = Engine(_core.open_embedded(path, synchronous_full))
    if path == ":memory:":
        # The wallet engine needs a file (it uses two connections): a private temporary one.
        tmp = tempfile.mkdtemp(prefix="couponcore-wallets-")
        engine._open_wallets = lambda: _core.open_wallets_embedded(os.path.join(tmp, "wallets.db"), synchronous_full)
        engine._cleanup.append(lambda: shutil.rmtree(tmp, ignore_errors=True))
    else:
        engine._open_wallets = lambda: _core.open_wallets_embedded(path, synchronous_full)
    return engine


def migrate(postgres: str) -> int:
    """Apply couponcore's PostgreSQL migrations (every component); returns how many ran.
    Safe to run concurrently and repeatedly (``couponcore migrate``)."""
    if not isinstance(postgres, str):
        raise _core.InvalidType("postgres must be a URL (str)")
    return _core.migrate(postgres)
