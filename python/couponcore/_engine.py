"""The Pythonic face of the native engine: ``couponcore.open()`` returns an :class:`Engine`."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Sequence
from typing import Any, Callable, Optional, TypeVar

from . import _core
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

    def __init__(self, core: _core.Engine) -> None:
        self._core = core
        self.campaigns = Campaigns(self)

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

    def counters(self) -> dict[str, Any]:
        """Monotonic counters since open (requests, issued, batches, commits, ...)."""
        return self._core.counters()

    def metrics_text(self) -> str:
        """The engine's metrics in Prometheus text format (see ``couponcore.metrics``)."""
        from .metrics import render

        return render(self)

    def close(self) -> None:
        """Finish what is queued, stop the engine's threads. Later calls raise Closed."""
        self._core.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<couponcore.Engine {self._core.kind if not self.closed else ''} {state}>"


def open(path: Optional[str] = None, *, synchronous_full: bool = True) -> Engine:  # noqa: A001
    """Open the embedded engine: an in-process gate and a SQLite file (WAL, synchronous=FULL).

    ``path`` defaults to ``couponcore.db`` in the working directory; ``":memory:"`` keeps
    everything in memory (nothing survives ``close()``).
    """
    if path is None:
        path = DEFAULT_PATH
    if not isinstance(path, (str, os.PathLike)):
        raise _core.InvalidType(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return Engine(_core.open_embedded(os.fspath(path), synchronous_full))
